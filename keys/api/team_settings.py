"""A team's key settings in the REST API: whether members create keys, and where a member's new
key starts (group, quota, rate limit, expiration period), which a member may only tighten.

Every member of the team may read them (they are where the member's own new keys start);
leads, and staff who may change teams, change them; members are refused (403), anyone else
does not find the team (404). Changes go through keys.services.team_key_settings_update,
which writes one audit row, as the team page's form does.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import FIELD_ERRORS
from keys import selectors, services
from keys.models import Team
from keys.validators import MAX_EXPIRY_DAYS

from .serializers import DecimalInputField, GroupIdField, StrictBooleanField
from .views import TEAM_SLUG

STAFF_READ = "keys.view_team"
STAFF_CHANGE = "keys.change_team"


class TeamKeySettingsSerializer(serializers.ModelSerializer):
    default_group = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="A group id; null: none."
    )
    default_quota_limit_usd = serializers.DecimalField(
        max_digits=12, decimal_places=2, read_only=True, help_text="0 means unlimited."
    )

    class Meta:
        model = Team
        fields = [
            "members_can_create_keys",
            "default_group",
            "default_quota_limit_usd",
            "default_rate_limit",
            "default_expiry_days",
        ]
        read_only_fields = fields


class TeamKeySettingsUpdateSerializer(serializers.Serializer):
    """Send only the settings to change; null or "" clears a default."""

    members_can_create_keys = StrictBooleanField(required=False)
    default_group = GroupIdField(
        required=False,
        allow_null=True,
        help_text="A group id from /api/v1/groups/ the team may use; null: none (members "
        "choose one).",
    )
    default_quota_limit_usd = DecimalInputField(
        required=False,
        allow_null=True,
        help_text="USD in plain decimal notation, e.g. 25.00, at least 0.01; 0 or null: unlimited.",
    )
    default_rate_limit = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="Requests per s, m, h or d, e.g. 60/m. Empty or null: no limit.",
    )
    default_expiry_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        help_text="Members' new keys expire this many days after they are made; null: never.",
    )


class TeamKeySettingsView(APIView):
    serializer_class = TeamKeySettingsSerializer

    def team(self, *, change: bool) -> Team:
        user = self.request.user
        teams = selectors.team_list(
            actor=user, staff_permission=STAFF_CHANGE if change else STAFF_READ
        )
        team = teams.filter(slug=self.kwargs["team_slug"]).first()
        if team is None:
            raise NotFound
        if change and not selectors.is_team_lead(
            actor=user, team=team, staff_permission=STAFF_CHANGE
        ):
            raise PermissionDenied(f"Only a lead of {team.name} can change its key settings.")
        return team

    @extend_schema(
        summary="A team's key settings",
        description="Whether members create keys, and the defaults a member's new key starts "
        "at (and may only tighten).",
        parameters=[TEAM_SLUG],
        responses={200: TeamKeySettingsSerializer},
    )
    def get(self, request: Request, team_slug: str) -> Response:
        return Response(TeamKeySettingsSerializer(self.team(change=False)).data)

    @extend_schema(
        summary="Change a team's key settings (leads)",
        parameters=[TEAM_SLUG],
        request=TeamKeySettingsUpdateSerializer,
        responses={200: TeamKeySettingsSerializer, 400: FIELD_ERRORS},
    )
    def patch(self, request: Request, team_slug: str) -> Response:
        team = self.team(change=True)
        serializer = TeamKeySettingsUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        for field in ("default_quota_limit_usd", "default_rate_limit"):
            if field in changes and changes[field] is None:
                changes[field] = ""
        team = services.team_key_settings_update(team=team, actor=request.user, **changes)
        return Response(TeamKeySettingsSerializer(team).data)
