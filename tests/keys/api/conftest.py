import pytest
from rest_framework.test import APIClient

from keys import services
from keys.models import Membership

from ...factories import MembershipFactory, UserFactory


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
    return UserFactory(username="staff", is_staff=True)


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
