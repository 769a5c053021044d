"""The portal's notification pages. One module per subject; notify/urls.py routes to the views
named here."""

from .settings import notifications, preference_update, settings_update
from .webhooks import (
    delivery_redeliver,
    webhook_create,
    webhook_created,
    webhook_delete,
    webhook_detail,
    webhook_edit,
    webhook_list,
    webhook_test,
)

__all__ = [
    "delivery_redeliver",
    "notifications",
    "preference_update",
    "settings_update",
    "webhook_create",
    "webhook_created",
    "webhook_delete",
    "webhook_detail",
    "webhook_edit",
    "webhook_list",
    "webhook_test",
]
