"""Staff admin for webhooks, their deliveries and attempts.

A webhook's signing secret is never shown here (it is shown once, to the lead who adds the
webhook in the portal or the API, which is why webhooks are not added here). Staff change a
webhook's URL, event types and whether it is active, or delete it, through the services (one
audit row each, the same checks and messages). Deliveries and attempts are the log: read-only,
with one action, a new try of the selected deliveries.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from keys.admin.actions import RefuseForbiddenActionsMixin
from keys.admin.forms import _add_service_errors
from keys.admin.transactions import ServiceTransactionsMixin
from notify import services
from notify.forms import EVENT_TYPE_CHOICES
from notify.models import Attempt, Delivery, Webhook


class WebhookAdminForm(forms.ModelForm):
    # Text as typed: the URL's checks and messages are the service's.
    url = forms.CharField(
        required=False, max_length=None, widget=forms.URLInput(attrs={"size": 80})
    )
    event_types = forms.MultipleChoiceField(
        choices=EVENT_TYPE_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="“Every event”, or the events posted to this URL.",
    )

    class Meta:
        model = Webhook
        fields = ("url", "event_types", "is_active")

    def clean(self) -> dict:
        cleaned = super().clean()
        try:
            self.changes = services.webhook_validate(
                team=self.instance.team,
                url=cleaned.get("url", ""),
                event_types=cleaned.get("event_types", []),
                webhook=self.instance,
            )
        except ValidationError as error:
            _add_service_errors(self, error)
        else:
            self.changes["is_active"] = cleaned.get("is_active", False)
        return cleaned


class RunRedeliverMixin:
    """The "redeliver" action, for staff who may change deliveries."""

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notify.change_delivery")


@admin.register(Webhook)
class WebhookAdmin(ServiceTransactionsMixin, admin.ModelAdmin):
    form = WebhookAdminForm
    list_display = ("url", "team", "event_types", "is_active", "created_by", "created_at")
    list_filter = ("is_active", "team")
    list_select_related = ("team", "created_by")
    search_fields = ("url", "team__name", "team__slug")
    readonly_fields = ("team", "created_by", "created_at", "updated_at")
    fields = ("team", "url", "event_types", "is_active", "created_by", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Webhook, form, change: bool) -> None:
        # The form has already copied its values onto `obj`: the service compares them with the
        # stored webhook, so it is given a fresh copy of that.
        stored = Webhook.objects.select_related("team").get(pk=obj.pk)
        try:
            services.webhook_update(actor=request.user, webhook=stored, **form.changes)
        except PermissionDenied as refusal:
            self.message_user(request, str(refusal), messages.ERROR)

    def delete_model(self, request: HttpRequest, obj: Webhook) -> None:
        services.webhook_delete(actor=request.user, webhook=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for webhook in queryset.select_related("team"):
            services.webhook_delete(actor=request.user, webhook=webhook)


class AttemptInline(admin.TabularInline):
    model = Attempt
    fields = ("at", "status_code", "error", "response_excerpt", "duration_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(RunRedeliverMixin, RefuseForbiddenActionsMixin, admin.ModelAdmin):
    list_display = (
        "uuid",
        "event_type",
        "team",
        "channel",
        "webhook",
        "email",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "channel", "event__type", "event__team")
    list_select_related = ("event__team", "webhook")
    search_fields = ("uuid", "email", "webhook__url", "event__dedupe_key")
    date_hierarchy = "created_at"
    fields = (*list_display[:-1], "delivered_at", "created_at")
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["redeliver"]

    @admin.display(description=_("event"), ordering="event__type")
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    @admin.display(description=_("team"), ordering="event__team__name")
    def team(self, delivery: Delivery) -> str:
        return delivery.event.team.name

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    @admin.action(
        description=_("Redeliver selected deliveries (a new try now)"), permissions=["redeliver"]
    )
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        queued = 0
        for delivery in queryset:
            try:
                services.delivery_redeliver(actor=request.user, delivery=delivery)
            except PermissionDenied as refusal:
                self.message_user(request, f"{delivery.uuid}: {refusal}", messages.ERROR)
                continue
            queued += 1
        self.message_user(
            request,
            ngettext(
                "Queued %(count)s delivery for a new try.",
                "Queued %(count)s deliveries for a new try.",
                queued,
            )
            % {"count": queued},
            messages.SUCCESS,
        )


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    """Read-only: each try of a delivery, as it went."""

    list_display = ("at", "delivery", "status_code", "error", "duration_ms")
    list_filter = ("status_code",)
    list_select_related = ("delivery",)
    search_fields = ("delivery__uuid", "error")
    date_hierarchy = "at"
    fields = ("delivery", "at", "status_code", "error", "response_excerpt", "duration_ms")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Attempt | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Attempt | None = None) -> bool:
        return False
