"""The portal: server-rendered pages for keys, teams and the signed-in person's API tokens.

Every page resolves its team, key and token through keys.selectors, so anything outside the
signed-in person's scope is a 404, whether reached by URL, form field or a guessed id. Writes go
through keys.services; their ValidationErrors come back as field errors on the same form.

One module per subject; keys/urls.py routes to the views named here.
"""

from .auth import LOGIN_LIMITS, LoginView, login_username
from .invitations import invitation_accept
from .keys import (
    KEYS_PER_PAGE,
    home,
    key_create,
    key_delete,
    key_detail,
    key_edit,
    key_issued,
    key_list,
    key_rotate,
)
from .language import language_set
from .team import (
    invitation_create,
    invitation_revoke,
    member_cap,
    member_remove,
    member_role,
    team_detail,
    team_key_settings,
)
from .tokens import token_create, token_issued, token_list, token_revoke

__all__ = [
    "KEYS_PER_PAGE",
    "LOGIN_LIMITS",
    "LoginView",
    "home",
    "invitation_accept",
    "invitation_create",
    "invitation_revoke",
    "key_create",
    "key_delete",
    "key_detail",
    "key_edit",
    "key_issued",
    "key_list",
    "key_rotate",
    "language_set",
    "login_username",
    "member_cap",
    "member_remove",
    "member_role",
    "team_detail",
    "team_key_settings",
    "token_create",
    "token_issued",
    "token_list",
    "token_revoke",
]
