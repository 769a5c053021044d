"""Staff admin for channels, and the routes inline on the group admin.

The routes inline is added here, by re-registering keys' GroupAdmin with it, so that keys
never imports proxy: dependencies point one way, proxy -> keys.
"""

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from keys.admin import GroupAdmin
from keys.admin.transactions import ServiceTransactionsMixin
from keys.models import Group

from .models import CREDENTIAL_MAX_LENGTH, Channel, Route
from .services import channel_delete, channel_save, group_routes_set


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
        "credential_set",
        "updated_at",
    )
    list_filter = ("provider", "is_active")
    search_fields = ("name", "base_url")
    readonly_fields = ("credential_set",)
    # Django 6 makes https the scheme assumed for a URL typed without one; opt in now.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (None, {"fields": ("name", "provider", "base_url", "is_active", "timeout_seconds")}),
        ("Credential", {"fields": ("credential_set", "new_credential", "clear_credential")}),
    ]

    # Error reports (DEBUG pages, mails to ADMINS) print the POST data; hide the new credential.
    @method_decorator(sensitive_post_parameters("new_credential"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any):
        return super().changeform_view(request, *args, **kwargs)

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
