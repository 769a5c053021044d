from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from . import events, team_settings, views

app_name = "keys-api"

router = SimpleRouter()
router.register("keys", views.KeyViewSet, basename="key")
router.register("groups", views.GroupViewSet, basename="group")
router.register("teams", views.TeamViewSet, basename="team")
router.register(
    rf"teams/(?P<team_slug>{views.SLUG_PATTERN})/members",
    views.TeamMemberViewSet,
    basename="member",
)
router.register(
    rf"teams/(?P<team_slug>{views.SLUG_PATTERN})/invitations",
    views.TeamInvitationViewSet,
    basename="invitation",
)
router.register(
    rf"teams/(?P<team_slug>{views.SLUG_PATTERN})/events",
    events.TeamEventViewSet,
    basename="team-event",
)

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("invitations/accept/", views.InvitationAcceptView.as_view(), name="invitation-accept"),
    re_path(
        rf"^teams/(?P<team_slug>{views.SLUG_PATTERN})/key-settings/$",
        team_settings.TeamKeySettingsView.as_view(),
        name="team-key-settings",
    ),
    *router.urls,
]
