"""Staff admin for teams, groups, keys and the audit trail. Every write goes through services.

The admin's own save path writes model instances directly, so each admin here overrides the
save, delete and related hooks to call the services instead: that is how an admin change gets
its audit row, its validation messages and its cache invalidation like any other interface.

One module per subject; importing them here registers their admins when Django autodiscovers
keys.admin.
"""

from .events import AuditEventAdmin
from .groups import GroupAdmin, GroupAdminForm, ModelPatternsField
from .issued import ISSUED_GONE_TEMPLATE, ISSUED_KEYS_TEMPLATE, ISSUED_TOKEN_TEMPLATE
from .keys import ROTATE_CONFIRMATION_TEMPLATE, ApiKeyAdmin, ApiKeyAdminForm, IpListField
from .teams import MembershipInline, MembershipInlineForm, MembershipInlineFormSet, TeamAdmin
from .tokens import ApiTokenAdmin, ApiTokenAdminForm

__all__ = [
    "ISSUED_GONE_TEMPLATE",
    "ISSUED_KEYS_TEMPLATE",
    "ISSUED_TOKEN_TEMPLATE",
    "ROTATE_CONFIRMATION_TEMPLATE",
    "ApiKeyAdmin",
    "ApiKeyAdminForm",
    "ApiTokenAdmin",
    "ApiTokenAdminForm",
    "AuditEventAdmin",
    "GroupAdmin",
    "GroupAdminForm",
    "IpListField",
    "MembershipInline",
    "MembershipInlineForm",
    "MembershipInlineFormSet",
    "ModelPatternsField",
    "TeamAdmin",
]
