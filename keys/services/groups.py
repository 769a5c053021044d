"""Writes to groups: each creation or change writes one audit row (groups belong to no team)."""

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db import transaction

from keys.cache import invalidate_key_state
from keys.models import AuditEvent, Group

from .audit import audit_record
from .keys import _audit_value

# What a group's audit row records, in the order the admin shows them.
GROUP_FIELDS = ("name", "description", "multiplier", "models", "is_active")


@transaction.atomic(durable=True)
def group_save(*, group: Group, actor: User | None) -> Group:
    """Create or change a group; keys using it obey the new models and multiplier at once."""
    stored = (
        None
        if group.pk is None
        else Group.objects.filter(pk=group.pk).values(*GROUP_FIELDS).first()
    )
    # Checked first, so the values compared below are the model's (a Decimal multiplier).
    group.full_clean()
    group.save()
    after = {field: _audit_value(getattr(group, field)) for field in GROUP_FIELDS}
    if stored is None:
        action = AuditEvent.Action.GROUP_CREATED
        changes = {field: [None, value] for field, value in after.items()}
    else:
        action = AuditEvent.Action.GROUP_UPDATED
        before = {field: _audit_value(value) for field, value in stored.items()}
        changes = {
            field: [before[field], after[field]]
            for field in GROUP_FIELDS
            if before[field] != after[field]
        }
    if changes:
        audit_record(action=action, actor=actor, subject=group, changes=changes)
    invalidate_key_state(group.api_keys.values_list("digest", flat=True))
    return group
