"""Every write to teams, memberships, invitations, groups and keys. Admin, portal, API, tasks
and commands call these; each key change writes exactly one KeyEvent and drops the relay's
cached state, each invitation action one TeamEvent.

One module per subject; callers import from here (`from keys import services`).
"""

from .groups import group_save
from .invitations import (
    invitation_accept,
    invitation_create,
    invitation_refusal,
    invitation_revoke,
)
from .keys import (
    EDITABLE_FIELDS,
    IssuedKey,
    api_key_create,
    api_key_delete,
    api_key_disable,
    api_key_enable,
    api_key_expire,
    api_key_rotate,
    api_key_update,
)
from .members import (
    membership_add,
    membership_remove,
    membership_set_role,
    team_set_allowed_groups,
)
from .tokens import (
    API_TOKEN_LAST_USED_RESOLUTION_SECONDS,
    IssuedApiToken,
    api_token_create,
    api_token_mark_used,
    api_token_revoke,
)
from .usage import api_key_add_spend, api_key_mark_used

__all__ = [
    "API_TOKEN_LAST_USED_RESOLUTION_SECONDS",
    "EDITABLE_FIELDS",
    "IssuedApiToken",
    "IssuedKey",
    "api_key_add_spend",
    "api_key_create",
    "api_key_delete",
    "api_key_disable",
    "api_key_enable",
    "api_key_expire",
    "api_key_mark_used",
    "api_key_rotate",
    "api_key_update",
    "api_token_create",
    "api_token_mark_used",
    "api_token_revoke",
    "group_save",
    "invitation_accept",
    "invitation_create",
    "invitation_refusal",
    "invitation_revoke",
    "membership_add",
    "membership_remove",
    "membership_set_role",
    "team_set_allowed_groups",
]
