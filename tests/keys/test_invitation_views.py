"""The portal's invitations: the team page's invite form and pending list, revoking, and the
accept page the emailed link opens."""

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from keys import services
from keys.models import AuditEvent, Invitation, Membership
from tests.invitation_state import written

from ..factories import MembershipFactory, UserFactory

PASSWORD = "pw-for-tests-1"
LINK = re.compile(r"http://keys\.example/invitations/(hcinv_[A-Za-z0-9_-]{43})/")


@pytest.fixture(autouse=True)
def _public_base_url(settings):
    settings.PUBLIC_BASE_URL = "http://keys.example"


def team_url(name: str, team, *args) -> str:
    return reverse(name, args=[team.slug, *args])


def accept_url(token: str) -> str:
    return reverse("keys:invitation", args=[token])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def invite(client, lead, team, django_capture_on_commit_callbacks):
    """invite(email, role): the lead sends an invitation through the team page; returns the
    token from the emailed link."""

    def send(email: str = "newbie@example.com", role: str = "member") -> str:
        client.force_login(lead)
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                team_url("keys:invitation_create", team), {"email": email, "role": role}
            )
        assert response.status_code == 302, response.content
        client.logout()
        return LINK.search(mail.outbox[-1].body).group(1)

    return send


# --- inviting -------------------------------------------------------------------------------


def test_a_lead_invites_by_email(client, team, lead, django_capture_on_commit_callbacks):
    client.force_login(lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            team_url("keys:invitation_create", team),
            {"email": "NewBie@Example.com", "role": "lead"},
            follow=True,
        )

    assert response.redirect_chain == [(team_url("keys:team", team), 302)]
    assert messages_of(response) == ["Invitation sent to newbie@example.com."]
    [invitation] = response.context["invitations"]
    assert (invitation.email, invitation.role) == ("newbie@example.com", "lead")
    page = response.content.decode()
    assert '<th scope="row">newbie@example.com</th>' in page
    assert team_url("keys:invitation_revoke", team, invitation.pk) in page
    [message] = mail.outbox
    assert message.to == ["newbie@example.com"]
    assert LINK.search(message.body)
    # Nobody joined: the invitee has not accepted.
    assert Membership.objects.filter(team=team).count() == 1


def test_the_team_page_offers_invitations_not_a_user_lookup(client, team, lead):
    client.force_login(lead)
    page = client.get(team_url("keys:team", team)).content.decode()

    assert "Invite by email" in page
    assert "No invitations are waiting for an answer." in page
    assert "Username or email" not in page
    assert "/members/add/" not in page


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        (
            {"email": "", "role": "member"},
            {"email": ["Enter the email address of the person to invite."]},
        ),
        ({"email": "newbie", "role": "member"}, {"email": ["Enter a valid email address."]}),
        (
            {"email": "member@example.com", "role": "member"},
            {"email": ["A member of Acme already has the email member@example.com."]},
        ),
        (
            {"email": "newbie@example.com", "role": "owner"},
            {"role": ["Select a valid choice. owner is not one of the available choices."]},
        ),
    ],
)
def test_an_invitation_that_cannot_be_sent_says_why(client, team, lead, member, data, errors):
    before = written()
    client.force_login(lead)

    response = client.post(team_url("keys:invitation_create", team), data)

    assert response.status_code == 400
    assert response.context["invite_form"].errors == errors
    assert written() == before


def test_a_pending_invitation_is_not_sent_twice(client, team, lead, invite):
    invite("newbie@example.com")
    before = written()
    client.force_login(lead)

    response = client.post(
        team_url("keys:invitation_create", team), {"email": "NEWBIE@example.com", "role": "member"}
    )

    assert response.status_code == 400
    assert response.context["invite_form"].errors == {
        "email": [
            "An invitation for newbie@example.com to Acme is already pending: "
            "revoke it first to send a new one."
        ]
    }
    assert written() == before


@pytest.mark.parametrize("who", ["member", "outsider"])
def test_only_the_teams_leads_invite(client, request, team, who):
    client.force_login(request.getfixturevalue(who))
    before = written()

    response = client.post(
        team_url("keys:invitation_create", team), {"email": "newbie@example.com", "role": "lead"}
    )

    assert response.status_code == 404
    assert written() == before


def _normalised(content: bytes) -> bytes:
    """A page without what differs between two renders anyway: CSRF tokens, row ids, and the
    team's activity, which grows with each render (its rows are compared on their own)."""
    content = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)
    content = re.sub(
        rb'<section class="card" aria-labelledby="activity-heading">.*?</section>',
        b"",
        content,
        flags=re.S,
    )
    content = re.sub(rb"/invitations/\d+/", b"/invitations/ID/", content)
    return re.sub(rb'data-invitation-id="\d+"', b"", content)


def test_inviting_tells_nothing_about_who_has_an_account(
    client, team, lead, other_team, outsider, django_capture_on_commit_callbacks
):
    """One address invited twice: first with no user behind it, then once a user of another
    team has it. The lead sees the same answers, and nothing of the other team."""

    def invite_person() -> tuple:
        client.force_login(lead)
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                team_url("keys:invitation_create", team),
                {"email": "person@example.com", "role": "member"},
            )
        page = client.get(response["Location"])
        services.invitation_revoke(invitation=Invitation.objects.pending().get(), actor=lead)
        return response.status_code, response["Location"], response.content, page

    unknown = invite_person()
    MembershipFactory(team=other_team, user__username="person", user__email="person@example.com")
    known = invite_person()

    assert known[:3] == unknown[:3] == (302, team_url("keys:team", team), b"")
    assert known[3].status_code == unknown[3].status_code == 200
    assert _normalised(known[3].content) == _normalised(unknown[3].content)
    for page in (known[3], unknown[3]):
        assert b"outsider" not in page.content
        assert b"Globex" not in page.content
    assert not Membership.objects.filter(team=team, user__username="person").exists()
    # The team's activity records both invitations alike.
    first, second = (
        AuditEvent.objects.filter(action="invitation.created")
        .order_by("id")
        .values("actor", "team", "subject_type", "subject_label", "changes")
    )
    assert (
        first
        == second
        == {
            "actor": lead.pk,
            "team": team.pk,
            "subject_type": "invitation",
            "subject_label": "person@example.com",
            "changes": {"role": [None, "member"]},
        }
    )


# --- revoking -------------------------------------------------------------------------------


def test_a_lead_revokes_an_invitation(client, team, lead, invite):
    token = invite()
    invitation = Invitation.objects.get()
    client.force_login(lead)

    response = client.post(team_url("keys:invitation_revoke", team, invitation.pk), follow=True)

    assert messages_of(response) == ["Invitation for newbie@example.com revoked."]
    assert list(response.context["invitations"]) == []
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    newbie = UserFactory(username="newbie")
    client.force_login(newbie)
    page = client.get(accept_url(token))
    assert page.context["refusal"] == (
        "This invitation was revoked. Ask a lead of Acme to invite you again."
    )
    assert b"Accept invitation" not in page.content


def test_another_teams_invitation_is_404_and_stays(
    client, team, lead, other_team, outsider, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        theirs = services.invitation_create(
            team=other_team, email="x@example.com", role="member", actor=outsider
        )
    client.force_login(lead)

    # Through the lead's own team, and through the other team's page.
    assert client.post(team_url("keys:invitation_revoke", team, theirs.pk)).status_code == 404
    assert client.post(team_url("keys:invitation_revoke", other_team, theirs.pk)).status_code == 404
    assert Invitation.objects.pending().get() == theirs


def test_members_cannot_revoke(client, team, member, invite):
    invite()
    invitation = Invitation.objects.get()
    client.force_login(member)

    response = client.post(team_url("keys:invitation_revoke", team, invitation.pk))

    assert response.status_code == 404
    assert Invitation.objects.pending().get() == invitation


# --- accepting ------------------------------------------------------------------------------


def test_accepting_signs_in_first_and_comes_back(client, team, invite):
    token = invite(role="lead")
    newbie = UserFactory(username="newbie", email="NewBie@example.com")

    response = client.get(accept_url(token))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('keys:login')}?next={accept_url(token)}"

    response = client.post(
        response["Location"],
        {"username": "newbie", "password": PASSWORD},
        REMOTE_ADDR="198.51.100.7",
    )
    assert response.status_code == 302
    assert response["Location"] == accept_url(token)

    page = client.get(accept_url(token))
    assert page.status_code == 200
    assert "no-cache" in page["Cache-Control"]
    content = page.content.decode()
    assert "You are invited to join <strong>Acme</strong> as <strong>lead</strong>" in content
    assert "Accept invitation" in content
    assert not Membership.objects.filter(user=newbie).exists()

    response = client.post(accept_url(token), follow=True)
    assert response.redirect_chain == [(team_url("keys:list", team), 302)]
    assert messages_of(response) == ["You joined Acme as lead."]
    assert Membership.objects.get(team=team, user=newbie).role == "lead"
    # The database never held the token, only its digest.
    assert token not in str(list(Invitation.objects.values()))
    assert token not in str(list(AuditEvent.objects.values()))


def test_the_accept_page_needs_a_csrf_token(team, invite):
    token = invite()
    newbie = UserFactory(username="newbie")
    client = Client(enforce_csrf_checks=True)
    client.force_login(newbie)

    assert client.post(accept_url(token)).status_code == 403
    assert not Membership.objects.filter(user=newbie).exists()


def test_someone_with_another_address_cannot_accept(client, team, invite):
    token = invite()
    someone = UserFactory(username="someone", email="someone@example.com")
    client.force_login(someone)
    before = written()

    page = client.get(accept_url(token))
    response = client.post(accept_url(token))

    message = (
        "This invitation was sent to another email address than yours (someone@example.com). "
        "Sign in with the account of the invited address."
    )
    assert page.status_code == 200
    assert page.context["refusal"] == message
    assert b"Accept invitation" not in page.content
    assert b"newbie@example.com" not in page.content
    assert response.status_code == 400
    assert response.context["refusal"] == message
    assert written() == before


@pytest.mark.parametrize("token", ["hcinv_nope", "sk-hc-" + "A" * 43, "x"])
def test_an_unknown_link_is_404(client, team, invite, token):
    real = invite()
    client.force_login(UserFactory(username="newbie"))
    before = written()

    for damaged in (token, real[:-1], real.upper()):
        assert client.get(accept_url(damaged)).status_code == 404
        assert client.post(accept_url(damaged)).status_code == 404
    assert written() == before
