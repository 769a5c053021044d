"""Staff admin for channels, and the routes inline on the group admin.

The routes inline is added here, by re-registering keys' GroupAdmin with it, so that keys
never imports proxy: dependencies point one way, proxy -> keys.
"""

import threading
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from keys.admin import GroupAdmin
from keys.admin.transactions import ServiceTransactionsMixin
from keys.models import Group

from .models import CREDENTIAL_MAX_LENGTH, Channel, Route
from .selectors import channel_health_list
from .services import channel_delete, channel_save, group_routes_set
from .store.channel_health import ERROR_RATE_MINUTES, HEALTHY, ChannelHealth


class ChannelAdminForm(forms.ModelForm):
    """The model and the other fields come from ChannelAdmin (its fieldsets), so that the
    admin's formfield_overrides apply to them."""

    # Deliberately not the model field's name: the stored credential never enters this form,
    # not even as initial data, and an empty input can never overwrite it.
    new_credential = forms.CharField(
        label="New credential",
        required=False,
        max_length=CREDENTIAL_MAX_LENGTH,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: never shown again once saved. Leave empty to keep the stored one.",
    )
    clear_credential = forms.BooleanField(required=False, label="Remove the stored credential")

    def clean(self) -> dict[str, Any]:
        cleaned_data = super().clean()
        if cleaned_data.get("new_credential") and cleaned_data.get("clear_credential"):
            raise ValidationError("Enter a new credential or remove the stored one, not both.")
        return cleaned_data

    def credential_to_store(self) -> str | None:
        """What channel_save should store; None keeps the stored credential."""
        if self.cleaned_data["clear_credential"]:
            return ""
        return self.cleaned_data["new_credential"] or None


@admin.register(Channel)
class ChannelAdmin(ServiceTransactionsMixin, admin.ModelAdmin):
    form = ChannelAdminForm
    list_display = (
        "name",
        "provider",
        "base_url",
        "is_active",
        "timeout_seconds",
        "health_state",
        "health_failures",
        "health_error_rate",
        "health_last_error",
        "credential_set",
        "updated_at",
    )
    list_filter = ("provider", "is_active")
    search_fields = ("name", "base_url")
    readonly_fields = (
        "credential_set",
        "health_state",
        "health_failures",
        "health_opened_at",
        "health_last_error",
        "health_error_rate",
    )
    # The page being rendered's channel health, read once per page (see _health); per thread,
    # as the admin serves requests from several.
    _page = threading.local()
    # Django 6 makes https the scheme assumed for a URL typed without one; opt in now.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (None, {"fields": ("name", "provider", "base_url", "is_active", "timeout_seconds")}),
        ("Credential", {"fields": ("credential_set", "new_credential", "clear_credential")}),
        (
            "Health",
            {
                "fields": (
                    "health_state",
                    "health_failures",
                    "health_opened_at",
                    "health_last_error",
                    "health_error_rate",
                ),
                "description": "The relay's circuit breaker for this channel, shared by every "
                "relay worker: a channel that fails (no connection, a timeout, a 5xx) several "
                "times in a row is skipped for a cool-down, then tried by one request.",
            },
        ),
    ]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Django allows any lookup on a local field from the URL: ?encrypted_credential__
        # startswith=… would tell staff, one answer at a time, what the column holds. Refused,
        # the changelist answers 400 like for any disallowed lookup.
        if "encrypted_credential" in lookup.split(LOOKUP_SEP):
            return False
        return super().lookup_allowed(lookup, value, request)

    @admin.display(description="credential set", boolean=True)
    def credential_set(self, channel: Channel) -> bool:
        return channel.has_credential

    def get_fieldsets(self, request: HttpRequest, obj: Channel | None = None):
        # A channel being added has no health yet.
        fieldsets = super().get_fieldsets(request, obj)
        return fieldsets if obj is not None else [f for f in fieldsets if f[0] != "Health"]

    def get_readonly_fields(self, request: HttpRequest, obj: Channel | None = None):
        return self.readonly_fields if obj is not None else ("credential_set",)

    def _health(self, channel: Channel) -> ChannelHealth | None:
        """The channel's health, read for every channel at once on the first call of a page
        (one Redis pipeline), None when it cannot be read."""
        if not hasattr(self._page, "health"):
            ids = list(Channel.objects.values_list("pk", flat=True))
            self._page.health = channel_health_list(channel_ids=ids)
        if self._page.health is None:
            return None
        return self._page.health.get(channel.pk, HEALTHY)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        self._page.__dict__.clear()
        return super().changelist_view(request, extra_context)

    # Error reports (DEBUG pages, mails to ADMINS) print the POST data; hide the new credential.
    @method_decorator(sensitive_post_parameters("new_credential"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any):
        self._page.__dict__.clear()
        return super().changeform_view(request, *args, **kwargs)

    @admin.display(description="health")
    def health_state(self, channel: Channel) -> str:
        health = self._health(channel)
        if health is None:
            return "unknown (Redis unavailable)"
        if health.state == "half-open" and health.trial_running:
            return "half-open (trial running)"
        return health.state

    @admin.display(description="failures in a row")
    def health_failures(self, channel: Channel) -> int | str:
        health = self._health(channel)
        return "-" if health is None else health.failures

    @admin.display(description="opened at")
    def health_opened_at(self, channel: Channel) -> str:
        health = self._health(channel)
        if health is None or health.opened_at is None:
            return "-"
        return timezone.localtime(health.opened_at).strftime("%Y-%m-%d %H:%M:%S %Z")

    @admin.display(description="last error")
    def health_last_error(self, channel: Channel) -> str:
        # The failure's reason as the relay words it ("status 503", "timeout", an exception's
        # type): never a URL or a credential (proxy.upstream.UpstreamFailure).
        health = self._health(channel)
        if health is None or not health.last_error:
            return "-"
        at = timezone.localtime(health.last_error_at).strftime("%Y-%m-%d %H:%M:%S")
        return f"{health.last_error} ({at})"

    @admin.display(description=f"errors ({ERROR_RATE_MINUTES} min)")
    def health_error_rate(self, channel: Channel) -> str:
        health = self._health(channel)
        if health is None or health.error_rate is None:
            return "-"
        return f"{health.error_rate:.0%} of {health.sent}"

    def save_model(self, request: HttpRequest, obj: Channel, form, change: bool) -> None:
        channel_save(channel=obj, credential=form.credential_to_store(), actor=request.user)

    def delete_model(self, request: HttpRequest, obj: Channel) -> None:
        channel_delete(channel=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        # Used by the bulk "delete selected" action: one audited service call per channel.
        for channel in queryset:
            channel_delete(channel=channel, actor=request.user)


class RouteInline(admin.TabularInline):
    model = Route
    fields = ("channel", "priority")
    ordering = ("priority", "id")
    extra = 0


admin.site.unregister(Group)


@admin.register(Group)
class GroupWithRoutesAdmin(GroupAdmin):
    inlines = [*GroupAdmin.inlines, RouteInline]

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not Route:
            super().save_formset(request, form, formset, change)
            return
        # The group's routes as the inline leaves them, set by the service (one audit row);
        # the formset's own save would write each route without one.
        kept = [
            route
            for route in formset.forms
            if route not in formset.deleted_forms
            and (route.instance.pk is not None or route.has_changed())
        ]
        group_routes_set(
            group=form.instance,
            routes=[
                (route.cleaned_data["channel"], route.cleaned_data["priority"]) for route in kept
            ],
            actor=request.user,
        )
        # What the admin's change message lists.
        formset.new_objects = [route.instance for route in kept if route.instance.pk is None]
        formset.changed_objects = [
            (route.instance, route.changed_data)
            for route in kept
            if route.instance.pk is not None and route.has_changed()
        ]
        formset.deleted_objects = [
            route.instance for route in formset.deleted_forms if route.instance.pk is not None
        ]
