"""Usage as CSV for the API: one row per request, or per key, model and day, streamed
(billing.export). A member's token exports only their own keys' usage (billing.selectors)."""

from datetime import date
from zoneinfo import ZoneInfo

from django.utils import timezone
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from billing import selectors
from billing.export import csv_response, usage_daily_csv, usage_event_csv
from billing.usage_query import QueryReading, read_usage_query
from core.api.query import validated_query
from core.api.schema import FIELD_ERRORS
from keys.models import Team
from keys.selectors import team_list

from .serializers import UsageDailyExportFilterSerializer, UsageExportFilterSerializer

NO_TEAM = gettext_lazy("No team with this slug.")


class JsonErrorsOnly(BaseContentNegotiation):
    """The body is CSV; only an error is rendered, always as JSON, whatever Accept says (a
    client asking for text/csv must still read why its request failed)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class _UsageExportView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonErrorsOnly
    filters: type[serializers.Serializer]

    def reading(self, request: Request) -> tuple[Team, QueryReading]:
        params = validated_query(self.filters, request.query_params)
        team = (
            team_list(actor=request.user, staff_permission="billing.view_usageevent")
            .filter(slug=params["team"])
            .first()
        )
        if team is None:
            raise serializers.ValidationError({"team": [NO_TEAM]})
        today = timezone.localdate(timezone=ZoneInfo(team.time_zone))
        reading = read_usage_query(
            {name: _text(value) for name, value in params.items()},
            actor=request.user,
            team=team,
            today=today,
            default_range=None,
        )
        if reading.errors:
            raise serializers.ValidationError(
                {name: [message] for name, message in reading.errors.items()}
            )
        return team, reading


def _text(value) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _csv_schema(
    *, operation_id: str, summary: str, description: str, filters: type[serializers.Serializer]
):
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        description=description,
        parameters=[filters],
        responses={
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR, description="The CSV, with a header row, streamed."
            ),
            400: FIELD_ERRORS,
        },
    )


class UsageExportView(_UsageExportView):
    filters = UsageExportFilterSerializer

    @_csv_schema(
        operation_id="v1_usage_export_csv",
        summary="Export usage events as CSV",
        description="One row per relayed request of the team in the days given (the team's "
        "time zone), oldest first, with the columns time (UTC, ISO 8601), team, member, "
        "key_name, key_prefix, model, endpoint, status, input_tokens, output_tokens, "
        "cache_creation_tokens (all cache writes), cache_creation_1h_tokens (the part kept for "
        "an hour), cache_read_tokens, cost_usd, charged_usd, session_id, request_id. Streamed "
        "as it is read: any number of rows.",
        filters=UsageExportFilterSerializer,
    )
    def get(self, request: Request):
        team, reading = self.reading(request)
        events = selectors.usage_explorer_events(actor=request.user, team=team, query=reading.query)
        query = reading.query
        filename = f"usage-{team.slug}-{query.since}-{query.until}.csv"
        return csv_response(usage_event_csv(events), filename=filename)


class UsageDailyExportView(_UsageExportView):
    filters = UsageDailyExportFilterSerializer

    @_csv_schema(
        operation_id="v1_usage_daily_export_csv",
        summary="Export daily usage totals as CSV",
        description="One row per key, model and day (days of the server's time zone, as the "
        "rollups keep them), oldest first, with the columns day, team, member, key_name, "
        "key_prefix, model, requests, input_tokens, output_tokens, cache_creation_tokens, "
        "cache_creation_1h_tokens, cache_read_tokens, cost_usd, charged_usd. A deleted key's "
        "rows have empty member and key columns.",
        filters=UsageDailyExportFilterSerializer,
    )
    def get(self, request: Request):
        team, reading = self.reading(request)
        rows = selectors.usage_daily_rows(actor=request.user, team=team, query=reading.query)
        query = reading.query
        filename = f"usage-daily-{team.slug}-{query.since}-{query.until}.csv"
        return csv_response(usage_daily_csv(rows), filename=filename)
