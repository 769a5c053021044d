"""Staff admin for teams, with their memberships inline."""

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminTextInputWidget
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from keys import services
from keys.models import Membership, Team
from keys.validators import available_time_zones, parse_quota

from .forms import _add_service_errors
from .keys import _keys
from .transactions import ServiceTransactionsMixin


class MembershipInlineForm(forms.ModelForm):
    # Text, as a key's quota: the service's messages are shown, and empty means no cap.
    monthly_limit_usd = forms.CharField(
        label="Monthly cap (USD)",
        required=False,
        widget=AdminTextInputWidget(attrs={"size": 10}),
        help_text="Across the member's keys in the team, per calendar month; 0 or empty: none.",
    )

    class Meta:
        model = Membership
        fields = ("user", "role", "monthly_limit_usd")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cap = self.instance.monthly_limit_usd
        self.initial["monthly_limit_usd"] = format(cap, "f") if cap else ""
        if self.instance.pk:
            # Moving a membership to another user would skip disabling the old user's keys:
            # remove the row and add a new one instead.
            self.fields["user"].disabled = True

    def clean_monthly_limit_usd(self) -> Decimal:
        # The amount alone (the system may set any); the formset asks again for the staff user.
        try:
            return services.membership_limit_validate(
                actor=None,
                membership=self.instance,
                monthly_limit_usd=self.cleaned_data["monthly_limit_usd"],
            )
        except ValidationError as error:
            raise ValidationError(error.messages) from None


class MembershipInlineFormSet(BaseInlineFormSet):
    """Applies the inline's additions, role changes, caps and removals through the member
    services."""

    # The staff user saving the page (MembershipInline.get_formset): whose right to set caps
    # membership_limit_validate checks.
    actor: User | None = None

    def clean(self) -> None:
        super().clean()
        if any(self.errors) or self.non_form_errors():
            return
        for form in self._capped():
            try:
                cap = services.membership_limit_validate(
                    actor=self.actor,
                    membership=form.instance,
                    monthly_limit_usd=form.cleaned_data["monthly_limit_usd"],
                )
            except ValidationError as error:
                _add_service_errors(form, error)
            else:
                form.cleaned_data["monthly_limit_usd"] = cap
        # A team being created has no members yet, so its additions cannot conflict beyond the
        # duplicate rows the formset itself rejects.
        if any(self.errors) or self.instance.pk is None:
            return
        # The services hold the rules (e.g. a team keeps a lead): their validation checks the
        # whole batch without writing; the admin's save_formset then runs them.
        added, role_changed, removed = self._changes()
        try:
            services.membership_changes_validate(
                team=self.instance,
                added=[(form.cleaned_data["user"], form.cleaned_data["role"]) for form in added],
                role_changes=[(stored, form.cleaned_data["role"]) for form, stored in role_changed],
                removed=[stored for _form, stored in removed],
            )
        except ValidationError as error:
            raise ValidationError(error.messages) from None

    def _changes(self) -> tuple[list, list, list]:
        """The additions, role changes and removals, in the order they are applied: additions
        and promotions before demotions and removals, so that handing the lead role over in one
        save never leaves the team without a lead. Role changes and removals come with the
        stored membership (the form has already copied the new role onto its instance)."""
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
        stored = Membership.objects.select_related("user", "team").in_bulk(
            [form.instance.pk for form in [*role_changed, *removed]]
        )
        return (
            added,
            [(form, stored[form.instance.pk]) for form in role_changed],
            [(form, stored[form.instance.pk]) for form in removed],
        )

    def _capped(self) -> list:
        """The rows whose monthly cap is set or changed (not those being removed)."""
        return [
            form
            for form in self.forms
            if form.has_changed()
            and form not in self.deleted_forms
            and "monthly_limit_usd" in form.changed_data
            and (form.instance.pk is not None or form.cleaned_data.get("monthly_limit_usd"))
        ]

    def apply(self, *, actor: User | None) -> list[str]:
        """Run the changes through the services; returns what to tell the staff user."""
        team = self.instance
        added, role_changed, removed = self._changes()
        capped = self._capped()
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
            if form in capped:
                services.membership_limit_update(
                    actor=actor,
                    membership=membership,
                    monthly_limit_usd=form.cleaned_data["monthly_limit_usd"],
                )
        for form, membership in role_changed:
            membership = services.membership_set_role(
                membership=membership, role=form.cleaned_data["role"], actor=actor
            )
            self.changed_objects.append((membership, ["role"]))
        stored = Membership.objects.select_related("user", "team").in_bulk(
            [form.instance.pk for form in capped if form.instance.pk is not None]
        )
        for form in capped:
            if form.instance.pk is None:
                continue
            membership = services.membership_limit_update(
                actor=actor,
                membership=stored[form.instance.pk],
                monthly_limit_usd=form.cleaned_data["monthly_limit_usd"],
            )
            self.changed_objects.append((membership, ["monthly_limit_usd"]))
        for _form, membership in removed:
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

    def get_formset(self, request: HttpRequest, obj: Team | None = None, **kwargs: Any):
        # A new class per request (inlineformset_factory), so the actor is this request's.
        formset = super().get_formset(request, obj, **kwargs)
        formset.actor = request.user
        return formset


# What team_budget_update sets, rather than team_save.
BUDGET_FIELDS = ("monthly_budget_usd", "time_zone")


def _time_zone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(available_time_zones())]


class TeamAdminForm(forms.ModelForm):
    # Text rather than a DecimalField, as on a key: the service's quota messages are shown, and
    # empty means unlimited.
    default_quota_limit_usd = forms.CharField(
        label="Default quota limit (USD)",
        required=False,
        widget=AdminTextInputWidget,
        help_text="The quota of members' new keys. At least 0.01, at most 2 decimals; 0 or "
        "empty: unlimited.",
    )

    # Both checked by team_budget_validate, with its messages; empty budget means none.
    monthly_budget_usd = forms.CharField(
        label="Monthly budget (USD)",
        required=False,
        widget=AdminTextInputWidget,
        help_text="What all of the team's keys together may spend in a calendar month of its "
        "time zone. At least 0.01, at most 2 decimals; 0 or empty: no budget.",
    )
    time_zone = forms.CharField(
        required=False,
        # Offered as a list, but read as text, so a bad name gets the service's message.
        widget=forms.Select(choices=_time_zone_choices),
        help_text="An IANA name such as Asia/Shanghai or UTC: the team's months, and its keys' "
        "days and weeks (from Monday), start at midnight there.",
    )

    # The staff user saving the page (TeamAdmin.get_form), whose right to set the budget
    # team_budget_validate checks.
    actor: User | None = None

    class Meta:
        model = Team
        fields = (
            "name",
            "slug",
            "allowed_groups",
            "members_can_create_keys",
            "default_group",
            "default_quota_limit_usd",
            "default_rate_limit",
            "default_expiry_days",
            "monthly_budget_usd",
            "time_zone",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Shown as the service reads them; TeamAdmin.save_model leaves them to the service.
        budget = self.instance.monthly_budget_usd
        if "monthly_budget_usd" not in kwargs.get("initial", {}):
            self.initial["monthly_budget_usd"] = format(budget, "f") if budget else ""

    def clean_default_quota_limit_usd(self) -> Decimal:
        try:
            return parse_quota(self.cleaned_data["default_quota_limit_usd"])
        except ValidationError as error:
            raise ValidationError(error.messages) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        changed = {
            field: cleaned[field]
            for field in BUDGET_FIELDS
            if field in self.changed_data and field in cleaned
        }
        if changed:
            try:
                cleaned.update(
                    services.team_budget_validate(actor=self.actor, team=self.instance, **changed)
                )
            except ValidationError as error:
                for field in error.error_dict:
                    cleaned.pop(field, None)
                _add_service_errors(self, error)
        return cleaned

    def budget_changes(self) -> dict[str, Any]:
        """The budget and time zone as the staff user changed them, for team_budget_update."""
        return {
            field: self.cleaned_data[field] for field in BUDGET_FIELDS if field in self.changed_data
        }


@admin.register(Team)
class TeamAdmin(ServiceTransactionsMixin, admin.ModelAdmin):
    form = TeamAdminForm
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

    @admin.display(description=_("members"), ordering="member_total")
    def member_count(self, team: Team) -> int:
        return team.member_total

    @admin.display(description=_("keys"), ordering="key_total")
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

    def get_form(
        self, request: HttpRequest, obj: Team | None = None, change: bool = False, **kwargs
    ):
        # A new class per request (modelform_factory), so the actor is this request's.
        form = super().get_form(request, obj, change=change, **kwargs)
        form.actor = request.user
        return form

    def save_model(self, request: HttpRequest, obj: Team, form, change: bool) -> None:
        # The budget and the clock are their own action, audited apart and seen by the relay at
        # once: the team is saved with them as stored (a new team: the defaults), then set.
        stored = Team.objects.get(pk=obj.pk) if change else Team()
        for field in BUDGET_FIELDS:
            setattr(obj, field, getattr(stored, field))
        services.team_save(team=obj, actor=request.user)
        budget = form.budget_changes()
        if budget:
            services.team_budget_update(actor=request.user, team=obj, **budget)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        # allowed_groups is the team's only many-to-many field; the service sets it and drops
        # the cached state of the team's keys, so form.save_m2m() is deliberately not called.
        if "allowed_groups" in form.changed_data:
            services.team_set_allowed_groups(
                team=form.instance,
                groups=list(form.cleaned_data["allowed_groups"]),
                actor=request.user,
            )
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if isinstance(formset, MembershipInlineFormSet):
            for note in formset.apply(actor=request.user):
                self.message_user(request, note, messages.SUCCESS)
            return
        super().save_formset(request, form, formset, change)
