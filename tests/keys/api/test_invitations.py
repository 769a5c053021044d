"""/api/v1/teams/{slug}/invitations/ and /api/v1/invitations/accept/."""

import json
import re

import pytest
from django.core import mail

from keys import services
from keys.models import Invitation, Membership
from tests.invitation_state import written

from ...factories import MembershipFactory, UserFactory

INVITATIONS = "/api/v1/teams/acme/invitations/"
ACCEPT = "/api/v1/invitations/accept/"
LINK = re.compile(r"http://keys\.example/invitations/(hcinv_[A-Za-z0-9_-]{43})/")


@pytest.fixture(autouse=True)
def _public_base_url(settings):
    settings.PUBLIC_BASE_URL = "http://keys.example"


@pytest.fixture
def invite(api, lead, django_capture_on_commit_callbacks):
    """invite(email, role): the lead invites through the API; returns the emailed token."""

    def send(email: str = "newbie@example.com", role: str = "member") -> str:
        with django_capture_on_commit_callbacks(execute=True):
            response = api(lead).post(INVITATIONS, {"email": email, "role": role}, format="json")
        assert response.status_code == 201, response.content
        return LINK.search(mail.outbox[-1].body).group(1)

    return send


def test_a_lead_invites_and_lists_pending(api, lead, team, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(lead).post(
            INVITATIONS, {"email": " NewBie@Example.com", "role": "lead"}, format="json"
        )

    assert response.status_code == 201
    invitation = Invitation.objects.get()
    body = response.json()
    assert body == {
        "id": invitation.pk,
        "email": "newbie@example.com",
        "role": "lead",
        "invited_by": "lead",
        "created_at": body["created_at"],
        "expires_at": body["expires_at"],
    }
    # The token is only in the email, not in the lead's answer.
    [message] = mail.outbox
    token = LINK.search(message.body).group(1)
    assert token not in response.content.decode()
    listed = api(lead).get(INVITATIONS)
    assert listed.status_code == 200
    assert listed.json()["results"] == [body]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"email": ""}, {"email": ["Enter the email address of the person to invite."]}),
        ({"email": "newbie"}, {"email": ["Enter a valid email address."]}),
        ({"email": "a\x00@example.com"}, {"email": ["Null characters are not allowed."]}),
        ({"email": 7}, {"email": ["Enter a valid email address."]}),
        (
            {"email": "newbie@example.com", "role": "boss"},
            {"role": ["Value 'boss' is not a valid choice."]},
        ),
        ({"email": "newbie@example.com", "role": 3}, {"role": ['"3" is not a valid choice.']}),
        (
            {"email": "member@example.com"},
            {"email": ["A member of Acme already has the email member@example.com."]},
        ),
        ({}, {"email": ["This field is required."]}),
    ],
)
def test_an_invitation_that_cannot_be_sent_says_why(api, lead, member, team, body, errors):
    before = written()

    response = api(lead).post(INVITATIONS, body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert written() == before


def test_a_pending_invitation_is_not_sent_twice(api, lead, team, invite):
    invite()
    before = written()

    response = api(lead).post(INVITATIONS, {"email": "NEWBIE@example.com"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "email": [
            "An invitation for newbie@example.com to Acme is already pending: "
            "revoke it first to send a new one."
        ]
    }
    assert written() == before


def test_inviting_tells_nothing_about_who_has_an_account(
    api, lead, team, other_team, outsider, django_capture_on_commit_callbacks
):
    """One address invited twice: first with no user behind it, then once a user of another
    team has it. The answers differ only in the row's own id and times."""

    def invite_person() -> bytes:
        with django_capture_on_commit_callbacks(execute=True):
            response = api(lead).post(INVITATIONS, {"email": "person@example.com"}, format="json")
        assert response.status_code == 201
        invitation = Invitation.objects.pending().get()
        services.invitation_revoke(invitation=invitation, actor=lead)
        content = response.content.decode()
        for varying in (
            json.dumps(response.json()["created_at"]),
            json.dumps(response.json()["expires_at"]),
        ):
            content = content.replace(varying, '"TIME"')
        return content.replace(f'"id":{invitation.pk},', '"id":ID,').encode()

    unknown = invite_person()
    MembershipFactory(team=other_team, user__username="person", user__email="person@example.com")
    known = invite_person()

    assert known == unknown
    assert b"outsider" not in known
    assert not Membership.objects.filter(team=team, user__username="person").exists()


@pytest.mark.parametrize(
    ("actor", "status"), [("member", 403), ("outsider", 404), ("anonymous", 401)]
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_only_leads_see_and_send_invitations(api, actors, team, invite, actor, status, method):
    invite("pending@example.com")
    before = written()

    response = getattr(api(actors[actor]), method)(
        INVITATIONS, {"email": "newbie@example.com"}, format="json"
    )

    assert response.status_code == status
    if status == 403:
        assert response.json() == {"detail": "Only a lead of Acme can manage its invitations."}
    assert b"pending@example.com" not in response.content
    assert written() == before


def test_a_lead_revokes(api, lead, team, invite):
    invite()
    invitation = Invitation.objects.get()

    response = api(lead).delete(f"{INVITATIONS}{invitation.pk}/")

    assert response.status_code == 204
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert api(lead).get(INVITATIONS).json()["results"] == []
    # Revoked: no longer pending, so no longer found.
    assert api(lead).delete(f"{INVITATIONS}{invitation.pk}/").status_code == 404


def test_another_teams_invitation_is_404_and_stays(
    api, lead, team, other_team, outsider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        theirs = services.invitation_create(
            team=other_team, email="x@example.com", role="member", actor=outsider
        )

    assert api(lead).delete(f"{INVITATIONS}{theirs.pk}/").status_code == 404
    response = api(lead).delete(f"/api/v1/teams/globex/invitations/{theirs.pk}/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert Invitation.objects.pending().get() == theirs


@pytest.mark.parametrize("invitation_id", ["0", "9223372036854775808", "abc"])
def test_a_bad_invitation_id_is_404(api, lead, team, invitation_id):
    assert api(lead).delete(f"{INVITATIONS}{invitation_id}/").status_code == 404


# --- accepting ------------------------------------------------------------------------------


def test_the_invitee_accepts(api, team, invite):
    token = invite(role="lead")
    newbie = UserFactory(username="newbie", email="NEWBIE@example.com")

    response = api(newbie).post(ACCEPT, {"token": token}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body == {
        "slug": "acme",
        "name": "Acme",
        "role": "lead",
        "monthly_budget_usd": "0.00",
        "time_zone": "UTC",
        "created_at": body["created_at"],
    }
    assert Membership.objects.get(team=team, user=newbie).role == "lead"
    assert token not in str(list(Invitation.objects.values()))


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {"token": "hcinv_nope"},
            {"token": ["This invitation link is not valid. Check that you copied all of it."]},
        ),
        ({"token": ""}, {"token": ["This field may not be blank."]}),
        ({"token": "a\x00"}, {"token": ["Null characters are not allowed."]}),
        ({}, {"token": ["This field is required."]}),
    ],
)
def test_accepting_a_bad_token_says_why(api, team, invite, body, errors):
    invite()
    newbie = UserFactory(username="newbie")
    before = written()

    response = api(newbie).post(ACCEPT, body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert written() == before


def test_someone_with_another_address_cannot_accept(api, team, invite):
    token = invite()
    someone = UserFactory(username="someone", email="someone@example.com")
    before = written()

    response = api(someone).post(ACCEPT, {"token": token}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": [
            "This invitation was sent to another email address than yours "
            "(someone@example.com). Sign in with the account of the invited address."
        ]
    }
    assert written() == before


def test_accepting_needs_credentials(api, team, invite):
    token = invite()
    before = written()

    assert api(None).post(ACCEPT, {"token": token}, format="json").status_code == 401
    assert written() == before
