"""Usage for the API: raw events and daily totals, each within what the caller may see.

Scoping to the caller, filtering and totals come from billing.selectors (usage_event_list_for,
usage_daily_totals_for, refusal_count_list_for).
"""

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_view
from rest_framework.generics import ListAPIView

from billing import selectors
from billing.models import RefusalCount, UsageEvent
from core.api.query import validated_query
from core.api.schema import filtered_list

from .serializers import (
    RefusalCountFilterSerializer,
    RefusalCountSerializer,
    UsageDailyFilterSerializer,
    UsageDaySerializer,
    UsageEventFilterSerializer,
    UsageEventSerializer,
)


@extend_schema_view(
    get=filtered_list(
        summary="Usage events",
        description="One row per relayed request, newest first. Requests the relay refused "
        "itself are counted under /api/v1/usage/refusals/.",
        filters=UsageEventFilterSerializer,
        item=UsageEventSerializer,
    )
)
class UsageEventListView(ListAPIView):
    serializer_class = UsageEventSerializer

    def get_queryset(self) -> QuerySet[UsageEvent]:
        filters = validated_query(UsageEventFilterSerializer, self.request.query_params)
        return selectors.usage_event_list_for(actor=self.request.user, filters=filters)


@extend_schema_view(
    get=filtered_list(
        summary="Daily usage totals",
        description="Totals per day from the daily rollups, newest day first. They cover settled "
        "usage, so today's trails the relay by up to one ingest interval (a few seconds).",
        filters=UsageDailyFilterSerializer,
        item=UsageDaySerializer,
    )
)
class UsageDailyListView(ListAPIView):
    serializer_class = UsageDaySerializer

    def get_queryset(self) -> QuerySet:
        filters = validated_query(UsageDailyFilterSerializer, self.request.query_params)
        return selectors.usage_daily_totals_for(actor=self.request.user, filters=filters)


@extend_schema_view(
    get=filtered_list(
        summary="Refused requests",
        description="Requests the relay refused for a known key (disabled or expired key, IP, "
        "model, quota, rate limit, bad request), counted per key, minute, status, reason and "
        "endpoint, newest minute first. The current minute's counts grow until it ends.",
        filters=RefusalCountFilterSerializer,
        item=RefusalCountSerializer,
    )
)
class RefusalCountListView(ListAPIView):
    serializer_class = RefusalCountSerializer

    def get_queryset(self) -> QuerySet[RefusalCount]:
        filters = validated_query(RefusalCountFilterSerializer, self.request.query_params)
        return selectors.refusal_count_list_for(actor=self.request.user, filters=filters)
