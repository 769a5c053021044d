"""Every write of notifications: events and their deliveries, webhooks, team settings."""

from .due import Due, notify_due
from .events import event_emit
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
    "event_emit",
    "notify_due",
    "webhook_create",
    "webhook_delete",
    "webhook_test",
    "webhook_update",
    "webhook_validate",
]
