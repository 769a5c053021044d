"""Staff admin for notifications: a team's notification settings (saved through the service, so
a change is validated by its rules and audited) and the members' email preferences, read-only
(only each member changes their own)."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext

from keys.admin.forms import _add_service_errors
from keys.admin.transactions import ServiceTransactionsMixin

from .. import services
from ..models import EmailPreference, NotificationSettings
from ..selectors import notification_settings_for
from ..services.settings import SETTINGS_FIELDS


class NotificationSettingsAdminForm(forms.ModelForm):
    # Text, as on the portal's page: the service's parse functions read it, with their messages.
    thresholds = forms.CharField(
        label="Spend thresholds (%)",
        required=False,
        help_text="Whole percentages from 1 to 100, comma separated, at most 5, e.g. 50, 80, 100. "
        "Empty: no threshold emails.",
    )
    expiry_warning_days = forms.CharField(
        label="Expiry warnings (days before)",
        required=False,
        help_text="Whole days from 1 to 90, comma separated, at most 5, e.g. 7, 3, 1. Empty: no "
        "warnings.",
    )
    spike_limit_usd = forms.CharField(
        label="Spend-spike limit (USD in 10 minutes)",
        required=False,
        help_text="A key that spends more than this in 10 minutes is disabled. 0 or empty: off.",
    )

    class Meta:
        model = NotificationSettings
        fields = ("team", *SETTINGS_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = (
            self.instance
            if self.instance.pk
            else NotificationSettings(
                thresholds=list(NotificationSettings.DEFAULT_THRESHOLDS),
                expiry_warning_days=list(NotificationSettings.DEFAULT_EXPIRY_WARNING_DAYS),
            )
        )
        self.initial["thresholds"] = ", ".join(map(str, current.thresholds))
        self.initial["expiry_warning_days"] = ", ".join(map(str, current.expiry_warning_days))
        spike = current.spike_limit_usd
        self.initial["spike_limit_usd"] = format(spike, "f") if spike else ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        given = {field: cleaned[field] for field in SETTINGS_FIELDS if field in cleaned}
        try:
            cleaned.update(services.notification_settings_validate(**given))
        except ValidationError as error:
            for field in error.error_dict:
                cleaned.pop(field, None)
            _add_service_errors(self, error)
        return cleaned

    def service_arguments(self) -> dict[str, Any]:
        return {field: self.cleaned_data[field] for field in SETTINGS_FIELDS}


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(ServiceTransactionsMixin, admin.ModelAdmin):
    form = NotificationSettingsAdminForm
    list_display = (
        "team",
        "email_recipients",
        "thresholds",
        "expiry_warning_days",
        "spike_limit_usd",
    )
    list_select_related = ("team",)
    search_fields = ("team__name", "team__slug")
    readonly_fields = ("updated_at",)

    def get_readonly_fields(self, request: HttpRequest, obj: NotificationSettings | None = None):
        # A row belongs to its team for good.
        return ("team", "updated_at") if obj is not None else ("updated_at",)

    def has_delete_permission(
        self, request: HttpRequest, obj: NotificationSettings | None = None
    ) -> bool:
        # Deleting would silently bring back the defaults, without an audit row.
        return False

    def save_model(
        self, request: HttpRequest, obj: NotificationSettings, form, change: bool
    ) -> None:
        team = obj.team
        saved = services.notification_settings_update(
            actor=request.user, team=team, **form.service_arguments()
        )
        obj.pk = notification_settings_for(team).pk
        if saved.pk is not None:
            obj.updated_at = saved.updated_at

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        # No related objects; the service saved everything.
        return

    def response_add(
        self, request: HttpRequest, obj: NotificationSettings, post_url_continue=None
    ) -> HttpResponse:
        if obj.pk is None:
            self.message_user(
                request,
                gettext("These are the defaults of every team: nothing was saved for %(team)s.")
                % {"team": obj.team},
                messages.INFO,
            )
            return HttpResponseRedirect(reverse("admin:notify_notificationsettings_changelist"))
        return super().response_add(request, obj, post_url_continue)

    def log_addition(self, request: HttpRequest, obj, message):
        # The audit trail records the change; no admin log entry for a row that may not exist.
        if obj.pk is not None:
            return super().log_addition(request, obj, message)
        return None


@admin.register(EmailPreference)
class EmailPreferenceAdmin(admin.ModelAdmin):
    """Read-only: each member chooses for themselves, in the portal or the API."""

    list_display = ("membership", "own_key_emails")
    list_filter = ("own_key_emails",)
    list_select_related = ("membership__team", "membership__user")
    search_fields = ("membership__user__username", "membership__team__name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: EmailPreference | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: EmailPreference | None = None
    ) -> bool:
        return False
