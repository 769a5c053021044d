"""Invitations to join a team: a lead invites an email address, the person with that address
accepts while signed in, and a lead may revoke what is still pending.

Leads never look people up: whether an address belongs to a user of the deployment changes
nothing in what invitation_create does or answers, so inviting cannot enumerate users, and
nobody joins a team without accepting. Each action writes one audit row.
"""

import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import ProhibitNullCharactersValidator
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy
from django.utils.translation import gettext as _

from keys.models import (
    INVITATION_VALID_DAYS,
    AuditEvent,
    Invitation,
    Membership,
    Team,
    digest_key,
)
from keys.secret_formats import INVITATION_TOKEN
from keys.selectors import is_team_lead

from .audit import audit_record
from .members import join_team

logger = logging.getLogger(__name__)

INVALID_LINK = gettext_lazy("This invitation link is not valid. Check that you copied all of it.")


def normalise_email(value: str | None) -> str:
    """An address as stored: trimmed and lower-cased, so that case never makes two of one."""
    email = (value or "").strip().lower()
    # PostgreSQL cannot store NUL in text; without this the database would answer with a 500.
    ProhibitNullCharactersValidator()(email)
    return email


def _require_lead(*, actor: User, team: Team) -> None:
    if not is_team_lead(actor=actor, team=team):
        raise PermissionDenied(
            _("Only a lead of %(team)s can manage its invitations.") % {"team": team.name}
        )


@transaction.atomic(durable=True)
def invitation_create(*, team: Team, email: str, role: str, actor: User) -> Invitation:
    """Invite `email` to `team` and email them the link once the invitation is committed.

    The plaintext token exists only in that email: the database keeps its digest.
    """
    _require_lead(actor=actor, team=team)
    try:
        email = normalise_email(email)
    except ValidationError as error:
        raise ValidationError({"email": error.messages}) from None
    now = timezone.now()
    plaintext = INVITATION_TOKEN.generate()
    invitation = Invitation(
        team=team,
        email=email,
        role=role,
        invited_by=actor,
        digest=INVITATION_TOKEN.digest(plaintext),
        created_at=now,
        expires_at=now + timedelta(days=INVITATION_VALID_DAYS),
    )
    invitation.full_clean()
    # Locking the team makes two leads inviting one address at once queue up, so the second
    # sees the first invitation and is refused.
    Team.objects.select_for_update().filter(pk=team.pk).first()
    # Only the team's own members are looked at, whom the lead sees on the team page anyway.
    if Membership.objects.filter(team=team, user__email__iexact=email).exists():
        raise ValidationError(
            {
                "email": _("A member of %(team)s already has the email %(email)s.")
                % {"team": team.name, "email": email}
            }
        )
    if Invitation.objects.pending(now).filter(team=team, email=email).exists():
        raise ValidationError(
            {
                "email": _(
                    "An invitation for %(email)s to %(team)s is already pending: "
                    "revoke it first to send a new one."
                )
                % {"email": email, "team": team.name}
            }
        )
    invitation.save()
    _record(invitation, AuditEvent.Action.INVITATION_CREATED, actor)
    transaction.on_commit(lambda: _send(invitation, plaintext))
    return invitation


def _send(invitation: Invitation, plaintext: str) -> None:
    link = settings.PUBLIC_BASE_URL + reverse("keys:invitation", args=[plaintext])
    body = render_to_string(
        "keys/invitation_email.txt",
        {"invitation": invitation, "link": link, "time_zone": settings.TIME_ZONE},
    )
    try:
        send_mail(
            gettext("Invitation to join %(team)s on HCAI Keys") % {"team": invitation.team.name},
            body,
            None,
            [invitation.email],
        )
    except (smtplib.SMTPException, OSError) as error:
        # The invitation is committed and listed as pending: a lead can revoke it and invite
        # again. The error names no token (the message body is not part of it).
        logger.error("Could not email invitation %s: %s", invitation.pk, error.__class__.__name__)


def invitation_refusal(*, invitation: Invitation, user: User) -> str | None:
    """Why `user` cannot accept `invitation` now, or None if they can. The accept page shows
    it before anyone presses the button; invitation_accept refuses with it."""
    team = invitation.team.name
    if invitation.accepted_at is not None:
        return _("This invitation has already been accepted.")
    if invitation.revoked_at is not None:
        return _("This invitation was revoked. Ask a lead of %(team)s to invite you again.") % {
            "team": team
        }
    if invitation.expires_at <= timezone.now():
        return _("This invitation has expired. Ask a lead of %(team)s to invite you again.") % {
            "team": team
        }
    if normalise_email(user.email) != invitation.email:
        return _(
            "This invitation was sent to another email address than yours (%(email)s). Sign in "
            "with the account of the invited address."
        ) % {"email": user.email or _("none")}
    if Membership.objects.filter(team=invitation.team, user=user).exists():
        return _("You are already a member of %(team)s.") % {"team": team}
    return None


@transaction.atomic(durable=True)
def invitation_accept(*, token: str, user: User) -> Membership:
    """`user` joins the team of the invitation whose link carries `token`."""
    invitation = (
        Invitation.objects.select_for_update(of=("self",))
        .select_related("team")
        .filter(digest=digest_key(token))
        .first()
    )
    if invitation is None:
        raise ValidationError({"token": INVALID_LINK})
    refusal = invitation_refusal(invitation=invitation, user=user)
    if refusal is not None:
        raise ValidationError(refusal)
    membership = join_team(team=invitation.team, user=user, role=invitation.role)
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    _record(invitation, AuditEvent.Action.INVITATION_ACCEPTED, user)
    return membership


@transaction.atomic(durable=True)
def invitation_revoke(*, invitation: Invitation, actor: User) -> Invitation:
    """The link stops working at once; the row stays, for the record."""
    _require_lead(actor=actor, team=invitation.team)
    invitation = Invitation.objects.select_for_update(of=("self",)).get(pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise ValidationError(
            _("The invitation for %(email)s was already accepted: remove the member instead.")
            % {"email": invitation.email}
        )
    if invitation.revoked_at is not None:
        raise ValidationError(
            _("The invitation for %(email)s was already revoked.") % {"email": invitation.email}
        )
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    _record(invitation, AuditEvent.Action.INVITATION_REVOKED, actor)
    return invitation


def _record(invitation: Invitation, action: str, actor: User | None) -> None:
    audit_record(
        action=action, actor=actor, subject=invitation, changes={"role": [None, invitation.role]}
    )
