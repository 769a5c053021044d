"""The one writer of audit rows. Each service calls it once per action, inside the service's
own transaction, so a change and its row commit together or not at all."""

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User

from keys.models import ApiKey, AuditEvent


def audit_record(
    *,
    action: str,
    actor: User | None,
    subject_type: str,
    subject_id: int | None,
    subject_label: str = "",
    subject_prefix: str = "",
    team_id: int | None = None,
    key: ApiKey | None = None,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """One row of the audit trail. `changes` maps each changed field to [old, new] and never
    holds a secret: callers write "changed" for a credential, never its value."""
    return AuditEvent.objects.create(
        action=action,
        actor=actor,
        team_id=team_id,
        subject_type=subject_type,
        subject_id=subject_id,
        subject_label=subject_label,
        subject_prefix=subject_prefix,
        key=key,
        changes=changes or {},
    )
