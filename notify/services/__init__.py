"""Every write of notifications: events and their deliveries, webhooks, team settings."""

from .events import event_emit

__all__ = ["event_emit"]
