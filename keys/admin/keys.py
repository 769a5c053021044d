"""Staff admin for API keys."""

import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.widgets import AdminTextareaWidget, AdminTextInputWidget
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from core.money import usd
from keys import services
from keys.models import ApiKey
from keys.services import IssuedKey
from keys.validators import MAX_ALLOWED_IPS, MAX_CONCURRENCY
from keys.views.show_once import Pending

from .actions import RefuseForbiddenActionsMixin
from .forms import _add_service_errors
from .issued import ISSUED_KEYS_TEMPLATE, ShowIssuedSecretOnceMixin
from .transactions import ServiceTransactionsMixin

ROTATE_CONFIRMATION_TEMPLATE = "admin/keys/apikey/rotate_confirmation.html"


def _keys(count: int) -> str:
    return f"{count} key" if count == 1 else f"{count} keys"


_NAME_MESSAGES = ApiKey._meta.get_field("name").error_messages
_IP_SEPARATORS = re.compile(r"[\s,]+")


class IpListField(forms.CharField):
    """IPs and CIDRs as text; the service parses them. A change is a different list of entries,
    not different separators (browsers send a textarea's line breaks back as CRLF)."""

    def has_changed(self, initial: Any, data: Any) -> bool:
        def entries(text: Any) -> list[str]:
            return [entry for entry in _IP_SEPARATORS.split(text or "") if entry]

        return entries(initial) != entries(data)


class ApiKeyAdminForm(forms.ModelForm):
    """Shows the key settings; validation and saving belong to the key services.

    In place of ModelForm's own model validation, _post_clean runs the services' validation,
    which writes nothing, so staff see the service's exact messages on the fields; save_model
    then calls the service.
    """

    allowed_ips = IpListField(
        label="IP restriction",
        required=False,
        widget=AdminTextareaWidget(attrs={"rows": 3}),
        help_text=(
            "IPv4/IPv6 addresses or CIDR ranges, one per line (commas or spaces also "
            f"separate them), at most {MAX_ALLOWED_IPS:,}. Empty: any address."
        ),
    )
    # Text rather than a DecimalField so the service's quota messages are the ones shown.
    quota_limit_usd = forms.CharField(
        label="Quota limit (USD)",
        required=False,
        widget=AdminTextInputWidget,
        help_text="At least 0.01, at most 2 decimals, e.g. 25.00. 0 or empty: unlimited.",
    )

    # Budgets: text too, so the service's messages name the limit.
    daily_limit_usd = forms.CharField(
        label="Daily limit (USD)",
        required=False,
        widget=AdminTextInputWidget,
        help_text="Spend allowed per calendar day in the team's time zone; resets at midnight. "
        "0 or empty: no daily limit.",
    )
    weekly_limit_usd = forms.CharField(
        label="Weekly limit (USD)",
        required=False,
        widget=AdminTextInputWidget,
        help_text="Spend allowed per calendar week in the team's time zone; resets at midnight "
        "on Monday. 0 or empty: no weekly limit.",
    )
    monthly_limit_usd = forms.CharField(
        label="Monthly limit (USD)",
        required=False,
        widget=AdminTextInputWidget,
        help_text="Spend allowed per calendar month in the team's time zone; resets at midnight "
        "on the 1st. 0 or empty: no monthly limit.",
    )
    max_concurrency = forms.CharField(
        label=_("Max concurrent requests"),
        required=False,
        widget=AdminTextInputWidget,
        help_text=f"Requests of this key in flight at once, at most {MAX_CONCURRENCY:,}. "
        "0 or empty: unlimited.",
    )

    class Meta:
        model = ApiKey
        fields = ("team", "owner", *services.EDITABLE_FIELDS)
        # The model's own wording, so a blank or long name reads the same as in the portal.
        error_messages = {
            "name": {
                "required": _NAME_MESSAGES["blank"],
                "max_length": _NAME_MESSAGES["max_length"],
            }
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["allowed_ips"] = "\n".join(self.instance.allowed_ips)
        # As the text the field shows, so that an untouched quota does not count as changed.
        self.initial["quota_limit_usd"] = str(self.instance.quota_limit_usd)
        for field in (*services.WINDOW_LIMITS, "max_concurrency"):
            self.initial[field] = str(getattr(self.instance, field))

    def _post_clean(self) -> None:
        if self.errors:
            return
        try:
            if self.instance.pk is None:
                services.api_key_validate(
                    team=self.cleaned_data["team"],
                    owner=self.cleaned_data["owner"],
                    **{field: self.cleaned_data[field] for field in services.EDITABLE_FIELDS},
                )
            else:
                services.api_key_validate(key=self.instance, **self._changes())
        except ValidationError as error:
            _add_service_errors(self, error)

    def create_key(self, *, actor: User | None) -> IssuedKey:
        return services.api_key_create(
            team=self.cleaned_data["team"],
            owner=self.cleaned_data["owner"],
            actor=actor,
            **{field: self.cleaned_data[field] for field in services.EDITABLE_FIELDS},
        )

    def update_key(self, *, key: ApiKey, actor: User | None) -> ApiKey:
        return services.api_key_update(key=key, actor=actor, **self._changes())

    def _changes(self) -> dict[str, Any]:
        # Only what staff changed: the date widget drops microseconds, so resending an untouched
        # expiry would record a change nobody made (or refuse an already-expired key's date).
        return {
            field: self.cleaned_data[field]
            for field in services.EDITABLE_FIELDS
            if field in self.changed_data
        }


@admin.register(ApiKey)
class ApiKeyAdmin(
    ServiceTransactionsMixin,
    ShowIssuedSecretOnceMixin,
    RefuseForbiddenActionsMixin,
    admin.ModelAdmin,
):
    form = ApiKeyAdminForm
    issued_kind = "key"
    issued_title = _("API key created")
    rotated_title = _("API keys rotated")
    issued_template = ISSUED_KEYS_TEMPLATE
    issued_gone_advice = _("If you did not copy it, rotate the key to get a new one.")
    list_display = (
        "name",
        "team",
        "owner",
        "group",
        "state_display",
        "prefix",
        "spent_and_limit",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("team", "group", "status")
    list_select_related = ("team", "owner", "group")
    search_fields = ("name", "prefix", "owner__username", "owner__email")
    autocomplete_fields = ("team", "owner")
    actions = ["enable_keys", "disable_keys", "rotate_keys"]
    limits_fieldset = (
        _("Limits"),
        {"fields": ("allowed_ips", "quota_limit_usd", "rate_limit", "expires_at")},
    )
    budgets_fieldset = (
        _("Budgets"),
        {
            "fields": (
                "daily_limit_usd",
                "weekly_limit_usd",
                "monthly_limit_usd",
                "max_concurrency",
            )
        },
    )

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None):
        if obj is None:
            return [
                (None, {"fields": ("team", "owner", "name", "group", "status")}),
                self.limits_fieldset,
                self.budgets_fieldset,
            ]
        return [
            (
                None,
                {"fields": ("name", "team", "owner", "group", "status", "disabled_by", "prefix")},
            ),
            self.limits_fieldset,
            self.budgets_fieldset,
            (
                _("Usage"),
                {
                    "fields": (
                        "spent",
                        "last_used_at",
                        "created_by",
                        "created_at",
                        "updated_at",
                    )
                },
            ),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        if obj is None:
            return ()
        # Team and owner are fixed for a key's life: the services cannot move a key.
        return (
            "team",
            "owner",
            "disabled_by",
            "prefix",
            "spent",
            "last_used_at",
            "created_by",
            "created_at",
            "updated_at",
        )

    @admin.display(description=_("status"), ordering="status")
    def state_display(self, key: ApiKey) -> str:
        return key.state.replace("_", " ")

    @admin.display(description=_("spent / limit"))
    def spent_and_limit(self, key: ApiKey) -> str:
        limit = "unlimited" if key.quota_limit_usd == 0 else usd(key.quota_limit_usd)
        return f"{usd(key.spent_usd)} / {limit}"

    @admin.display(description=_("spent"))
    def spent(self, key: ApiKey) -> str:
        # Kept to 8 decimal places for the books; read as money here.
        return usd(key.spent_usd)

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            form.update_key(key=obj, actor=request.user)
            return
        issued = form.create_key(actor=request.user)
        self.keep_issued(request, obj, issued, issued.key)

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        services.api_key_delete(key=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        # Used by the bulk "delete selected" action: one audited service call per key.
        for key in queryset:
            services.api_key_delete(key=key, actor=request.user)

    @admin.action(description=_("Enable selected API keys"), permissions=["change"])
    def enable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._set_status(request, queryset, ApiKey.Status.ENABLED, services.api_key_enable)

    @admin.action(description=_("Disable selected API keys"), permissions=["change"])
    def disable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._set_status(request, queryset, ApiKey.Status.DISABLED, services.api_key_disable)

    def _set_status(
        self,
        request: HttpRequest,
        queryset: QuerySet[ApiKey],
        status: str,
        service: Callable[..., ApiKey],
    ) -> None:
        changed = 0
        for key in queryset:
            if key.status == status:
                continue
            try:
                service(key=key, actor=request.user)
            except ValidationError as error:
                self.message_user(request, f"{key}: {' '.join(error.messages)}", messages.ERROR)
                continue
            changed += 1
        if status == ApiKey.Status.ENABLED:
            note = ngettext("Enabled %(count)s key.", "Enabled %(count)s keys.", changed)
        else:
            note = ngettext("Disabled %(count)s key.", "Disabled %(count)s keys.", changed)
        self.message_user(request, note % {"count": changed}, messages.SUCCESS)

    @admin.action(
        description=_("Rotate selected API keys (shows the new keys once)"), permissions=["change"]
    )
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse:
        queryset = queryset.select_related("team", "owner")
        if request.POST.get("post") != "yes":
            # Rotation breaks every client still using the old key, so it is confirmed first.
            return TemplateResponse(
                request,
                ROTATE_CONFIRMATION_TEMPLATE,
                {
                    **self.admin_site.each_context(request),
                    "title": gettext("Rotate API keys"),
                    "opts": self.opts,
                    "queryset": queryset,
                    "action_checkbox_name": ACTION_CHECKBOX_NAME,
                },
            )
        rotated = [services.api_key_rotate(key=key, actor=request.user) for key in queryset]
        return self.redirect_to_issued(
            request,
            [
                Pending(
                    kind=self.issued_kind,
                    object_id=issued.key.pk,
                    plaintext=issued.plaintext,
                    rotated=True,
                )
                for issued in rotated
            ],
        )
