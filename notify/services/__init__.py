"""Every write of notifications: events and their deliveries, webhooks, team settings."""

from .due import Due, notify_due
from .events import event_emit
from .settings import (
    email_preference_update,
    notification_settings_update,
    notification_settings_validate,
)
from .webhooks import (
    CreatedWebhook,
    delivery_redeliver,
    webhook_create,
    webhook_delete,
    webhook_test,
    webhook_update,
    webhook_validate,
)

__all__ = [
    "CreatedWebhook",
    "Due",
    "delivery_redeliver",
    "email_preference_update",
    "event_emit",
    "notification_settings_update",
    "notification_settings_validate",
    "notify_due",
    "webhook_create",
    "webhook_delete",
    "webhook_test",
    "webhook_update",
    "webhook_validate",
]
