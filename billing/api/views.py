"""Usage for the API: raw events and daily totals, each within what the caller may see.

Scoping to the caller comes from billing.selectors (usage_event_list_for, usage_daily_list_for).
"""

from django.db.models import QuerySet, Sum
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.generics import ListAPIView
from rest_framework.request import Request

from billing import selectors
from billing.models import UsageEvent
from core.api.query import validated_query
from core.api.schema import FIELD_ERRORS

from .serializers import (
    UsageDailyFilterSerializer,
    UsageDaySerializer,
    UsageEventFilterSerializer,
    UsageEventSerializer,
)


def _filtered(rows: QuerySet, request: Request, filter_class) -> tuple[QuerySet, dict]:
    """Narrow rows already scoped to the caller by the query's filters."""
    filters = validated_query(filter_class, request.query_params)
    if "team" in filters:
        rows = rows.filter(team__slug=filters["team"])
    if "key" in filters:
        rows = rows.filter(key_id=filters["key"])
    if "model" in filters:
        rows = rows.filter(model=filters["model"])
    return rows, filters


@extend_schema_view(
    get=extend_schema(
        summary="Usage events",
        description="One row per relayed request, newest first.",
        parameters=[UsageEventFilterSerializer],
        responses={200: UsageEventSerializer(many=True), 400: FIELD_ERRORS},
    )
)
class UsageEventListView(ListAPIView):
    serializer_class = UsageEventSerializer

    def get_queryset(self) -> QuerySet[UsageEvent]:
        events, filters = _filtered(
            selectors.usage_event_list_for(actor=self.request.user),
            self.request,
            UsageEventFilterSerializer,
        )
        if "since" in filters:
            events = events.filter(created_at__gte=filters["since"])
        if "until" in filters:
            events = events.filter(created_at__lt=filters["until"])
        return events.select_related("key", "team", "group").order_by("-created_at", "-id")


@extend_schema_view(
    get=extend_schema(
        summary="Daily usage totals",
        description="Totals per day from the daily rollups, newest day first. They cover settled "
        "usage, so today's trails the relay by up to one ingest interval (a few seconds).",
        parameters=[UsageDailyFilterSerializer],
        responses={200: UsageDaySerializer(many=True), 400: FIELD_ERRORS},
    )
)
class UsageDailyListView(ListAPIView):
    serializer_class = UsageDaySerializer

    def get_queryset(self) -> QuerySet:
        rows, filters = _filtered(
            selectors.usage_daily_list_for(actor=self.request.user),
            self.request,
            UsageDailyFilterSerializer,
        )
        if "since" in filters:
            rows = rows.filter(day__gte=filters["since"])
        if "until" in filters:
            rows = rows.filter(day__lte=filters["until"])
        totals = {f"total_{field}": Sum(field) for field in UsageDaySerializer.TOTALS}
        return rows.values("day").annotate(**totals).order_by("-day")
