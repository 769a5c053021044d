"""The portal's notification pages, under a team: /t/<slug>/notifications/..."""

from django.urls import path

from . import views

app_name = "notify"

NOTIFICATIONS = "t/<slug:team_slug>/notifications/"
WEBHOOKS = NOTIFICATIONS + "webhooks/"
WEBHOOK = WEBHOOKS + "<int:webhook_id>/"

urlpatterns = [
    path(NOTIFICATIONS, views.notifications, name="notifications"),
    path(NOTIFICATIONS + "settings/", views.settings_update, name="settings_update"),
    path(NOTIFICATIONS + "me/", views.preference_update, name="preference_update"),
    path(WEBHOOKS, views.webhook_list, name="webhooks"),
    path(WEBHOOKS + "new/", views.webhook_create, name="webhook_create"),
    path(WEBHOOK, views.webhook_detail, name="webhook_detail"),
    path(WEBHOOK + "created/<str:once>/", views.webhook_created, name="webhook_created"),
    path(WEBHOOK + "edit/", views.webhook_edit, name="webhook_edit"),
    path(WEBHOOK + "delete/", views.webhook_delete, name="webhook_delete"),
    path(WEBHOOK + "test/", views.webhook_test, name="webhook_test"),
    path(
        WEBHOOK + "deliveries/<uuid:delivery_uuid>/redeliver/",
        views.delivery_redeliver,
        name="delivery_redeliver",
    ),
]
