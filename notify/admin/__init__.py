"""Staff admin for notifications. Every write goes through notify.services, as in keys.admin.

One module per subject; importing them here registers their admins.
"""

from .settings import EmailPreferenceAdmin, NotificationSettingsAdmin
from .webhooks import AttemptAdmin, DeliveryAdmin, WebhookAdmin, WebhookAdminForm

__all__ = [
    "AttemptAdmin",
    "DeliveryAdmin",
    "EmailPreferenceAdmin",
    "NotificationSettingsAdmin",
    "WebhookAdmin",
    "WebhookAdminForm",
]
