"""Writes to groups."""

from django.db import transaction

from keys.cache import invalidate_key_state
from keys.models import Group


@transaction.atomic
def group_save(*, group: Group) -> Group:
    """Create or change a group; keys using it obey the new models and multiplier at once."""
    group.full_clean()
    group.save()
    invalidate_key_state(group.api_keys.values_list("digest", flat=True))
    return group
