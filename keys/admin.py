"""Staff admin for teams, groups, keys and the audit trail. Every write goes through services.

The admin's own save path writes model instances directly, so each admin here overrides the
save, delete and related hooks to call the services instead: that is how an admin change gets
its audit row, its validation messages and its cache invalidation like any other interface.
"""

import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.widgets import AdminTextareaWidget, AdminTextInputWidget
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from . import services
from .models import ApiKey, ApiToken, Group, KeyEvent, Membership, Team
from .services import IssuedApiToken, IssuedKey

ISSUED_KEYS_TEMPLATE = "admin/keys/apikey/issued_keys.html"
ISSUED_TOKEN_TEMPLATE = "admin/keys/apitoken/issued_token.html"  # noqa: S105 (a template path)
ROTATE_CONFIRMATION_TEMPLATE = "admin/keys/apikey/rotate_confirmation.html"


def _add_service_errors(form: forms.BaseForm, error: ValidationError) -> None:
    """Put a service's ValidationError on the form fields it names (the rest on the form)."""
    errors = error.error_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error}
    for field, field_errors in errors.items():
        form.add_error(field if field in form.fields else None, field_errors)


def _keys(count: int) -> str:
    return f"{count} key" if count == 1 else f"{count} keys"


def _issued_secrets_response(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    issued: list[IssuedKey] | list[IssuedApiToken],
    *,
    title: str,
    template: str,
) -> TemplateResponse:
    """The one admin response that carries new plaintexts (keys or a token).

    Rendered straight into this response, never put in the messages framework, whose session
    or cookie storage would keep the plaintext after the page is gone. The admin views already
    send no-store cache headers.
    """
    return TemplateResponse(
        request,
        template,
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "opts": model_admin.opts,
            "issued_secrets": issued,
        },
    )


# --- teams and memberships ------------------------------------------------------------------


class MembershipInlineForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ("user", "role")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # Moving a membership to another user would skip disabling the old user's keys:
            # remove the row and add a new one instead.
            self.fields["user"].disabled = True


class MembershipInlineFormSet(BaseInlineFormSet):
    """Applies the inline's additions, role changes and removals through the member services."""

    def clean(self) -> None:
        super().clean()
        # A team being created has no members yet, so its additions cannot conflict beyond the
        # duplicate rows the formset itself rejects.
        if any(self.errors) or self.non_form_errors() or self.instance.pk is None:
            return
        # The services hold the rules (e.g. a team keeps a lead), so validation runs them and
        # rolls back; the admin's save_formset then runs them for real.
        try:
            with transaction.atomic():
                self.apply(actor=None)
                transaction.set_rollback(True)
        except ValidationError as error:
            raise ValidationError(error.messages) from None

    def apply(self, *, actor: User | None) -> list[str]:
        """Run the changes through the services; returns what to tell the staff user.

        Order matters: additions and promotions come before demotions and removals, so that
        handing the lead role over in one save never leaves the team without a lead.
        """
        team = self.instance
        removed = [form for form in self.initial_forms if form in self.deleted_forms]
        role_changed = [
            form
            for form in self.initial_forms
            if form not in removed and "role" in form.changed_data
        ]
        added = [
            form
            for form in self.extra_forms
            if form.has_changed() and form not in self.deleted_forms
        ]
        role_changed.sort(key=lambda form: form.cleaned_data["role"] != Membership.Role.LEAD)

        self.new_objects, self.changed_objects, self.deleted_objects = [], [], []
        notes: list[str] = []
        for form in added:
            membership = services.membership_add(
                team=team,
                user=form.cleaned_data["user"],
                role=form.cleaned_data["role"],
                actor=actor,
            )
            self.new_objects.append(membership)
        for form in role_changed:
            # The form already copied the new role onto its instance; the service needs the
            # stored row to see what changes.
            membership = services.membership_set_role(
                membership=Membership.objects.get(pk=form.instance.pk),
                role=form.cleaned_data["role"],
                actor=actor,
            )
            self.changed_objects.append((membership, ["role"]))
        for form in removed:
            membership = Membership.objects.select_related("user").get(pk=form.instance.pk)
            disabled = services.membership_remove(membership=membership, actor=actor)
            self.deleted_objects.append(membership)
            notes.append(
                f"Removed {membership.user} from {team.name}; disabled {_keys(disabled)} "
                "they owned in the team."
            )
        return notes


class MembershipInline(admin.TabularInline):
    model = Membership
    form = MembershipInlineForm
    formset = MembershipInlineFormSet
    autocomplete_fields = ("user",)
    extra = 1


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "member_count", "key_count", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("allowed_groups",)
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("memberships", distinct=True),
                key_total=Count("api_keys", distinct=True),
            )
        )

    @admin.display(description="members", ordering="member_total")
    def member_count(self, team: Team) -> int:
        return team.member_total

    @admin.display(description="keys", ordering="key_total")
    def key_count(self, team: Team) -> int:
        return team.key_total

    def has_delete_permission(self, request: HttpRequest, obj: Team | None = None) -> bool:
        # Deleting a team would cascade to its keys without the key service's audit rows and
        # cache invalidation: its keys must be deleted first, one by one, through the service.
        if obj is not None and obj.api_keys.exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict:
        # The bulk delete cannot check each team for keys; teams are deleted one at a time.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        # allowed_groups is the team's only many-to-many field; the service sets it and drops
        # the cached state of the team's keys, so form.save_m2m() is deliberately not called.
        if "allowed_groups" in form.changed_data:
            services.team_set_allowed_groups(
                team=form.instance, groups=list(form.cleaned_data["allowed_groups"])
            )
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if isinstance(formset, MembershipInlineFormSet):
            for note in formset.apply(actor=request.user):
                self.message_user(request, note, messages.SUCCESS)
            return
        super().save_formset(request, form, formset, change)


# --- groups ---------------------------------------------------------------------------------

_PATTERN_SEPARATORS = re.compile(r"[\n,]+")


class ModelPatternsField(forms.CharField):
    """A group's model patterns as text (one per line or comma separated); a list in the model."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        patterns = (part.strip() for part in _PATTERN_SEPARATORS.split(text))
        return list(dict.fromkeys(pattern for pattern in patterns if pattern))


class GroupAdminForm(forms.ModelForm):
    models = ModelPatternsField(
        required=False,
        widget=AdminTextareaWidget(attrs={"rows": 4}),
        help_text=(
            "Model names or patterns this group may use, one per line or comma separated, "
            "e.g. claude-* or gpt-4o."
        ),
    )

    class Meta:
        model = Group
        fields = ("name", "description", "multiplier", "models", "is_active")


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    form = GroupAdminForm
    list_display = ("name", "multiplier", "model_patterns", "is_active", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name", "description")

    @admin.display(description="models")
    def model_patterns(self, group: Group) -> str:
        return ", ".join(group.models)

    def save_model(self, request: HttpRequest, obj: Group, form, change: bool) -> None:
        services.group_save(group=obj)


# --- keys -----------------------------------------------------------------------------------


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

    In place of ModelForm's own model validation, _post_clean runs the service and rolls it
    back, so staff see the service's exact messages on the fields and nothing is written until
    save_model calls the service for real.
    """

    allowed_ips = IpListField(
        label="IP restriction",
        required=False,
        widget=AdminTextareaWidget(attrs={"rows": 3}),
        help_text=(
            "IPv4/IPv6 addresses or CIDR ranges, one per line (commas or spaces also "
            "separate them). Empty: any address."
        ),
    )
    # Text rather than a DecimalField so the service's quota messages are the ones shown.
    quota_limit_usd = forms.CharField(
        label="Quota limit (USD)",
        required=False,
        widget=AdminTextInputWidget,
        help_text="At most 2 decimals. 0 or empty: unlimited.",
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

    def _post_clean(self) -> None:
        if self.errors:
            return
        try:
            with transaction.atomic():
                # Rolled back below, so no audit row is kept and no actor is needed.
                if self.instance.pk is None:
                    self.create_key(actor=None)
                else:
                    # A copy: a successful update mutates the key it is given, and
                    # self.instance must stay as stored for the real call to see the changes.
                    self.update_key(key=ApiKey.objects.get(pk=self.instance.pk), actor=None)
                transaction.set_rollback(True)
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
        # Only what staff changed: the date widget drops microseconds, so resending an untouched
        # expiry would record a change nobody made (or refuse an already-expired key's date).
        changes = {
            field: self.cleaned_data[field]
            for field in services.EDITABLE_FIELDS
            if field in self.changed_data
        }
        return services.api_key_update(key=key, actor=actor, **changes)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyAdminForm
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
        "Limits",
        {"fields": ("allowed_ips", "quota_limit_usd", "rate_limit", "expires_at")},
    )

    def get_fieldsets(self, request: HttpRequest, obj: ApiKey | None = None):
        if obj is None:
            return [
                (None, {"fields": ("team", "owner", "name", "group", "status")}),
                self.limits_fieldset,
            ]
        return [
            (None, {"fields": ("name", "team", "owner", "group", "status", "prefix")}),
            self.limits_fieldset,
            (
                "Usage",
                {
                    "fields": (
                        "spent_usd",
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
            "prefix",
            "spent_usd",
            "last_used_at",
            "created_by",
            "created_at",
            "updated_at",
        )

    @admin.display(description="status", ordering="status")
    def state_display(self, key: ApiKey) -> str:
        return key.state.replace("_", " ")

    @admin.display(description="spent / limit")
    def spent_and_limit(self, key: ApiKey) -> str:
        limit = "unlimited" if key.quota_limit_usd == 0 else f"${key.quota_limit_usd:.2f}"
        return f"${key.spent_usd:.2f} / {limit}"

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            form.update_key(key=obj, actor=request.user)
            return
        issued = form.create_key(actor=request.user)
        # The admin goes on to log and answer with its own instance, so it becomes the key the
        # service created.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.key, field.attname))
        # Lives only as long as this request: response_add shows it and nothing stores it.
        request.issued_key = issued

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue=None):
        issued = request.issued_key
        del request.issued_key
        return _issued_secrets_response(
            self, request, [issued], title="API key created", template=ISSUED_KEYS_TEMPLATE
        )

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        services.api_key_delete(key=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        # Used by the bulk "delete selected" action: one audited service call per key.
        for key in queryset:
            services.api_key_delete(key=key, actor=request.user)

    @admin.action(description="Enable selected API keys", permissions=["change"])
    def enable_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        self._set_status(request, queryset, ApiKey.Status.ENABLED, services.api_key_enable)

    @admin.action(description="Disable selected API keys", permissions=["change"])
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
        verb = "Enabled" if status == ApiKey.Status.ENABLED else "Disabled"
        self.message_user(request, f"{verb} {_keys(changed)}.", messages.SUCCESS)

    @admin.action(
        description="Rotate selected API keys (shows the new keys once)", permissions=["change"]
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
                    "title": "Rotate API keys",
                    "opts": self.opts,
                    "queryset": queryset,
                    "action_checkbox_name": ACTION_CHECKBOX_NAME,
                },
            )
        issued = [services.api_key_rotate(key=key, actor=request.user) for key in queryset]
        return _issued_secrets_response(
            self, request, issued, title="API keys rotated", template=ISSUED_KEYS_TEMPLATE
        )


# --- REST API tokens -----------------------------------------------------------------------


_TOKEN_NAME_MESSAGES = ApiToken._meta.get_field("name").error_messages


class ApiTokenAdminForm(forms.ModelForm):
    """A new token for a user. As with keys, _post_clean runs the create service and rolls it
    back, so staff see its exact messages and nothing is written until save_model."""

    class Meta:
        model = ApiToken
        fields = ("user", "name")
        error_messages = {
            "name": {
                "required": _TOKEN_NAME_MESSAGES["blank"],
                "max_length": _TOKEN_NAME_MESSAGES["max_length"],
            }
        }

    def _post_clean(self) -> None:
        if self.errors:
            return
        try:
            with transaction.atomic():
                self.create_token()
                transaction.set_rollback(True)
        except ValidationError as error:
            _add_service_errors(self, error)

    def create_token(self) -> IssuedApiToken:
        return services.api_token_create(
            user=self.cleaned_data["user"], name=self.cleaned_data["name"]
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff may create a token for a user and revoke tokens; nothing else changes a token.

    A token staff create is shown to them once, like a key they create, for handing over to
    the user or an integration. A revoked token keeps its row for the record.
    """

    form = ApiTokenAdminForm
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username", "user__email")
    fields = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    autocomplete_fields = ("user",)
    actions = ["revoke_tokens"]

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None):
        if obj is None:
            return ("user", "name")
        return self.fields

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        # Whichever button is pressed, the answer is the page with the plaintext.
        extra_context = {
            **(extra_context or {}),
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
        }
        return super().add_view(request, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: ApiToken, form, change: bool) -> None:
        issued = form.create_token()
        # The admin goes on to log and answer with its own instance, so it becomes the token
        # the service created.
        for field in ApiToken._meta.concrete_fields:
            setattr(obj, field.attname, getattr(issued.token, field.attname))
        # Lives only as long as this request: response_add shows it and nothing stores it.
        request.issued_token = issued

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue=None):
        issued = request.issued_token
        del request.issued_token
        return _issued_secrets_response(
            self, request, [issued], title="API token created", template=ISSUED_TOKEN_TEMPLATE
        )

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking is the one change allowed, to whoever may change tokens.
        return super().has_change_permission(request)

    @admin.action(description="Revoke selected API tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.api_token_revoke(token=token)
            revoked += 1
        self.message_user(
            request, f"Revoked {revoked} token{'' if revoked == 1 else 's'}.", messages.SUCCESS
        )


# --- the audit trail ------------------------------------------------------------------------


@admin.register(KeyEvent)
class KeyEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is written by the services and never edited."""

    list_display = ("created_at", "key_name", "key_prefix", "team", "action", "actor")
    list_filter = ("action", "team")
    list_select_related = ("team", "actor")
    search_fields = ("key_name", "key_prefix", "actor__username")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: KeyEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: KeyEvent | None = None) -> bool:
        return False
