"""The REST API's notification endpoints, under /api/v1/teams/<slug>/..."""

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from keys.api.views import SLUG_PATTERN

from . import settings, views

router = SimpleRouter()
router.register(
    rf"teams/(?P<team_slug>{SLUG_PATTERN})/webhooks", views.WebhookViewSet, basename="webhook"
)

urlpatterns = [
    re_path(
        rf"^teams/(?P<team_slug>{SLUG_PATTERN})/notifications/$",
        settings.NotificationSettingsView.as_view(),
        name="team-notifications",
    ),
    re_path(
        rf"^teams/(?P<team_slug>{SLUG_PATTERN})/notifications/me/$",
        settings.EmailPreferenceView.as_view(),
        name="team-notifications-me",
    ),
    *router.urls,
]
