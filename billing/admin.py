"""Staff admin for prices (edited through billing.services, each change audited) and usage and
refusal counts (read-only: the relay writes them)."""

from datetime import datetime

from django.contrib import admin
from django.db.models import Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _

from core.money import usd
from keys.admin.transactions import ServiceTransactionsMixin
from keys.models import AuditEvent

from .export import csv_response, usage_daily_csv, usage_event_csv
from .models import ModelPrice, RefusalCount, UsageDaily, UsageEvent
from .services import model_price_delete, model_price_save


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the relay and by settlement: staff look, nobody edits. Amounts are kept
    to 8 decimal places for the books and shown as money ("$0.0042", "$12.50")."""

    readonly_fields = ("cost", "charged")

    @admin.display(description=_("cost"), ordering="cost_usd")
    def cost(self, row: UsageEvent | UsageDaily) -> str:
        return usd(row.cost_usd)

    @admin.display(description=_("charged"), ordering="charged_usd")
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
class ModelPriceAdmin(ServiceTransactionsMixin, admin.ModelAdmin):
    """Prices, written by billing.services (one audit row each); "last changed" is read from
    that audit trail: when, and by whom."""

    list_display = (
        "model",
        "input_per_mtok",
        "output_per_mtok",
        "cache_write_per_mtok",
        "cache_write_1h_per_mtok",
        "cache_read_per_mtok",
        "max_output_tokens",
        "last_changed",
    )
    search_fields = ("model",)
    readonly_fields = ("last_changed",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelPrice]:
        latest = AuditEvent.objects.filter(
            subject_type="price", subject_id=OuterRef("pk")
        ).order_by("-created_at", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_changed_at=Subquery(latest.values("created_at")[:1]),
                last_changed_by=Subquery(latest.values("actor__username")[:1]),
                last_changed_actor_id=Subquery(latest.values("actor_id")[:1]),
            )
        )

    def get_fields(self, request: HttpRequest, obj: ModelPrice | None = None) -> list[str]:
        fields = [field for field in super().get_fields(request, obj) if field != "last_changed"]
        return fields if obj is None else [*fields, "last_changed"]

    @admin.display(description=_("last changed"), ordering="last_changed_at")
    def last_changed(self, price: ModelPrice) -> str:
        changed_at = getattr(price, "last_changed_at", None)
        if changed_at is None:
            # Set before prices were audited (or by hand in the database).
            return f"{_when(price.updated_at)} (not in the audit trail)"
        if price.last_changed_actor_id is None:
            return f"{_when(changed_at)} by the system"
        return f"{_when(changed_at)} by {price.last_changed_by}"

    def save_model(self, request: HttpRequest, obj: ModelPrice, form, change: bool) -> None:
        model_price_save(price=obj, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: ModelPrice) -> None:
        model_price_delete(price=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelPrice]) -> None:
        # Used by the bulk "delete selected" action: one audited service call per price.
        for price in queryset:
            model_price_delete(price=price, actor=request.user)


def _when(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "DATETIME_FORMAT")


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

    @admin.action(description=_("Export selected usage events as CSV"), permissions=["view"])
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

    @admin.action(description=_("Export selected daily usage as CSV"), permissions=["view"])
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
