"""A team's notification settings in the REST API, and the caller's own choice of emails about
their keys.

/teams/<slug>/notifications/: every member of the team reads the settings; its leads, and staff
who may change notification settings, change them; members are refused (403), anyone else does
not find the team (404). /teams/<slug>/notifications/me/: the calling member's own choice, which
only they read and change. Both go through notify.services, as the portal's page does: one
audit row per change, none when nothing changed.
"""

from typing import Any

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import FIELD_ERRORS
from keys import selectors as key_selectors
from keys.api.serializers import DecimalInputField, StrictBooleanField
from keys.api.views import TEAM_SLUG
from keys.models import Membership, Team

from .. import services
from ..models import NotificationSettings
from ..selectors import email_preference_for, notification_settings_for
from ..services.settings import (
    LONGEST_EXPIRY_WARNING_DAYS,
    MAX_EXPIRY_WARNINGS,
    MAX_THRESHOLDS,
    RECIPIENTS_MESSAGE,
    SETTINGS_STAFF_PERMISSION,
    settings_refusal,
)

STAFF_READ = "notify.view_notificationsettings"
STAFF_CHANGE = SETTINGS_STAFF_PERMISSION


def _numbers_list(*, minimum: int, maximum: int, most: int, example: list[int]):
    """A JSON list of whole numbers, handed to the service as sent: the service checks each
    item (its type too, so "80" and 80.5 get its message) and reports it as the portal does."""

    @extend_schema_field(
        {
            "type": "array",
            "items": {"type": "integer", "minimum": minimum, "maximum": maximum},
            "maxItems": most,
            "uniqueItems": True,
            "example": example,
        }
    )
    class NumbersListField(serializers.Field):
        default_error_messages = {
            "not_a_list": format_lazy(
                gettext_lazy("Send a list of whole numbers, e.g. {example}."), example=example
            )
        }

        def to_internal_value(self, data: Any) -> list:
            if not isinstance(data, list):
                self.fail("not_a_list")
            return data

        def to_representation(self, value: list) -> list:
            return list(value)

    return NumbersListField


ThresholdsField = _numbers_list(minimum=1, maximum=100, most=MAX_THRESHOLDS, example=[50, 80, 100])
ExpiryDaysField = _numbers_list(
    minimum=1, maximum=LONGEST_EXPIRY_WARNING_DAYS, most=MAX_EXPIRY_WARNINGS, example=[7, 3, 1]
)


class NotificationSettingsSerializer(serializers.ModelSerializer):
    thresholds = serializers.ListField(
        child=serializers.IntegerField(),
        read_only=True,
        help_text="Percentages of a limit, ascending: one email at each, per limit and window.",
    )
    expiry_warning_days = serializers.ListField(
        child=serializers.IntegerField(),
        read_only=True,
        help_text="Days before a key expires, descending: one email at each.",
    )
    spike_limit_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        read_only=True,
        help_text="A key that spends more than this in 10 minutes is disabled; 0: off.",
    )

    class Meta:
        model = NotificationSettings
        fields = ["email_recipients", "thresholds", "expiry_warning_days", "spike_limit_usd"]
        read_only_fields = fields


class NotificationSettingsUpdateSerializer(serializers.Serializer):
    """Send only the settings to change."""

    email_recipients = serializers.ChoiceField(
        choices=NotificationSettings.Recipients.choices,
        required=False,
        error_messages={"invalid_choice": RECIPIENTS_MESSAGE},
        help_text="Who gets the emails about a key: its team's leads, its owner, or both.",
    )
    thresholds = ThresholdsField(
        required=False,
        help_text="Whole percentages from 1 to 100, each once, at most 5; [] for none.",
    )
    expiry_warning_days = ExpiryDaysField(
        required=False,
        help_text="Whole days from 1 to 90, each once, at most 5; [] for none.",
    )
    spike_limit_usd = DecimalInputField(
        required=False,
        help_text="USD in plain decimal notation, e.g. 20.00, up to 1000000; 0: no spike guard.",
    )


class EmailPreferenceSerializer(serializers.Serializer):
    own_key_emails = serializers.BooleanField(
        read_only=True, help_text="Whether emails about the caller's own keys reach them."
    )


class EmailPreferenceUpdateSerializer(serializers.Serializer):
    own_key_emails = StrictBooleanField(
        help_text="false: no emails about your own keys (those you get as a lead stay)."
    )


def _team(request: Request, team_slug: str, *, staff_permission: str | None) -> Team:
    team = (
        key_selectors.team_list(actor=request.user, staff_permission=staff_permission)
        .filter(slug=team_slug)
        .first()
    )
    if team is None:
        raise NotFound
    return team


class NotificationSettingsView(APIView):
    serializer_class = NotificationSettingsSerializer

    def team(self, *, change: bool) -> Team:
        user = self.request.user
        team = _team(
            self.request,
            self.kwargs["team_slug"],
            staff_permission=STAFF_CHANGE if change else STAFF_READ,
        )
        if change and not key_selectors.is_team_lead(
            actor=user, team=team, staff_permission=STAFF_CHANGE
        ):
            raise PermissionDenied(settings_refusal(team))
        return team

    @extend_schema(
        summary="A team's notification settings",
        description="Who gets the emails about a key, the spend thresholds, the expiry warnings "
        "and the spend-spike guard. A team that never changed them has the defaults.",
        parameters=[TEAM_SLUG],
        responses={200: NotificationSettingsSerializer},
    )
    def get(self, request: Request, team_slug: str) -> Response:
        team = self.team(change=False)
        return Response(NotificationSettingsSerializer(notification_settings_for(team)).data)

    @extend_schema(
        summary="Change a team's notification settings (leads)",
        parameters=[TEAM_SLUG],
        request=NotificationSettingsUpdateSerializer,
        responses={200: NotificationSettingsSerializer, 400: FIELD_ERRORS},
    )
    def patch(self, request: Request, team_slug: str) -> Response:
        team = self.team(change=True)
        serializer = NotificationSettingsUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        current = services.notification_settings_update(
            actor=request.user, team=team, **serializer.validated_data
        )
        return Response(NotificationSettingsSerializer(current).data)


class EmailPreferenceView(APIView):
    serializer_class = EmailPreferenceSerializer

    def membership(self) -> Membership:
        team = _team(self.request, self.kwargs["team_slug"], staff_permission=None)
        membership = key_selectors.membership_for(actor=self.request.user, team=team)
        if membership is None:
            raise NotFound
        return membership

    @extend_schema(
        summary="Whether you get emails about your own keys in a team",
        parameters=[TEAM_SLUG],
        responses={200: EmailPreferenceSerializer},
    )
    def get(self, request: Request, team_slug: str) -> Response:
        preference = email_preference_for(self.membership())
        return Response(EmailPreferenceSerializer(preference).data)

    @extend_schema(
        summary="Turn emails about your own keys in a team off or on",
        parameters=[TEAM_SLUG],
        request=EmailPreferenceUpdateSerializer,
        responses={200: EmailPreferenceSerializer, 400: FIELD_ERRORS},
    )
    def patch(self, request: Request, team_slug: str) -> Response:
        membership = self.membership()
        serializer = EmailPreferenceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        preference = services.email_preference_update(
            actor=request.user,
            membership=membership,
            own_key_emails=serializer.validated_data["own_key_emails"],
        )
        return Response(EmailPreferenceSerializer(preference).data)
