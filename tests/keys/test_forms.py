"""The portal's forms: they parse input and show the services' errors next to the fields.

Each bad input goes through the form and then the service, as the views do, so these tests
prove the messages people see are the validators' own, on the right field.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from keys import services
from keys.forms import CreateKeyForm, KeyFilterForm, KeyForm
from keys.models import ApiKey, AuditEvent, Group, Membership

from ..factories import GroupFactory, MembershipFactory, UserFactory, distinct_ips, make_key

QUOTA_NUMBER = (
    "Enter the quota limit in US dollars with at most 2 decimal places (whole cents), "
    "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means unlimited."
)
BELOW_A_CENT = (
    "A quota limit below 0.01 US dollars would be stored as 0, which means unlimited. "
    "Enter at least 0.01, or 0 for unlimited."
)


def create(team, owner, group, /, **fields) -> CreateKeyForm:
    """Submit the create form as the view does; returns the form (errors on it, if any)."""
    data = {"name": "claude-code-main", "group": str(group.pk), **fields}
    form = CreateKeyForm(data, team=team)
    if form.is_valid():
        try:
            services.api_key_create(team=team, owner=owner, actor=owner, **form.service_arguments())
        except ValidationError as error:
            form.add_service_errors(error)
    return form


def edit(key, **fields) -> KeyForm:
    """Submit the edit form for `key` with `fields` changed, as the view does for a lead of
    the key's team (what a member may not loosen: test_policy.py)."""
    lead = MembershipFactory(team=key.team, role=Membership.Role.LEAD).user
    initial = KeyForm(team=key.team, key=key).initial
    data = {name: "" if value is None else str(value) for name, value in initial.items()}
    if initial["expires_at"]:
        data["expires_at"] = initial["expires_at"].strftime("%Y-%m-%dT%H:%M")
    data.update(fields)
    form = KeyForm(data, team=key.team, key=key)
    if form.is_valid():
        try:
            services.api_key_update(key=key, actor=lead, **form.changes())
        except ValidationError as error:
            form.add_service_errors(error)
    return form


# --- bad input, one field at a time ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"allowed_ips": "203.0.113.7\n10.0.0.300"},
            "allowed_ips",
            "“10.0.0.300” is not a valid IPv4 or IPv6 address or CIDR range "
            "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32).",
        ),
        (
            {"allowed_ips": "10.0.0.1/8"},
            "allowed_ips",
            "“10.0.0.1/8” is not a valid IPv4 or IPv6 address or CIDR range "
            "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32).",
        ),
        (
            {"allowed_ips": "\n".join(distinct_ips(1001))},
            "allowed_ips",
            "IP restriction can hold at most 1,000 addresses or ranges; this one has 1,001.",
        ),
        (
            {"quota_limit_usd": "-1"},
            "quota_limit_usd",
            "Quota limit cannot be negative. Use 0 for unlimited.",
        ),
        (
            {"quota_limit_usd": "ten dollars"},
            "quota_limit_usd",
            QUOTA_NUMBER,
        ),
        (
            {"quota_limit_usd": "NaN"},
            "quota_limit_usd",
            QUOTA_NUMBER,
        ),
        *[
            ({"quota_limit_usd": bad}, "quota_limit_usd", QUOTA_NUMBER)
            # Arabic-Indic five, fullwidth 12, underscores, exponents, a plus sign, infinity.
            for bad in ("\u0665", "\uff11\uff12", "1_000", "1e-400", "1e2", "+5", "Infinity")
        ],
        *[
            # Below a cent, too large or no number at all: one message with unit and range.
            ({"quota_limit_usd": bad}, "quota_limit_usd", QUOTA_NUMBER)
            for bad in ("25.001", "1e400", "1" * 30, "10000000000")
        ],
        *[
            ({"quota_limit_usd": small}, "quota_limit_usd", BELOW_A_CENT)
            for small in ("0.001", "0.009", "0.000001", "0.0000000001")
        ],
        *[
            (
                {"rate_limit": bad},
                "rate_limit",
                "Enter a rate limit like 60/m: a whole number of at least 1, then /s, /m, /h "
                "or /d (per second, minute, hour or day).",
            )
            for bad in ("60", "0/m", "60/min", "60 per minute", "-5/s", "1.5/m")
        ],
        (
            {"expires_at": "2001-01-01T00:00"},
            "expires_at",
            "Key expiration must be in the future. Leave it empty for never.",
        ),
        ({"expires_at": "next tuesday"}, "expires_at", "Enter a valid date/time."),
        ({"name": ""}, "name", "Name is required."),
        ({"name": "   "}, "name", "Name is required."),
        ({"name": "x" * 101}, "name", "Name can be at most 100 characters."),
        ({"name": "bad\x00name"}, "name", "Null characters are not allowed."),
        ({"group": ""}, "group", "Choose a group."),
        (
            {"group": "999999"},
            "group",
            "Select a valid choice. That choice is not one of the available choices.",
        ),
        (
            {"group": "not-a-number"},
            "group",
            "Select a valid choice. That choice is not one of the available choices.",
        ),
    ],
)
def test_each_bad_input_is_refused_on_its_field(team, member, group, fields, field, message):
    form = create(team, member, group, **fields)
    assert form.errors == {field: [message]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_a_group_not_allowed_for_the_team_is_refused(team, member, group):
    team.allowed_groups.add(group)
    elsewhere = GroupFactory(name="Globex only")
    form = create(team, member, elsewhere)
    assert form.errors == {"group": ["Group “Globex only” is not available to team Acme."]}
    assert not ApiKey.objects.exists()


def test_an_inactive_group_is_refused(team, member):
    retired = GroupFactory(name="Retired", is_active=False)
    form = create(team, member, retired)
    assert form.errors == {"group": ["Group “Retired” is not active."]}


def test_every_field_error_shows_at_once(team, member, group):
    form = create(
        team,
        member,
        group,
        name="",
        allowed_ips="nope",
        quota_limit_usd="-2",
        rate_limit="fast",
        expires_at="2000-01-01T00:00",
    )
    assert set(form.errors) == {
        "name",
        "allowed_ips",
        "quota_limit_usd",
        "rate_limit",
        "expires_at",
    }


def test_a_status_that_does_not_exist_is_refused(team, member, group):
    key = make_key(team=team, owner=member, group=group).key
    form = edit(key, status="deleted")
    assert form.errors == {
        "status": ["Select a valid choice. deleted is not one of the available choices."]
    }
    key.refresh_from_db()
    assert key.status == "enabled"


# --- good input ------------------------------------------------------------------------------


def test_inputs_are_normalised_by_the_service(team, member, group):
    form = create(
        team,
        member,
        group,
        name="  team-test  ",
        allowed_ips="203.0.113.7, 2001:DB8::/32\r\n203.0.113.7",
        quota_limit_usd=" 12.5 ",
        rate_limit="60 / M",
        expires_at="2031-05-06T07:08",
    )
    assert form.errors == {}
    key = ApiKey.objects.get()
    assert key.name == "team-test"
    assert key.allowed_ips == ["203.0.113.7", "2001:db8::/32"]
    assert key.quota_limit_usd == Decimal("12.5")
    assert key.rate_limit == "60/m"
    assert key.expires_at == datetime(2031, 5, 6, 7, 8, tzinfo=UTC)


def test_empty_restrictions_mean_off(team, member, group):
    form = create(team, member, group, allowed_ips="", quota_limit_usd="", rate_limit="")
    assert form.errors == {}
    key = ApiKey.objects.get()
    assert (key.allowed_ips, key.quota_limit_usd, key.rate_limit, key.expires_at) == (
        [],
        Decimal("0"),
        "",
        None,
    )


def test_the_create_form_has_no_status(team):
    assert "status" not in CreateKeyForm(team=team).fields


def test_group_choices_show_multiplier_and_models(team, group):
    GroupFactory(name="gpt 0.25", multiplier=Decimal("0.2500"), models=["gpt-4o", "gpt-4o-mini"])
    GroupFactory(name="Empty", multiplier=Decimal("10"), models=[])
    GroupFactory(name="Off", is_active=False)
    labels = [label for _, label in KeyForm(team=team).fields["group"].choices]
    assert labels == [
        "CC Official Channel · ×1 · claude-*",
        "Empty · ×10 · no models",
        "gpt 0.25 · ×0.25 · gpt-4o, gpt-4o-mini",
    ]


def test_group_choices_follow_the_teams_allowed_groups(team, group):
    team.allowed_groups.add(group)
    GroupFactory(name="Not for Acme")
    assert [str(g) for g in KeyForm(team=team).fields["group"].queryset] == ["CC Official Channel"]


# --- the edit form ---------------------------------------------------------------------------


@pytest.fixture
def key(team, member, group):
    return make_key(
        team=team,
        owner=member,
        group=group,
        allowed_ips=["203.0.113.0/24", "2001:db8::1"],
        quota_limit_usd="25.00",
        rate_limit="60/m",
        expires_at=timezone.now() + timedelta(days=3, seconds=42),
    ).key


def test_edit_form_starts_from_the_keys_settings(key):
    initial = KeyForm(team=key.team, key=key).initial
    assert initial["name"] == "claude-code-main"
    assert initial["group"] == key.group_id
    assert initial["status"] == "enabled"
    assert initial["allowed_ips"] == "203.0.113.0/24\n2001:db8::1"
    assert initial["quota_limit_usd"] == "25.00"
    assert initial["rate_limit"] == "60/m"
    assert initial["expires_at"] == timezone.localtime(key.expires_at).replace(
        second=0, microsecond=0
    )


def test_an_untouched_form_changes_nothing(key):
    before = ApiKey.objects.filter(pk=key.pk).values().get()
    form = edit(key)
    assert form.errors == {}
    assert form.changes() == {}
    assert ApiKey.objects.filter(pk=key.pk).values().get() == before
    assert AuditEvent.objects.filter(key=key).count() == 1


def test_only_changed_fields_reach_the_service(key):
    form = edit(key, rate_limit="10/s")
    assert form.changes() == {"rate_limit": "10/s"}
    key.refresh_from_db()
    assert key.rate_limit == "10/s"
    event = AuditEvent.objects.get(key=key, action="key.updated")
    assert event.changes == {"rate_limit": ["60/m", "10/s"]}


def test_clearing_restrictions_turns_them_off(key):
    form = edit(key, allowed_ips="", quota_limit_usd="", rate_limit="", expires_at="")
    assert form.errors == {}
    key.refresh_from_db()
    assert (key.allowed_ips, key.quota_limit_usd, key.rate_limit, key.expires_at) == (
        [],
        Decimal("0"),
        "",
        None,
    )


def test_a_zero_quota_shows_as_empty(team, member, group):
    key = make_key(team=team, owner=member, group=group).key
    assert KeyForm(team=team, key=key).initial["quota_limit_usd"] == ""


BUDGETS = ("daily_limit_usd", "weekly_limit_usd", "monthly_limit_usd", "max_concurrency")


def test_budgets_of_zero_show_as_empty_and_set_ones_as_stored(team, member, group):
    none = make_key(team=team, owner=member, group=group).key
    assert {
        field: KeyForm(team=team, key=none).initial[field] for field in BUDGETS
    } == dict.fromkeys(BUDGETS, "")
    some = make_key(
        team=team,
        owner=member,
        group=group,
        daily_limit_usd="2.5",
        weekly_limit_usd="10",
        monthly_limit_usd="40.00",
        max_concurrency=3,
    ).key
    some = ApiKey.objects.get(pk=some.pk)
    assert {field: KeyForm(team=team, key=some).initial[field] for field in BUDGETS} == {
        "daily_limit_usd": "2.50",
        "weekly_limit_usd": "10.00",
        "monthly_limit_usd": "40.00",
        "max_concurrency": "3",
    }


def test_an_untouched_budget_changes_nothing_and_a_changed_one_reaches_the_service(
    team, member, group
):
    key = make_key(team=team, owner=member, group=group, daily_limit_usd="2.5").key
    form = edit(key, max_concurrency="6")
    assert form.errors == {}
    assert form.changes() == {"max_concurrency": "6"}
    key.refresh_from_db()
    assert (key.daily_limit_usd, key.max_concurrency) == (Decimal("2.5"), 6)
    event = AuditEvent.objects.get(key=key, action="key.updated")
    assert event.changes == {"max_concurrency": [0, 6]}


def test_the_budgets_help_names_the_teams_time_zone(team):
    team.time_zone = "Asia/Shanghai"
    form = KeyForm(team=team)
    assert form.fields["daily_limit_usd"].help_text == (
        "Spend allowed per calendar day in your team's time zone (Asia/Shanghai); resets at "
        "midnight. Empty or 0: no daily limit."
    )
    assert form.fields["weekly_limit_usd"].help_text == (
        "Spend allowed per calendar week in your team's time zone (Asia/Shanghai); resets at "
        "midnight on Monday. Empty or 0: no weekly limit."
    )
    assert form.fields["monthly_limit_usd"].help_text == (
        "Spend allowed per calendar month in your team's time zone (Asia/Shanghai); resets at "
        "midnight on the 1st. Empty or 0: no monthly limit."
    )


def test_the_keys_own_group_stays_offered_when_the_team_no_longer_allows_it(key):
    key.team.allowed_groups.add(GroupFactory(name="New default"))
    offered = list(KeyForm(team=key.team, key=key).fields["group"].queryset)
    assert offered == [key.group, Group.objects.get(name="New default")]
    # ... but another key cannot pick it.
    assert list(KeyForm(team=key.team).fields["group"].queryset) == [
        Group.objects.get(name="New default")
    ]


def test_enabling_an_expired_key_names_the_expiry(key):
    past = timezone.now() - timedelta(hours=2)
    ApiKey.objects.filter(pk=key.pk).update(status="disabled", expires_at=past)
    key.refresh_from_db()
    form = edit(key, status="enabled")
    [message] = form.errors["expires_at"]
    assert message.startswith("This key expired on ")
    assert message.endswith("Clear or extend Key expiration to enable it.")
    key.refresh_from_db()
    assert key.status == "disabled"


# --- filters and members ---------------------------------------------------------------------


def test_filter_form_drops_unknown_values(team, group):
    form = KeyFilterForm(
        {"q": " main ", "status": "bogus", "group": "999", "owner": "x"},
        groups=Group.objects.all(),
        owners=UserFactory._meta.model.objects.all(),
    )
    assert form.filters() == {
        "state": "",
        "group_id": None,
        "owner_id": None,
        "name_contains": "main",
    }


def test_filter_form_for_members_has_no_owner_field(team, group):
    form = KeyFilterForm({}, groups=Group.objects.all(), owners=None)
    assert "owner" not in form.fields
