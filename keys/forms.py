"""The portal's forms. They turn what a browser sends into Python values and show the services'
errors next to the fields they name; the rules themselves live in keys/validators.py and
keys/services.py, so every field here is optional and no form repeats a rule.
"""

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .models import INVITATION_VALID_DAYS, ApiKey, Group, Membership, Team
from .selectors import KEY_STATES, group_list_for_key, group_list_for_team
from .validators import MAX_ALLOWED_IPS

DATETIME_LOCAL_FORMAT = "%Y-%m-%dT%H:%M"

# What the badges and the status filter call each ApiKey.state.
STATE_LABELS = dict(
    zip(KEY_STATES, (_("Enabled"), _("Disabled"), _("Expired"), _("Quota used up")), strict=True)
)

# The guidance of the console's Key Settings page, which users already know.
NAME_HELP = _(
    "The name helps you identify what the key is used for. Use a clear name based on the tool, "
    "scenario, or team member, such as HC Personal, claude-code-main, or team-test."
)
GROUP_HELP = _(
    "The group determines which models the key can use, along with the pricing multiplier or "
    "routing policy. Choose the group based on the model you want to use."
)
STATUS_HELP = _("Status controls whether the key can be used.")
STATUS_CHOICE_HELP = {
    ApiKey.Status.ENABLED: _("The key can make requests normally."),
    ApiKey.Status.DISABLED: _(
        "The key stops working, useful for temporary suspension, risk checks, or pausing an "
        "environment."
    ),
}
IP_HELP = format_lazy(
    _(
        "IP restriction limits which source IPs can use the key. Most personal users can keep "
        "it off. Enable it only when you use a fixed server or clearly know the outbound IP "
        "address. One IP or CIDR range per line, such as 203.0.113.7 or 203.0.113.0/24, at most "
        "{limit}. Empty: any IP."
    ),
    limit=f"{MAX_ALLOWED_IPS:,}",
)
QUOTA_HELP = _(
    "Quota limit sets the maximum USD amount this key can consume. 0 means unlimited. For "
    "teams, test environments, or temporary keys, set a clear quota to avoid unexpected usage."
)
RATE_HELP = _(
    "Rate limit controls request frequency. Most users do not need to enable it. Use it only "
    "when you want to prevent a tool from sending too many requests in a short period. Write a "
    "number of requests per s, m, h or d: 60 per minute = 60/m. Empty: no limit."
)
# The spend windows reset in the team's time zone (billing.windows).
DAILY_LIMIT_HELP = _(
    "Spend allowed per calendar day in your team's time zone ({time_zone}); resets at "
    "midnight. Empty or 0: no daily limit."
)
WEEKLY_LIMIT_HELP = _(
    "Spend allowed per calendar week in your team's time zone ({time_zone}); resets at "
    "midnight on Monday. Empty or 0: no weekly limit."
)
MONTHLY_LIMIT_HELP = _(
    "Spend allowed per calendar month in your team's time zone ({time_zone}); resets at "
    "midnight on the 1st. Empty or 0: no monthly limit."
)
MAX_CONCURRENCY_HELP = _(
    "How many requests of this key may run at the same time; one more is refused until one "
    "finishes, which stops a runaway agent. Empty or 0: unlimited."
)
EXPIRY_HELP = _(
    "Key expiration controls when the key becomes invalid. For long-term personal use, you can "
    "leave it empty. For temporary tests, shared configuration, or short-term projects, set an "
    "expiration time. Time zone: {time_zone}."
)


# The settings a member may only tighten; read-only for them once set (keys.policy).
LEAD_SET_FIELDS = (
    "group",
    "allowed_ips",
    "quota_limit_usd",
    "rate_limit",
    "expires_at",
    "daily_limit_usd",
    "weekly_limit_usd",
    "monthly_limit_usd",
    "max_concurrency",
)
# The budgets that reset, each read by keys.validators.parse_usd_limit.
WINDOW_FIELDS = ("daily_limit_usd", "weekly_limit_usd", "monthly_limit_usd")
SET_BY_LEAD = _("Set by your team lead. Only a lead can loosen or clear it.")
GROUP_SET_BY_LEAD = _("Set by your team lead. Only a lead can change it.")
STATUS_SET_BY_LEAD = _("Disabled by your team lead. Only a lead can enable it.")
STATUS_SET_BY_EXPIRY = _(
    "Disabled automatically when it expired. Only a lead can set a new expiration and enable it."
)


def usd_limit_field(label: str, placeholder: str, *, help_text: str = "") -> forms.CharField:
    """A dollar limit (quota, window, budget, cap) as text rather than a DecimalField: its
    parsing and messages belong to the service (keys.validators.parse_usd_limit), so the form
    passes the text on untouched."""
    return forms.CharField(
        label=label,
        required=False,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": placeholder}),
        help_text=help_text,
    )


class ServiceErrorsMixin:
    """Shows a service's ValidationError on the form: each message next to the field it names,
    anything else at the top of the form."""

    def add_service_errors(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for field, messages in error.message_dict.items():
            self.add_error(field if field in self.fields else None, messages)


def plain_decimal(value: Decimal) -> str:
    """A number as people write it: 0.25 and 10, never 0.2500 or 1E+1."""
    return format(Decimal(value).normalize(), "f")


def group_label(group: Group) -> str:
    multiplier = plain_decimal(group.multiplier)
    models = ", ".join(group.models) if group.models else gettext("no models")
    return f"{group.name} · ×{multiplier} · {models}"


class GroupChoiceField(forms.ModelChoiceField):
    """Offers the team's groups but reads any group id, so that a group the team may not use
    gets the service's message, which says why, instead of a bare "not a valid choice"."""

    def label_from_instance(self, obj: Group) -> str:
        return group_label(obj)

    def to_python(self, value: Any) -> Group | None:
        if value in self.empty_values:
            return None
        try:
            return Group.objects.get(pk=value)
        except (Group.DoesNotExist, ValueError, TypeError, ValidationError):
            raise ValidationError(
                self.error_messages["invalid_choice"],
                code="invalid_choice",
                params={"value": value},
            ) from None


class KeyForm(ServiceErrorsMixin, forms.Form):
    """The edit page's fields, in the console's order. With `key`, starts from its settings."""

    name = forms.CharField(label=_("Name"), required=False, help_text=NAME_HELP)
    group = GroupChoiceField(
        queryset=Group.objects.none(),
        label=_("Group"),
        required=False,
        empty_label=None,
        help_text=GROUP_HELP,
    )
    status = forms.ChoiceField(
        label=_("Status"),
        choices=ApiKey.Status.choices,
        required=False,
        widget=forms.RadioSelect,
        help_text=STATUS_HELP,
    )
    allowed_ips = forms.CharField(
        label=_("IP restriction"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "203.0.113.7\n203.0.113.0/24"}),
        help_text=IP_HELP,
    )
    quota_limit_usd = usd_limit_field(
        _("Quota limit (USD)"), _("0 = unlimited"), help_text=QUOTA_HELP
    )
    rate_limit = forms.CharField(
        label=_("Rate limit"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "60/m", "autocomplete": "off"}),
        help_text=RATE_HELP,
    )
    # A naive datetime-local value is read in the current time zone (settings.TIME_ZONE).
    expires_at = forms.DateTimeField(
        label=_("Key expiration"),
        required=False,
        input_formats=[DATETIME_LOCAL_FORMAT, "%Y-%m-%dT%H:%M:%S"],
        widget=forms.DateTimeInput(format=DATETIME_LOCAL_FORMAT, attrs={"type": "datetime-local"}),
    )
    # Budgets (their help texts name the team's zone: set in __init__).
    daily_limit_usd = usd_limit_field(_("Daily limit (USD)"), _("0 = no limit"))
    weekly_limit_usd = usd_limit_field(_("Weekly limit (USD)"), _("0 = no limit"))
    monthly_limit_usd = usd_limit_field(_("Monthly limit (USD)"), _("0 = no limit"))
    max_concurrency = forms.CharField(
        label=_("Max concurrent requests"),
        required=False,
        widget=forms.TextInput(attrs={"inputmode": "numeric", "placeholder": _("0 = unlimited")}),
        help_text=MAX_CONCURRENCY_HELP,
    )

    def __init__(
        self,
        *args: Any,
        team: Team,
        key: ApiKey | None = None,
        restricted: bool = False,
        **kwargs: Any,
    ):
        if key is not None:
            kwargs.setdefault("initial", _initial_from_key(key))
        super().__init__(*args, **kwargs)
        self.fields["expires_at"].help_text = EXPIRY_HELP.format(time_zone=settings.TIME_ZONE)
        for field, help_text in (
            ("daily_limit_usd", DAILY_LIMIT_HELP),
            ("weekly_limit_usd", WEEKLY_LIMIT_HELP),
            ("monthly_limit_usd", MONTHLY_LIMIT_HELP),
        ):
            self.fields[field].help_text = help_text.format(time_zone=team.time_zone)
        self.fields["group"].queryset = group_list_for_key(team=team, key=key)
        # {field: why it is read-only}: what a member sees of what a lead set (keys.policy).
        self.locked: dict[str, str] = {}
        if restricted:
            self._lock_what_a_lead_set(key)

    def _lock_what_a_lead_set(self, key: ApiKey | None) -> None:
        """A member may not loosen a restriction or change the group (keys.policy): such fields
        are read-only for them, and an edit of one sent anyway is ignored (and refused by the
        service). Empty restrictions stay editable: setting one only tightens the key."""
        for field in LEAD_SET_FIELDS:
            if field == "group":
                # A new key's group is the member's to choose unless the team has a default.
                if key is not None or self.initial.get("group"):
                    self._lock(field, GROUP_SET_BY_LEAD)
            elif self.initial.get(field) not in (None, ""):
                self._lock(field, SET_BY_LEAD)
        if (
            key is not None
            and "status" in self.fields
            and key.status == ApiKey.Status.DISABLED
            and key.disabled_by != ApiKey.DisabledBy.OWNER
        ):
            self._lock(
                "status",
                STATUS_SET_BY_EXPIRY
                if key.disabled_by == ApiKey.DisabledBy.SYSTEM
                else STATUS_SET_BY_LEAD,
            )

    def _lock(self, field: str, why: str) -> None:
        self.fields[field].disabled = True
        self.locked[field] = why

    def changes(self) -> dict[str, Any]:
        """The fields the user changed, as keyword arguments for api_key_update."""
        return {field: self.cleaned_data[field] for field in self.changed_data}


class CreateKeyForm(KeyForm):
    """Name, group and the optional restrictions: a new key always starts enabled. It starts
    from the team's defaults; leads also choose the owner among the team's members (`owners`),
    members create keys for themselves."""

    status = None
    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        label=_("Owner"),
        required=False,
        empty_label=None,
        help_text=_("Who the key belongs to. They see it among their keys and can use it."),
    )
    field_order = ["owner"]

    def __init__(
        self,
        *args: Any,
        team: Team,
        owners: QuerySet | None = None,
        defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        initial = kwargs.setdefault("initial", {})
        for field, value in (defaults or {}).items():
            initial.setdefault(field, _initial_value(field, value))
        super().__init__(*args, team=team, **kwargs)
        # No group chosen for the user: the team's default one, else an explicit choice.
        self.fields["group"].empty_label = gettext("Choose a group")
        if owners is None:
            del self.fields["owner"]
        else:
            self.fields["owner"].queryset = owners

    def service_arguments(self) -> dict[str, Any]:
        """api_key_create's settings; the owner is the view's (`owner_choice`)."""
        return {field: value for field, value in self.cleaned_data.items() if field != "owner"}

    def owner_choice(self):
        return self.cleaned_data.get("owner")


def _initial_from_key(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "status": key.status,
        **{field: _initial_value(field, getattr(key, field)) for field in LEAD_SET_FIELDS},
    }


def _initial_value(field: str, value: Any) -> Any:
    """A key setting (or a team's default of it) as its field shows it."""
    if field == "group":
        return getattr(value, "pk", value)
    if field == "allowed_ips":
        return "\n".join(value)
    if field == "quota_limit_usd" or field in WINDOW_FIELDS:
        return "" if not value else format(value, "f")
    if field == "max_concurrency":
        return "" if not value else str(value)
    if field == "expires_at" and value is not None:
        # datetime-local shows minutes; the initial value matches what the browser sends
        # back, so an untouched expiry does not count as a change. Rounding down also keeps a
        # team's default expiry no later than the one the service allows a member.
        return timezone.localtime(value).replace(second=0, microsecond=0)
    return value


class KeyFilterForm(forms.Form):
    """The key list's filters. Unknown values are dropped rather than shown as errors."""

    q = forms.CharField(label=_("Search by name"), required=False)
    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("Any status")), *STATE_LABELS.items()]
    )
    group = forms.ModelChoiceField(
        queryset=Group.objects.none(), label=_("Group"), required=False, empty_label=_("Any group")
    )
    owner = forms.ModelChoiceField(
        queryset=get_user_model().objects.none(),
        label=_("Owner"),
        required=False,
        empty_label=_("Any owner"),
    )

    def __init__(self, *args: Any, groups: QuerySet[Group], owners: QuerySet | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["group"].queryset = groups
        if owners is None:
            del self.fields["owner"]
        else:
            self.fields["owner"].queryset = owners

    def filters(self) -> dict[str, Any]:
        """The `filters` of selectors.api_key_search, from the valid fields only."""
        self.is_valid()
        data = self.cleaned_data
        owner = data.get("owner")
        group = data.get("group")
        return {
            "state": data.get("status", ""),
            "group_id": group.pk if group else None,
            "owner_id": owner.pk if owner else None,
            "name_contains": data.get("q", "").strip(),
        }


class TeamKeySettingsForm(ServiceErrorsMixin, forms.Form):
    """The team page's key settings: whether members create keys, and where their new keys
    start. team_key_settings_update holds the rules (quota and rate limit read as on a key)."""

    members_can_create_keys = forms.BooleanField(
        label=_("Members can create keys"),
        required=False,
        help_text=_("Off: only leads create keys, for themselves or for a member."),
    )
    default_group = forms.ModelChoiceField(
        queryset=Group.objects.none(),
        label=_("Default group"),
        required=False,
        empty_label=_("None: members choose"),
        help_text=_("The group of members' new keys; members cannot choose another."),
    )
    default_quota_limit_usd = usd_limit_field(
        _("Default quota limit (USD)"),
        _("0 = unlimited"),
        help_text=_(
            "Members' new keys start with this quota and may only lower it. 0 or empty: unlimited."
        ),
    )
    default_rate_limit = forms.CharField(
        label=_("Default rate limit"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "60/m", "autocomplete": "off"}),
        help_text=_(
            "Members' new keys start with this rate limit and may only lower it, e.g. 60/m. "
            "Empty: no limit."
        ),
    )
    default_expiry_days = forms.IntegerField(
        label=_("Default expiration period (days)"),
        required=False,
        help_text=_(
            "Members' new keys expire at most this many days after they are made. "
            "Empty: they may never expire."
        ),
    )

    def __init__(self, *args: Any, team: Team, **kwargs: Any):
        kwargs.setdefault(
            "initial",
            {
                "members_can_create_keys": team.members_can_create_keys,
                "default_group": team.default_group_id,
                "default_quota_limit_usd": ""
                if not team.default_quota_limit_usd
                else format(team.default_quota_limit_usd, "f"),
                "default_rate_limit": team.default_rate_limit,
                "default_expiry_days": team.default_expiry_days,
            },
        )
        super().__init__(*args, **kwargs)
        self.fields["default_group"].queryset = group_list_for_team(team=team).order_by("name")

    def changes(self) -> dict[str, Any]:
        """The settings the lead changed, as keyword arguments for team_key_settings_update."""
        return {field: self.cleaned_data[field] for field in self.changed_data}


class MemberCapForm(ServiceErrorsMixin, forms.Form):
    """A member's monthly cap on the team page; membership_limit_update reads and checks it."""

    monthly_limit_usd = usd_limit_field(
        _("Monthly cap (USD)"),
        _("0 = no cap"),
        help_text=_(
            "What all of the member's keys in the team may spend in a calendar month. "
            "0 or empty: no cap."
        ),
    )


class InviteForm(ServiceErrorsMixin, forms.Form):
    """An email address and a role; invitation_create holds the rules."""

    # Text rather than an EmailField: the address's checks and messages belong to the service.
    email = forms.CharField(
        label=_("Email"),
        required=False,
        widget=forms.EmailInput(attrs={"placeholder": "name@example.com", "autocomplete": "off"}),
        help_text=format_lazy(
            _(
                "They get an email with a link; they join when they accept it, signed in with "
                "the account that has this address. The link works for {days} days."
            ),
            days=INVITATION_VALID_DAYS,
        ),
    )
    role = forms.ChoiceField(
        label=_("Role"), choices=Membership.Role.choices, initial=Membership.Role.MEMBER
    )


class RoleForm(ServiceErrorsMixin, forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Membership.Role.choices)


class ApiTokenForm(ServiceErrorsMixin, forms.Form):
    """A new REST API token: just its name; api_token_create holds the rules."""

    name = forms.CharField(
        label=_("Name"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "ci-bot", "autocomplete": "off"}),
        help_text=_(
            "The name helps you recognise the token later. Name it after the integration or "
            "script that uses it, such as ci-bot or grafana-export."
        ),
    )
