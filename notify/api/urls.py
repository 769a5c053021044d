"""The REST API's notification endpoints, under /api/v1/teams/<slug>/..."""

from rest_framework.routers import SimpleRouter

from keys.api.views import SLUG_PATTERN

from . import views

router = SimpleRouter()
router.register(
    rf"teams/(?P<team_slug>{SLUG_PATTERN})/webhooks", views.WebhookViewSet, basename="webhook"
)

urlpatterns = [*router.urls]
