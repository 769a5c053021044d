"""The one writer of audit rows. Each service calls it once per action, inside the service's
own transaction, so a change and its row commit together or not at all."""

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db.models import Model

from keys.models import ApiKey, AuditEvent, Invitation, Team


def audit_record(
    *,
    action: str,
    actor: User | None,
    subject: Model,
    changes: dict[str, Any],
    team: Team | None = None,
) -> AuditEvent:
    """One row of the audit trail about `subject`, in `team` (by default the subject's own
    team, if it has one). The subject's kind is the action's first word ("channel.updated":
    a channel); its name and display prefix are copied, so the row still reads once the
    subject is deleted. `changes` maps each changed field to [old, new] and never holds a
    secret: callers write "changed" for a credential, never its value."""
    if team is None and isinstance(subject, Team):
        team = subject
    return AuditEvent.objects.create(
        action=action,
        actor=actor,
        team_id=team.pk if team is not None else getattr(subject, "team_id", None),
        subject_type=action.partition(".")[0],
        subject_id=subject.pk,
        subject_label=_label(subject),
        subject_prefix=getattr(subject, "prefix", ""),
        key=subject if isinstance(subject, ApiKey) else None,
        changes=changes,
    )


def audit_change(
    *, action: str, actor: User | None, subject: Model, field: str, before: Any, after: Any
) -> None:
    """One row for a change of `field` from `before` to `after`, if it did change."""
    if after != before:
        audit_record(action=action, actor=actor, subject=subject, changes={field: [before, after]})


def _label(subject: Model) -> str:
    """What the subject was called: a member's username, an invited address, its name, else
    what it prints as (a price: its model)."""
    if isinstance(subject, User):
        return subject.get_username()
    if isinstance(subject, Invitation):
        return subject.email
    name = getattr(subject, "name", None)
    return name if isinstance(name, str) else str(subject)
