"""Every write of notifications: events and their deliveries, webhooks, team settings."""

from .due import Due, notify_due
from .events import event_emit

__all__ = ["Due", "event_emit", "notify_due"]
