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

from keys import services
from keys.models import Membership, Team
from keys.validators import parse_quota

from .keys import _keys
from .transactions import ServiceTransactionsMixin


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

    def apply(self, *, actor: User | None) -> list[str]:
        """Run the changes through the services; returns what to tell the staff user."""
        team = self.instance
        added, role_changed, removed = self._changes()
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
        for form, membership in role_changed:
            membership = services.membership_set_role(
                membership=membership, role=form.cleaned_data["role"], actor=actor
            )
            self.changed_objects.append((membership, ["role"]))
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
        )

    def clean_default_quota_limit_usd(self) -> Decimal:
        try:
            return parse_quota(self.cleaned_data["default_quota_limit_usd"])
        except ValidationError as error:
            raise ValidationError(error.messages) from None


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

    def save_model(self, request: HttpRequest, obj: Team, form, change: bool) -> None:
        services.team_save(team=obj, actor=request.user)

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
