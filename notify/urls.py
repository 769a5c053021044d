"""The portal's notification pages, under a team: /t/<slug>/notifications/..."""

from django.urls import path

from . import views

app_name = "notify"

urlpatterns = [
    path("t/<slug:team_slug>/notifications/", views.notifications, name="notifications"),
    path(
        "t/<slug:team_slug>/notifications/settings/",
        views.settings_update,
        name="settings_update",
    ),
    path(
        "t/<slug:team_slug>/notifications/me/",
        views.preference_update,
        name="preference_update",
    ),
]
