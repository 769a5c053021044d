"""keys.services.invitations and the invitation selectors: who may invite, revoke and accept,
each refusal's message, nothing written when refused, and one AuditEvent per action."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from keys import selectors, services
from keys.models import AuditEvent, Invitation, Membership, digest_key

from ..factories import MembershipFactory, UserFactory

LINK = re.compile(r"http://testserver\.example/invitations/(hcinv_[A-Za-z0-9_-]{43})/")


@pytest.fixture(autouse=True)
def _public_base_url(settings):
    settings.PUBLIC_BASE_URL = "http://testserver.example"


def invite(team, lead, email="newbie@example.com", role="member", *, capture) -> str:
    """Invite through the service, committed (so its email goes out); returns the token."""
    with capture(execute=True):
        services.invitation_create(team=team, email=email, role=role, actor=lead)
    return LINK.search(mail.outbox[-1].body).group(1)


def written() -> tuple:
    """Everything an invitation action could write."""
    return (
        list(Invitation.objects.values()),
        list(AuditEvent.objects.filter(team__isnull=False).values()),
        list(Membership.objects.values_list("team_id", "user_id", "role")),
        len(mail.outbox),
    )


# --- create ---------------------------------------------------------------------------------


def test_create_stores_a_digest_and_emails_the_link_on_commit(
    team, lead, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        invitation = services.invitation_create(
            team=team, email="  NewBie@Example.COM ", role="lead", actor=lead
        )
        # Nothing is sent before the invitation is committed.
        assert mail.outbox == []

    assert len(callbacks) == 1
    assert invitation.email == "newbie@example.com"
    assert invitation.role == "lead"
    assert invitation.invited_by == lead
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    [message] = mail.outbox
    assert message.to == ["newbie@example.com"]
    assert message.subject == "Invitation to join Acme on HCAI Keys"
    token = LINK.search(message.body).group(1)
    assert "lead invited you to join the team Acme on HCAI Keys as lead." in message.body
    # The database keeps the token's digest, never the token.
    row = Invitation.objects.filter(pk=invitation.pk).values().get()
    assert row["digest"] == digest_key(token)
    assert token not in str(row)
    assert list(AuditEvent.objects.values_list("action", "actor", "subject_label", "changes")) == [
        ("invitation.created", lead.pk, "newbie@example.com", {"role": [None, "lead"]})
    ]


def test_a_rolled_back_invitation_sends_no_email(team, lead, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.invitation_create(team=team, email="newbie@example.com", role="member", actor=lead)
    # The test's transaction is never committed: the callback stays unrun and nothing is sent.
    assert len(callbacks) == 1
    assert mail.outbox == []


def test_the_same_address_is_refused_while_pending_and_welcome_again_after_revoking(
    team, lead, django_capture_on_commit_callbacks
):
    invite(team, lead, "newbie@example.com", capture=django_capture_on_commit_callbacks)
    before = written()

    with pytest.raises(ValidationError) as caught:
        services.invitation_create(team=team, email="NEWBIE@example.com", role="lead", actor=lead)

    assert caught.value.message_dict == {
        "email": [
            "An invitation for newbie@example.com to Acme is already pending: "
            "revoke it first to send a new one."
        ]
    }
    assert written() == before
    services.invitation_revoke(invitation=Invitation.objects.get(), actor=lead)
    invite(team, lead, "newbie@example.com", capture=django_capture_on_commit_callbacks)
    assert Invitation.objects.pending().count() == 1


def test_an_expired_invitation_does_not_block_a_new_one(
    team, lead, django_capture_on_commit_callbacks
):
    invite(team, lead, capture=django_capture_on_commit_callbacks)
    Invitation.objects.update(expires_at=timezone.now())

    invite(team, lead, capture=django_capture_on_commit_callbacks)

    assert Invitation.objects.count() == 2
    assert Invitation.objects.pending().count() == 1


def test_another_team_may_invite_the_same_address(
    team, lead, other_team, outsider, django_capture_on_commit_callbacks
):
    invite(team, lead, capture=django_capture_on_commit_callbacks)
    invite(other_team, outsider, capture=django_capture_on_commit_callbacks)
    assert Invitation.objects.pending().count() == 2


@pytest.mark.parametrize(
    ("email", "role", "errors"),
    [
        ("", "member", {"email": ["Enter the email address of the person to invite."]}),
        ("   ", "member", {"email": ["Enter the email address of the person to invite."]}),
        ("newbie", "member", {"email": ["Enter a valid email address."]}),
        ("new\x00bie@example.com", "member", {"email": ["Null characters are not allowed."]}),
        ("newbie@example.com", "owner", {"role": ["Value 'owner' is not a valid choice."]}),
        (
            "member@EXAMPLE.com",
            "member",
            {"email": ["A member of Acme already has the email member@example.com."]},
        ),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(team, lead, member, email, role, errors):
    before = written()

    with pytest.raises(ValidationError) as caught:
        services.invitation_create(team=team, email=email, role=role, actor=lead)

    assert caught.value.message_dict == errors
    assert written() == before


@pytest.mark.parametrize("who", ["member", "outsider"])
def test_only_the_teams_leads_invite(request, team, lead, who):
    actor = request.getfixturevalue(who)
    before = written()

    with pytest.raises(PermissionDenied) as caught:
        services.invitation_create(team=team, email="newbie@example.com", role="lead", actor=actor)

    assert str(caught.value) == "Only a lead of Acme can manage its invitations."
    assert written() == before


def test_inviting_a_users_address_adds_nobody(
    team, lead, outsider, django_capture_on_commit_callbacks
):
    """Nobody joins a team without accepting, however well their address is known."""
    invite(team, lead, "outsider@example.com", capture=django_capture_on_commit_callbacks)

    assert not Membership.objects.filter(team=team, user=outsider).exists()
    assert selectors.team_list(actor=outsider, staff_permission=None).get().slug == "globex"


# --- revoke ---------------------------------------------------------------------------------


def test_revoke_stops_the_link_and_is_audited(team, lead, django_capture_on_commit_callbacks):
    token = invite(team, lead, capture=django_capture_on_commit_callbacks)
    invitation = Invitation.objects.get()

    services.invitation_revoke(invitation=invitation, actor=lead)

    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    assert list(AuditEvent.objects.order_by("id").values_list("action", "actor")) == [
        ("invitation.created", lead.pk),
        ("invitation.revoked", lead.pk),
    ]
    newbie = UserFactory(username="newbie")
    with pytest.raises(ValidationError) as caught:
        services.invitation_accept(token=token, user=newbie)
    assert caught.value.messages == [
        "This invitation was revoked. Ask a lead of Acme to invite you again."
    ]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("revoked", "The invitation for newbie@example.com was already revoked."),
        (
            "accepted",
            "The invitation for newbie@example.com was already accepted: "
            "remove the member instead.",
        ),
    ],
)
def test_revoke_refuses_what_is_no_longer_pending(
    team, lead, state, message, django_capture_on_commit_callbacks
):
    token = invite(team, lead, capture=django_capture_on_commit_callbacks)
    invitation = Invitation.objects.get()
    if state == "revoked":
        services.invitation_revoke(invitation=invitation, actor=lead)
    else:
        services.invitation_accept(token=token, user=UserFactory(username="newbie"))
    before = written()

    with pytest.raises(ValidationError) as caught:
        services.invitation_revoke(invitation=invitation, actor=lead)

    assert caught.value.messages == [message]
    assert written() == before


@pytest.mark.parametrize("who", ["member", "outsider"])
def test_only_the_teams_leads_revoke(request, team, lead, who, django_capture_on_commit_callbacks):
    invite(team, lead, capture=django_capture_on_commit_callbacks)
    actor = request.getfixturevalue(who)
    before = written()

    with pytest.raises(PermissionDenied):
        services.invitation_revoke(invitation=Invitation.objects.get(), actor=actor)

    assert written() == before


# --- accept ---------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["newbie@example.com", "NewBie@Example.com"])
def test_accept_makes_the_membership(team, lead, email, django_capture_on_commit_callbacks):
    token = invite(
        team, lead, "newbie@example.com", role="lead", capture=django_capture_on_commit_callbacks
    )
    newbie = UserFactory(username="newbie", email=email)

    membership = services.invitation_accept(token=token, user=newbie)

    assert (membership.team, membership.user, membership.role) == (team, newbie, "lead")
    invitation = Invitation.objects.get()
    assert invitation.accepted_by == newbie
    assert invitation.accepted_at is not None
    assert list(AuditEvent.objects.order_by("id").values_list("action", "actor")) == [
        ("invitation.created", lead.pk),
        ("invitation.accepted", newbie.pk),
    ]


NOW, YESTERDAY, TOMORROW = timedelta(0), timedelta(days=-1), timedelta(days=1)


@pytest.mark.parametrize(
    ("expires_in", "accepted"), [(NOW, False), (YESTERDAY, False), (TOMORROW, True)]
)
def test_accept_checks_expiry(team, lead, expires_in, accepted, django_capture_on_commit_callbacks):
    token = invite(team, lead, capture=django_capture_on_commit_callbacks)
    Invitation.objects.update(expires_at=timezone.now() + expires_in)
    newbie = UserFactory(username="newbie")
    before = written()

    if accepted:
        services.invitation_accept(token=token, user=newbie)
        assert Membership.objects.filter(team=team, user=newbie).exists()
    else:
        with pytest.raises(ValidationError) as caught:
            services.invitation_accept(token=token, user=newbie)
        assert caught.value.messages == [
            "This invitation has expired. Ask a lead of Acme to invite you again."
        ]
        assert written() == before


@pytest.mark.parametrize(
    ("email", "message"),
    [
        (
            "someone@example.com",
            "This invitation was sent to another email address than yours "
            "(someone@example.com). Sign in with the account of the invited address.",
        ),
        (
            "",
            "This invitation was sent to another email address than yours (none). "
            "Sign in with the account of the invited address.",
        ),
    ],
)
def test_accept_needs_the_invited_address(
    team, lead, email, message, django_capture_on_commit_callbacks
):
    token = invite(team, lead, capture=django_capture_on_commit_callbacks)
    user = UserFactory(username="someone", email=email)
    before = written()

    with pytest.raises(ValidationError) as caught:
        services.invitation_accept(token=token, user=user)

    assert caught.value.messages == [message]
    assert written() == before


def test_accept_refuses_a_used_link_and_a_member(team, lead, django_capture_on_commit_callbacks):
    token = invite(team, lead, capture=django_capture_on_commit_callbacks)
    newbie = UserFactory(username="newbie")
    services.invitation_accept(token=token, user=newbie)
    before = written()

    with pytest.raises(ValidationError) as caught:
        services.invitation_accept(token=token, user=newbie)
    assert caught.value.messages == ["This invitation has already been accepted."]
    assert written() == before

    # A second invitation for someone who joined meanwhile (e.g. added in the admin).
    Membership.objects.filter(user=newbie).delete()
    token = invite(team, lead, capture=django_capture_on_commit_callbacks)
    MembershipFactory(team=team, user=newbie)
    before = written()
    with pytest.raises(ValidationError) as caught:
        services.invitation_accept(token=token, user=newbie)
    assert caught.value.messages == ["You are already a member of Acme."]
    assert written() == before


@pytest.mark.parametrize(
    "token",
    ["", "hcinv_", "hcinv_nope", "sk-hc-" + "A" * 43, "hcinv_\x00"],
)
def test_accept_refuses_an_unknown_token(team, lead, token, django_capture_on_commit_callbacks):
    real = invite(team, lead, capture=django_capture_on_commit_callbacks)
    newbie = UserFactory(username="newbie")
    before = written()

    for damaged in (token, real[:-1], real.upper(), real + " ", " " + real):
        with pytest.raises(ValidationError) as caught:
            services.invitation_accept(token=damaged, user=newbie)
        assert caught.value.message_dict == {
            "token": ["This invitation link is not valid. Check that you copied all of it."]
        }
    assert written() == before


# --- selectors ------------------------------------------------------------------------------


def test_pending_invitations_are_for_the_teams_leads_only(
    team, lead, member, other_team, outsider, django_capture_on_commit_callbacks
):
    invite(team, lead, "a@example.com", capture=django_capture_on_commit_callbacks)
    invite(team, lead, "b@example.com", capture=django_capture_on_commit_callbacks)
    invite(other_team, outsider, "c@example.com", capture=django_capture_on_commit_callbacks)
    services.invitation_revoke(invitation=Invitation.objects.get(email="b@example.com"), actor=lead)

    assert [i.email for i in selectors.invitation_list(actor=lead, team=team)] == ["a@example.com"]
    assert list(selectors.invitation_list(actor=member, team=team)) == []
    assert list(selectors.invitation_list(actor=outsider, team=team)) == []
