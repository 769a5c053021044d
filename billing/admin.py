"""Staff admin for prices (edited freely) and usage and refusal counts (read-only: the relay
writes them)."""

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from core.money import usd

from .export import csv_response, usage_daily_csv, usage_event_csv
from .models import ModelPrice, RefusalCount, UsageDaily, UsageEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the relay and by settlement: staff look, nobody edits. Amounts are kept
    to 8 decimal places for the books and shown as money ("$0.0042", "$12.50")."""

    readonly_fields = ("cost", "charged")

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, row: UsageEvent | UsageDaily) -> str:
        return usd(row.cost_usd)

    @admin.display(description="charged", ordering="charged_usd")
    def charged(self, row: UsageEvent | UsageDaily) -> str:
        return usd(row.charged_usd)

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        # The detail page: every column, with the two amounts as money in their place.
        money = {"cost_usd": "cost", "charged_usd": "charged"}
        return [
            money.get(field.name, field.name)
            for field in self.model._meta.fields
            if not field.primary_key
        ]

    # These tables grow by a row per request (or per key, model and day): skip the unfiltered
    # COUNT(*) on every page.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = (
        "model",
        "input_per_mtok",
        "output_per_mtok",
        "cache_write_per_mtok",
        "cache_read_per_mtok",
        "max_output_tokens",
        "updated_at",
    )
    search_fields = ("model",)


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    """One row per proxied request: the books that spend and bills come from."""

    list_display = (
        "created_at",
        "team",
        "key",
        "group",
        "model",
        "input_tokens",
        "output_tokens",
        "charged",
        "status_code",
        "latency_ms",
        "settled_at",
    )
    list_filter = ("team", "group", "status_code")
    list_select_related = ("team", "key", "group")
    search_fields = ("model", "key__name", "key__prefix", "request_id", "session_id")
    actions = ["export_csv"]

    @admin.action(description="Export selected usage events as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageEvent]) -> HttpResponse:
        """Across teams, as the changelist filters them ("Select all" for every row that
        matches): the API's export (billing.export), streamed however many rows."""
        return csv_response(
            usage_event_csv(queryset), filename=f"usage-{timezone.now():%Y%m%d-%H%M%S}.csv"
        )


@admin.register(UsageDaily)
class UsageDailyAdmin(ReadOnlyAdmin):
    list_display = (
        "day",
        "team",
        "key",
        "model",
        "requests",
        "input_tokens",
        "output_tokens",
        "charged",
    )
    list_filter = ("team", "model")
    list_select_related = ("team", "key")
    search_fields = ("model", "key__name", "key__prefix")
    date_hierarchy = "day"
    actions = ["export_csv"]

    @admin.action(description="Export selected daily usage as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[UsageDaily]) -> HttpResponse:
        return csv_response(
            usage_daily_csv(queryset), filename=f"usage-daily-{timezone.now():%Y%m%d-%H%M%S}.csv"
        )


@admin.register(RefusalCount)
class RefusalCountAdmin(ReadOnlyAdmin):
    """Requests the relay refused for a known key, counted per minute (billing.refusals)."""

    list_display = ("minute", "team", "key", "status_code", "code", "endpoint", "count")
    list_filter = ("team", "status_code", "code", "endpoint")
    list_select_related = ("team", "key")
    search_fields = ("code", "key__name", "key__prefix")
    date_hierarchy = "minute"
