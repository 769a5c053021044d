import pytest
from rest_framework.test import APIClient

from keys import services
from keys.models import Membership

from ...factories import MembershipFactory, UserFactory, grant, grant_all_but


@pytest.fixture
def api():
    """api(user) is a client sending a fresh API token of `user`; api(None) sends nothing."""

    def client_for(user) -> APIClient:
        client = APIClient()
        if user is not None:
            issued = services.api_token_create(user=user, name="tests", actor=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {issued.plaintext}")
        return client

    return client_for


@pytest.fixture
def teammate(team):
    """Another plain member of `team`: sees neither `member`'s keys nor a lead's rights."""
    return MembershipFactory(team=team, user__username="teammate").user


@pytest.fixture
def staff(db):
    """Staff who hold every permission of the keys and billing apps, as an operator would."""
    return grant(UserFactory(username="staff", is_staff=True), "keys.*", "billing.*")


@pytest.fixture
def second_lead(team):
    return MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="lead2").user


@pytest.fixture
def actors(lead, member, teammate, outsider, staff):
    """Look an actor up by name, for permission matrices: actors["outsider"]."""
    return {
        "lead": lead,
        "member": member,
        "teammate": teammate,
        "outsider": outsider,
        "staff": staff,
        "anonymous": None,
    }


# Who reaches into a team they are not a member of, for the staff permission matrices.
STAFF_KINDS = ["superuser", "staff_with_permission", "staff_without_permission", "lead_elsewhere"]


@pytest.fixture
def actor_of_kind(db, outsider):
    """actor_of_kind(kind, permission): a superuser; staff holding just `permission`; staff
    holding every keys and billing permission but that one; or a lead of another team."""

    def make(kind: str, permission: str):
        if kind == "superuser":
            return UserFactory(username="root", is_staff=True, is_superuser=True)
        if kind == "staff_with_permission":
            return grant(UserFactory(username="ops", is_staff=True), permission)
        if kind == "staff_without_permission":
            return grant_all_but(UserFactory(username="ops", is_staff=True), permission)
        assert kind == "lead_elsewhere"
        return outsider

    return make
