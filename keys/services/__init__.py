"""Every write to teams, memberships, invitations, groups, keys and tokens. Admin, portal, API,
tasks and commands call these. Each action writes exactly one AuditEvent in its own durable
transaction (a key change also drops the relay's cached state of the key); the `*_validate`
functions answer what an action would refuse without writing anything.

One module per subject; callers import from here (`from keys import services`).
"""

from .audit import audit_change, audit_record
from .budgets import (
    membership_limit_update,
    membership_limit_validate,
    team_budget_update,
    team_budget_validate,
)
from .groups import group_save
from .invitations import (
    invitation_accept,
    invitation_create,
    invitation_refusal,
    invitation_revoke,
)
from .keys import (
    EDITABLE_FIELDS,
    TEAM_DEFAULT,
    WINDOW_LIMITS,
    IssuedKey,
    api_key_actor_role,
    api_key_create,
    api_key_delete,
    api_key_disable,
    api_key_disable_for_spend_spike,
    api_key_enable,
    api_key_expire,
    api_key_rotate,
    api_key_update,
    api_key_validate,
    team_key_defaults,
)
from .members import (
    membership_add,
    membership_changes_validate,
    membership_remove,
    membership_set_role,
    team_key_settings_update,
    team_save,
    team_set_allowed_groups,
)
from .preferences import user_language, user_language_set
from .tokens import (
    API_TOKEN_LAST_USED_RESOLUTION_SECONDS,
    IssuedApiToken,
    api_token_create,
    api_token_mark_used,
    api_token_revoke,
    api_token_validate,
)
from .usage import api_key_add_spend, api_key_mark_used

__all__ = [
    "API_TOKEN_LAST_USED_RESOLUTION_SECONDS",
    "EDITABLE_FIELDS",
    "TEAM_DEFAULT",
    "WINDOW_LIMITS",
    "IssuedApiToken",
    "IssuedKey",
    "api_key_actor_role",
    "api_key_add_spend",
    "api_key_create",
    "api_key_delete",
    "api_key_disable",
    "api_key_disable_for_spend_spike",
    "api_key_enable",
    "api_key_expire",
    "api_key_mark_used",
    "api_key_rotate",
    "api_key_update",
    "api_key_validate",
    "api_token_create",
    "api_token_mark_used",
    "api_token_revoke",
    "api_token_validate",
    "audit_change",
    "audit_record",
    "group_save",
    "invitation_accept",
    "invitation_create",
    "invitation_refusal",
    "invitation_revoke",
    "membership_add",
    "membership_changes_validate",
    "membership_limit_update",
    "membership_limit_validate",
    "membership_remove",
    "membership_set_role",
    "team_budget_update",
    "team_budget_validate",
    "team_key_defaults",
    "team_key_settings_update",
    "team_save",
    "team_set_allowed_groups",
    "user_language",
    "user_language_set",
]
