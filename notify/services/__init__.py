"""Every write of notifications: events and their deliveries, webhooks, team settings."""

from .due import Due, notify_due
from .events import event_emit
from .settings import (
    email_preference_update,
    notification_settings_update,
    notification_settings_validate,
)

__all__ = [
    "Due",
    "email_preference_update",
    "event_emit",
    "notification_settings_update",
    "notification_settings_validate",
    "notify_due",
]
