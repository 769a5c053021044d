"""Every write to keys and memberships: validation with exact messages and nothing written on
failure, one audit event per change with its actor and field diff, and the relay's cached
state dropped after (and only after) the transaction commits."""

from datetime import UTC, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.keyspace import snapshot_cache_key
from keys import services
from keys.cache import invalidate_key_state
from keys.models import ApiKey, AuditEvent, Membership, digest_key
from keys.services.keys import _disable as disable_inside
from keys.validators import (
    DAILY_LIMIT_WORDS,
    MAX_CONCURRENCY_MESSAGE,
    MONTHLY_LIMIT_WORDS,
    QUOTA_MESSAGE,
    RATE_LIMIT_MESSAGE,
    WEEKLY_LIMIT_WORDS,
)

from ..factories import GroupFactory, MembershipFactory, UserFactory, make_key

FUTURE_MESSAGE = "Key expiration must be in the future. Leave it empty for never."


def bad_ip_message(entry: str) -> str:
    return (
        f"“{entry}” is not a valid IPv4 or IPv6 address or CIDR range "
        "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)."
    )


def expired_message(expires_at) -> str:
    return (
        f"This key expired on {timezone.localtime(expires_at):%Y-%m-%d %H:%M %Z}. "
        "Clear or extend Key expiration to enable it."
    )


def row(key: ApiKey) -> dict:
    """Every column of the key as stored."""
    return ApiKey.objects.filter(pk=key.pk).values().get()


def editable_values(key: ApiKey) -> dict:
    return {field: getattr(key, field) for field in services.EDITABLE_FIELDS}


def events(key: ApiKey) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(key=key).order_by("id"))


def make_expired(key: ApiKey, *, status: str = ApiKey.Status.DISABLED) -> ApiKey:
    """A key whose expiry has passed; the services rightly refuse to set one, so go direct."""
    ApiKey.objects.filter(pk=key.pk).update(
        expires_at=timezone.now() - timedelta(days=2), status=status
    )
    key.refresh_from_db()
    return key


DAILY_MESSAGE = DAILY_LIMIT_WORDS.message
WEEKLY_MESSAGE = WEEKLY_LIMIT_WORDS.message
MONTHLY_MESSAGE = MONTHLY_LIMIT_WORDS.message


def test_the_window_messages_name_the_window():
    assert DAILY_MESSAGE == (
        "Enter the daily limit in US dollars with at most 2 decimal places (whole cents), "
        "e.g. 25 or 25.50, up to 9,999,999,999.99; 0 means no daily limit."
    )
    assert MAX_CONCURRENCY_MESSAGE == (
        "Enter max concurrent requests as a whole number, e.g. 4, up to 10,000; 0 means unlimited."
    )


# Bad settings shared by create and update: (changes, {field: [exact messages]}).
BAD_SETTINGS = {
    "name-empty": ({"name": ""}, {"name": ["Name is required."]}),
    "name-whitespace": ({"name": " \t\n "}, {"name": ["Name is required."]}),
    "name-none": ({"name": None}, {"name": ["Name is required."]}),
    "name-101": ({"name": "n" * 101}, {"name": ["Name can be at most 100 characters."]}),
    "name-nul": ({"name": "main\x00key"}, {"name": ["Null characters are not allowed."]}),
    "ip-octet": ({"allowed_ips": "10.0.0.300"}, {"allowed_ips": [bad_ip_message("10.0.0.300")]}),
    "ip-hostname": (
        {"allowed_ips": "10.0.0.1, example.com"},
        {"allowed_ips": [bad_ip_message("example.com")]},
    ),
    "ip-host-bits": (
        {"allowed_ips": "10.0.0.1/8"},
        {"allowed_ips": [bad_ip_message("10.0.0.1/8")]},
    ),
    "ip-v6-bad": ({"allowed_ips": "2001:db8::1\n::g"}, {"allowed_ips": [bad_ip_message("::g")]}),
    "ip-v6-host-bits": (
        {"allowed_ips": ["2001:db8::1/32"]},
        {"allowed_ips": [bad_ip_message("2001:db8::1/32")]},
    ),
    "ip-zone-id": (
        {"allowed_ips": "fe80::1%eth0"},
        {"allowed_ips": [bad_ip_message("fe80::1%eth0")]},
    ),
    "quota-negative": (
        {"quota_limit_usd": "-1"},
        {"quota_limit_usd": ["Quota limit cannot be negative. Use 0 for unlimited."]},
    ),
    "quota-3-decimals": (
        {"quota_limit_usd": "1.234"},
        {"quota_limit_usd": [QUOTA_MESSAGE]},
    ),
    "quota-text": ({"quota_limit_usd": "ten dollars"}, {"quota_limit_usd": [QUOTA_MESSAGE]}),
    "quota-float": ({"quota_limit_usd": 1.1}, {"quota_limit_usd": [QUOTA_MESSAGE]}),
    "quota-nan": ({"quota_limit_usd": "NaN"}, {"quota_limit_usd": [QUOTA_MESSAGE]}),
    "quota-exponent": ({"quota_limit_usd": "1e3"}, {"quota_limit_usd": [QUOTA_MESSAGE]}),
    "quota-arabic-indic": (
        {"quota_limit_usd": "\u0665"},
        {"quota_limit_usd": [QUOTA_MESSAGE]},
    ),
    "quota-underscore": ({"quota_limit_usd": "1_000"}, {"quota_limit_usd": [QUOTA_MESSAGE]}),
    "quota-below-a-cent": (
        {"quota_limit_usd": Decimal("1E-400")},
        {
            "quota_limit_usd": [
                "A quota limit below 0.01 US dollars would be stored as 0, which means "
                "unlimited. Enter at least 0.01, or 0 for unlimited."
            ]
        },
    ),
    "quota-11-whole-digits": (
        {"quota_limit_usd": "12345678901"},
        {"quota_limit_usd": [QUOTA_MESSAGE]},
    ),
    "quota-too-many-digits": (
        {"quota_limit_usd": "1" * 27 + ".000"},
        {"quota_limit_usd": [QUOTA_MESSAGE]},
    ),
    "rate-zero": ({"rate_limit": "0/m"}, {"rate_limit": [RATE_LIMIT_MESSAGE]}),
    "rate-unit": ({"rate_limit": "60/x"}, {"rate_limit": [RATE_LIMIT_MESSAGE]}),
    "rate-text": ({"rate_limit": "abc"}, {"rate_limit": [RATE_LIMIT_MESSAGE]}),
    "rate-no-unit": ({"rate_limit": "60"}, {"rate_limit": [RATE_LIMIT_MESSAGE]}),
    "rate-negative": ({"rate_limit": "-1/m"}, {"rate_limit": [RATE_LIMIT_MESSAGE]}),
    "status-unknown": ({"status": "paused"}, {"status": ["Value 'paused' is not a valid choice."]}),
    "daily-negative": (
        {"daily_limit_usd": "-1"},
        {"daily_limit_usd": ["Daily limit cannot be negative. Use 0 for no daily limit."]},
    ),
    "daily-3-decimals": ({"daily_limit_usd": "1.234"}, {"daily_limit_usd": [DAILY_MESSAGE]}),
    "daily-text": ({"daily_limit_usd": "ten"}, {"daily_limit_usd": [DAILY_MESSAGE]}),
    "daily-float": ({"daily_limit_usd": 1.5}, {"daily_limit_usd": [DAILY_MESSAGE]}),
    "daily-below-a-cent": (
        {"daily_limit_usd": "0.001"},
        {
            "daily_limit_usd": [
                "A daily limit below 0.01 US dollars would be stored as 0, which means no "
                "daily limit. Enter at least 0.01, or 0 for no daily limit."
            ]
        },
    ),
    "daily-11-whole-digits": (
        {"daily_limit_usd": "12345678901"},
        {"daily_limit_usd": [DAILY_MESSAGE]},
    ),
    "weekly-negative": (
        {"weekly_limit_usd": -5},
        {"weekly_limit_usd": ["Weekly limit cannot be negative. Use 0 for no weekly limit."]},
    ),
    "weekly-exponent": ({"weekly_limit_usd": "1e3"}, {"weekly_limit_usd": [WEEKLY_MESSAGE]}),
    "monthly-negative": (
        {"monthly_limit_usd": "-0.01"},
        {"monthly_limit_usd": ["Monthly limit cannot be negative. Use 0 for no monthly limit."]},
    ),
    "monthly-nan": ({"monthly_limit_usd": "NaN"}, {"monthly_limit_usd": [MONTHLY_MESSAGE]}),
    "concurrency-negative": (
        {"max_concurrency": -1},
        {"max_concurrency": ["Max concurrent requests cannot be negative. Use 0 for unlimited."]},
    ),
    "concurrency-negative-text": (
        {"max_concurrency": "-3"},
        {"max_concurrency": ["Max concurrent requests cannot be negative. Use 0 for unlimited."]},
    ),
    "concurrency-too-many": (
        {"max_concurrency": 10_001},
        {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]},
    ),
    "concurrency-fraction": (
        {"max_concurrency": "2.5"},
        {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]},
    ),
    "concurrency-float": ({"max_concurrency": 2.0}, {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]}),
    "concurrency-text": (
        {"max_concurrency": "four"},
        {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]},
    ),
    "concurrency-bool": ({"max_concurrency": True}, {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]}),
    "concurrency-arabic-indic": (
        {"max_concurrency": "\u0665"},
        {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]},
    ),
    "concurrency-huge": (
        {"max_concurrency": "9" * 5000},
        {"max_concurrency": [MAX_CONCURRENCY_MESSAGE]},
    ),
}


# --- create ---------------------------------------------------------------------------------


def create(team, owner, group, actor=None, **settings):
    settings.setdefault("name", "claude-code-main")
    return services.api_key_create(
        team=team, owner=owner, group=group, actor=actor or owner, **settings
    )


def test_create_stores_the_key_and_writes_one_created_event(team, member, lead, group):
    issued = create(
        team,
        member,
        group,
        actor=lead,
        name="  laptop  ",
        allowed_ips="10.0.0.1, 2001:DB8::/32\n192.168.0.0/16",
        quota_limit_usd="25.50",
        rate_limit=" 60 / M ",
        expires_at=timezone.now() + timedelta(days=30),
        daily_limit_usd="5",
        weekly_limit_usd=" 20.50 ",
        monthly_limit_usd=Decimal("60.00"),
        max_concurrency=" 4 ",
    )
    key = ApiKey.objects.get(pk=issued.key.pk)
    assert (key.team, key.owner, key.group, key.created_by) == (team, member, group, lead)
    assert key.name == "laptop"
    assert key.status == ApiKey.Status.ENABLED
    assert key.allowed_ips == ["10.0.0.1", "2001:db8::/32", "192.168.0.0/16"]
    assert key.quota_limit_usd == Decimal("25.50")
    assert key.rate_limit == "60/m"
    assert (
        key.daily_limit_usd,
        key.weekly_limit_usd,
        key.monthly_limit_usd,
        key.max_concurrency,
    ) == (Decimal("5"), Decimal("20.50"), Decimal("60"), 4)
    assert key.spent_usd == 0
    assert key.last_used_at is None

    [event] = AuditEvent.objects.filter(subject_type="key")
    assert (event.key, event.team, event.actor, event.action) == (key, team, lead, "key.created")
    assert (event.subject_label, event.subject_prefix) == ("laptop", key.prefix)
    assert event.changes == {
        "name": [None, "laptop"],
        "group": [None, "CC Official Channel"],
        "status": [None, "enabled"],
        "allowed_ips": [None, ["10.0.0.1", "2001:db8::/32", "192.168.0.0/16"]],
        "quota_limit_usd": [None, "25.5"],
        "rate_limit": [None, "60/m"],
        "expires_at": [None, key.expires_at.astimezone(UTC).isoformat()],
        "daily_limit_usd": [None, "5"],
        "weekly_limit_usd": [None, "20.5"],
        "monthly_limit_usd": [None, "60"],
        "max_concurrency": [None, 4],
    }


def test_create_without_budgets_sets_none(team, member, group):
    key = ApiKey.objects.get(pk=create(team, member, group).key.pk)
    assert (
        key.daily_limit_usd,
        key.weekly_limit_usd,
        key.monthly_limit_usd,
        key.max_concurrency,
    ) == (0, 0, 0, 0)
    [event] = AuditEvent.objects.filter(subject_type="key")
    assert {field: event.changes[field] for field in services.WINDOW_LIMITS} == {
        "daily_limit_usd": [None, "0"],
        "weekly_limit_usd": [None, "0"],
        "monthly_limit_usd": [None, "0"],
    }
    assert event.changes["max_concurrency"] == [None, 0]


def test_a_daily_limit_above_the_weekly_and_monthly_ones_is_allowed(team, member, group):
    """It simply never binds: no error, it is stored as given."""
    key = create(
        team, member, group, daily_limit_usd="100", weekly_limit_usd="50", monthly_limit_usd="10"
    ).key
    saved = row(key)
    assert (saved["daily_limit_usd"], saved["weekly_limit_usd"], saved["monthly_limit_usd"]) == (
        Decimal("100"),
        Decimal("50"),
        Decimal("10"),
    )


@pytest.mark.parametrize(
    ("settings", "stored"),
    [
        ({"name": "n" * 100}, {"name": "n" * 100}),
        ({"name": " " + "n" * 100 + " "}, {"name": "n" * 100}),
        ({"quota_limit_usd": ""}, {"quota_limit_usd": Decimal("0")}),
        ({"quota_limit_usd": None}, {"quota_limit_usd": Decimal("0")}),
        ({"quota_limit_usd": 0}, {"quota_limit_usd": Decimal("0")}),
        ({"quota_limit_usd": "0.01"}, {"quota_limit_usd": Decimal("0.01")}),
        ({"quota_limit_usd": "25.000"}, {"quota_limit_usd": Decimal("25")}),
        (
            {"quota_limit_usd": Decimal("9999999999.99")},
            {"quota_limit_usd": Decimal("9999999999.99")},
        ),
        ({"rate_limit": "1/s"}, {"rate_limit": "1/s"}),
        ({"rate_limit": None}, {"rate_limit": ""}),
        ({"allowed_ips": ""}, {"allowed_ips": []}),
        ({"allowed_ips": None}, {"allowed_ips": []}),
        ({"allowed_ips": ["203.0.113.7", "203.0.113.7"]}, {"allowed_ips": ["203.0.113.7"]}),
        ({"status": "disabled"}, {"status": "disabled"}),
        ({"expires_at": None}, {"expires_at": None}),
        ({"daily_limit_usd": ""}, {"daily_limit_usd": Decimal("0")}),
        ({"daily_limit_usd": "0.00"}, {"daily_limit_usd": Decimal("0")}),
        ({"daily_limit_usd": "0.01"}, {"daily_limit_usd": Decimal("0.01")}),
        ({"weekly_limit_usd": 7}, {"weekly_limit_usd": Decimal("7")}),
        ({"monthly_limit_usd": "25.000"}, {"monthly_limit_usd": Decimal("25")}),
        (
            {"monthly_limit_usd": "9999999999.99"},
            {"monthly_limit_usd": Decimal("9999999999.99")},
        ),
        ({"max_concurrency": None}, {"max_concurrency": 0}),
        ({"max_concurrency": ""}, {"max_concurrency": 0}),
        ({"max_concurrency": "0"}, {"max_concurrency": 0}),
        ({"max_concurrency": 1}, {"max_concurrency": 1}),
        ({"max_concurrency": "10000"}, {"max_concurrency": 10_000}),
    ],
)
def test_create_accepts_and_normalises(team, member, group, settings, stored):
    issued = create(team, member, group, **settings)
    saved = row(issued.key)
    assert {field: saved[field] for field in stored} == stored


def test_create_makes_naive_expiry_aware(team, member, group):
    naive = (timezone.now() + timedelta(days=1)).replace(tzinfo=None)
    issued = create(team, member, group, expires_at=naive)
    assert row(issued.key)["expires_at"] == timezone.make_aware(naive)


@pytest.mark.parametrize(("settings", "errors"), BAD_SETTINGS.values(), ids=BAD_SETTINGS)
def test_create_refuses_bad_settings_and_writes_nothing(team, member, group, settings, errors):
    with pytest.raises(ValidationError) as caught:
        create(team, member, group, **settings)
    assert caught.value.message_dict == errors
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


@pytest.mark.parametrize(
    "expires_at",
    [
        pytest.param(lambda: timezone.now(), id="now"),
        pytest.param(lambda: timezone.now() - timedelta(days=1), id="yesterday"),
        pytest.param(lambda: timezone.now() - timedelta(seconds=1), id="a-second-ago"),
    ],
)
@pytest.mark.parametrize("status", ["enabled", "disabled"])
def test_create_refuses_an_expiry_that_is_not_in_the_future(
    team, member, group, expires_at, status
):
    with pytest.raises(ValidationError) as caught:
        create(team, member, group, status=status, expires_at=expires_at())
    assert caught.value.message_dict == {"expires_at": [FUTURE_MESSAGE]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_create_accepts_a_future_expiry(team, member, group):
    tomorrow = timezone.now() + timedelta(days=1)
    issued = create(team, member, group, expires_at=tomorrow)
    assert row(issued.key)["expires_at"] == tomorrow


def test_create_refuses_an_inactive_group(team, member):
    retired = GroupFactory(name="Retired", is_active=False)
    with pytest.raises(ValidationError) as caught:
        create(team, member, retired)
    assert caught.value.message_dict == {"group": ["Group “Retired” is not active."]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_create_refuses_a_group_outside_the_team_allow_list(team, member, group):
    team.allowed_groups.set([GroupFactory(name="Budget")])
    with pytest.raises(ValidationError) as caught:
        create(team, member, group)
    assert caught.value.message_dict == {
        "group": ["Group “CC Official Channel” is not available to team Acme."]
    }
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_create_accepts_a_group_on_the_allow_list(team, member, group):
    team.allowed_groups.set([group, GroupFactory(name="Budget")])
    assert create(team, member, group).key.group == group


def test_create_accepts_any_active_group_when_the_allow_list_is_empty(team, member):
    assert not team.allowed_groups.exists()
    anything = GroupFactory(name="Anything")
    assert create(team, member, anything).key.group == anything


def test_create_refuses_a_missing_group(team, member):
    with pytest.raises(ValidationError) as caught:
        create(team, member, None)
    assert caught.value.message_dict == {"group": ["Choose a group."]}
    assert not ApiKey.objects.exists()


def test_create_refuses_an_owner_outside_the_team(team, group, outsider, lead):
    with pytest.raises(ValidationError) as caught:
        create(team, outsider, group, actor=lead)
    assert caught.value.message_dict == {"owner": ["outsider is not a member of team Acme."]}
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="key").exists()


def test_create_reports_every_bad_field_at_once(team, member):
    retired = GroupFactory(name="Retired", is_active=False)
    with pytest.raises(ValidationError) as caught:
        create(
            team,
            member,
            retired,
            name="n" * 101,
            allowed_ips="example.com",
            quota_limit_usd="1.234",
            rate_limit="60",
            expires_at=timezone.now() - timedelta(days=1),
        )
    assert caught.value.message_dict == {
        "name": ["Name can be at most 100 characters."],
        "group": ["Group “Retired” is not active."],
        "allowed_ips": [bad_ip_message("example.com")],
        "quota_limit_usd": [QUOTA_MESSAGE],
        "rate_limit": [RATE_LIMIT_MESSAGE],
        "expires_at": [FUTURE_MESSAGE],
    }
    assert not ApiKey.objects.exists()


# --- update ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "errors"), BAD_SETTINGS.values(), ids=BAD_SETTINGS)
def test_update_refuses_bad_settings_and_writes_nothing(issued, lead, changes, errors):
    key = issued.key
    stored = row(key)
    with pytest.raises(ValidationError) as caught:
        services.api_key_update(key=key, actor=lead, **changes)
    assert caught.value.message_dict == errors
    assert row(key) == stored
    assert editable_values(key) == editable_values(ApiKey.objects.get(pk=key.pk))
    assert [event.action for event in events(key)] == ["key.created"]


def test_update_refuses_an_inactive_group_and_writes_nothing(issued, lead):
    stored = row(issued.key)
    with pytest.raises(ValidationError) as caught:
        services.api_key_update(
            key=issued.key, actor=lead, group=GroupFactory(name="Retired", is_active=False)
        )
    assert caught.value.message_dict == {"group": ["Group “Retired” is not active."]}
    assert row(issued.key) == stored
    assert issued.key.group.name == "CC Official Channel"
    assert [event.action for event in events(issued.key)] == ["key.created"]


def test_a_key_on_a_retired_group_stays_editable(issued, lead, group):
    group.is_active = False
    group.save()
    services.api_key_update(key=issued.key, actor=lead, group=group, name="renamed")
    issued.key.refresh_from_db()
    assert issued.key.name == "renamed"
    assert issued.key.group == group
    assert events(issued.key)[-1].changes == {"name": ["claude-code-main", "renamed"]}


def test_update_refuses_a_group_outside_the_team_allow_list(issued, team, lead, group):
    team.allowed_groups.set([group])
    stored = row(issued.key)
    with pytest.raises(ValidationError) as caught:
        services.api_key_update(key=issued.key, actor=lead, group=GroupFactory(name="Premium"))
    assert caught.value.message_dict == {
        "group": ["Group “Premium” is not available to team Acme."]
    }
    assert row(issued.key) == stored
    assert [event.action for event in events(issued.key)] == ["key.created"]


def test_update_writes_one_event_with_the_field_diff(issued, lead, team):
    premium = GroupFactory(name="Premium")
    team.allowed_groups.set([premium])
    key = services.api_key_update(
        key=issued.key,
        actor=lead,
        name="renamed",
        group=premium,
        allowed_ips="2001:DB8::1 10.0.0.0/24",
        quota_limit_usd="100",
        rate_limit="10/S",
        daily_limit_usd="3",
        monthly_limit_usd="30.5",
        max_concurrency="2",
    )
    saved = ApiKey.objects.get(pk=key.pk)
    assert (saved.name, saved.group, saved.rate_limit) == ("renamed", premium, "10/s")
    assert saved.allowed_ips == ["2001:db8::1", "10.0.0.0/24"]
    assert saved.quota_limit_usd == Decimal("100")
    _created, updated = events(key)
    assert (updated.action, updated.actor, updated.subject_label) == (
        "key.updated",
        lead,
        "renamed",
    )
    assert updated.changes == {
        "name": ["claude-code-main", "renamed"],
        "group": ["CC Official Channel", "Premium"],
        "allowed_ips": [[], ["2001:db8::1", "10.0.0.0/24"]],
        "quota_limit_usd": ["0", "100"],
        "rate_limit": ["", "10/s"],
        "daily_limit_usd": ["0", "3"],
        "monthly_limit_usd": ["0", "30.5"],
        "max_concurrency": [0, 2],
    }
    assert (saved.daily_limit_usd, saved.monthly_limit_usd, saved.max_concurrency) == (
        Decimal("3"),
        Decimal("30.5"),
        2,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"name": "claude-code-main"},
        {"name": "  claude-code-main  "},
        {"status": "enabled"},
        {"allowed_ips": "10.0.0.1, 2001:db8::/32"},
        {"allowed_ips": ["10.0.0.1", "2001:DB8::/32"]},
        {"quota_limit_usd": "12.5"},
        {"quota_limit_usd": Decimal("12.500")},
        {"rate_limit": " 60 / M "},
        {"expires_at": None},
        {"daily_limit_usd": "5.00"},
        {"weekly_limit_usd": ""},
        {"monthly_limit_usd": 0},
        {"max_concurrency": "3"},
        {"max_concurrency": 3},
    ],
    ids=repr,
)
def test_update_that_changes_nothing_writes_nothing(
    team, member, group, lead, changes, django_capture_on_commit_callbacks
):
    issued = make_key(
        team=team,
        owner=member,
        group=group,
        allowed_ips="10.0.0.1 2001:db8::/32",
        quota_limit_usd="12.50",
        rate_limit="60/m",
        daily_limit_usd="5",
        max_concurrency=3,
    )
    stored = row(issued.key)
    with django_capture_on_commit_callbacks() as callbacks:
        services.api_key_update(key=issued.key, actor=lead, **changes)
    assert row(issued.key) == stored
    assert [event.action for event in events(issued.key)] == ["key.created"]
    assert callbacks == []


def test_update_same_group_and_same_expiry_instant_writes_nothing(team, member, group, lead):
    expires_at = (timezone.now() + timedelta(days=3)).astimezone(UTC)
    issued = make_key(team=team, owner=member, group=group, expires_at=expires_at)
    stored = row(issued.key)
    elsewhere = expires_at.astimezone(dt_timezone(timedelta(hours=5, minutes=30)))
    services.api_key_update(key=issued.key, actor=lead, group=group, expires_at=elsewhere)
    assert row(issued.key) == stored
    assert [event.action for event in events(issued.key)] == ["key.created"]


def test_update_refuses_unknown_fields_and_writes_nothing(issued, lead):
    stored = row(issued.key)
    with pytest.raises(TypeError) as caught:
        services.api_key_update(key=issued.key, actor=lead, digest="0" * 64, spent_usd=0)
    assert str(caught.value) == (
        "api_key_update() got fields it cannot change: ['digest', 'spent_usd']"
    )
    assert row(issued.key) == stored
    assert [event.action for event in events(issued.key)] == ["key.created"]


def test_update_reports_every_bad_field_at_once_and_writes_nothing(issued, lead):
    stored = row(issued.key)
    with pytest.raises(ValidationError) as caught:
        services.api_key_update(
            key=issued.key,
            actor=lead,
            name="",
            allowed_ips="::g",
            quota_limit_usd="-5",
            rate_limit="60/x",
            expires_at=timezone.now() - timedelta(minutes=1),
            daily_limit_usd="1.001",
            max_concurrency="lots",
        )
    assert caught.value.message_dict == {
        "name": ["Name is required."],
        "allowed_ips": [bad_ip_message("::g")],
        "quota_limit_usd": ["Quota limit cannot be negative. Use 0 for unlimited."],
        "rate_limit": [RATE_LIMIT_MESSAGE],
        "expires_at": [FUTURE_MESSAGE],
        "daily_limit_usd": [DAILY_MESSAGE],
        "max_concurrency": [MAX_CONCURRENCY_MESSAGE],
    }
    assert row(issued.key) == stored
    assert [event.action for event in events(issued.key)] == ["key.created"]


# --- status ---------------------------------------------------------------------------------


def test_disable_then_enable_write_status_events(issued, lead):
    services.api_key_disable(key=issued.key, actor=lead)
    assert row(issued.key)["status"] == "disabled"
    services.api_key_enable(key=issued.key, actor=lead)
    assert row(issued.key)["status"] == "enabled"
    _, disabled, enabled = events(issued.key)
    assert (disabled.action, disabled.actor, disabled.changes) == (
        "key.disabled",
        lead,
        {"status": ["enabled", "disabled"]},
    )
    assert (enabled.action, enabled.actor, enabled.changes) == (
        "key.enabled",
        lead,
        {"status": ["disabled", "enabled"]},
    )


def test_disabling_a_disabled_key_writes_nothing(issued, lead):
    services.api_key_disable(key=issued.key, actor=lead)
    services.api_key_disable(key=issued.key, actor=lead)
    assert [event.action for event in events(issued.key)] == ["key.created", "key.disabled"]


def test_status_with_other_fields_is_an_update(issued, lead):
    services.api_key_update(key=issued.key, actor=lead, status="disabled", name="old laptop")
    event = events(issued.key)[-1]
    assert event.action == "key.updated"
    assert event.changes == {
        "name": ["claude-code-main", "old laptop"],
        "status": ["enabled", "disabled"],
    }


# --- expiry on update -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expires_at",
    [
        pytest.param(lambda: timezone.now(), id="now"),
        pytest.param(lambda: timezone.now() - timedelta(days=1), id="yesterday"),
    ],
)
def test_update_refuses_a_new_expiry_that_is_not_in_the_future(issued, lead, expires_at):
    stored = row(issued.key)
    with pytest.raises(ValidationError) as caught:
        services.api_key_update(key=issued.key, actor=lead, expires_at=expires_at())
    assert caught.value.message_dict == {"expires_at": [FUTURE_MESSAGE]}
    assert row(issued.key) == stored
    assert [event.action for event in events(issued.key)] == ["key.created"]


def test_update_accepts_a_future_expiry(issued, lead):
    tomorrow = timezone.now() + timedelta(days=1)
    services.api_key_update(key=issued.key, actor=lead, expires_at=tomorrow)
    assert row(issued.key)["expires_at"] == tomorrow
    assert events(issued.key)[-1].changes == {
        "expires_at": [None, tomorrow.astimezone(UTC).isoformat()]
    }


@pytest.mark.parametrize("status", ["enabled", "disabled"])
def test_editing_an_expired_key_may_keep_its_expiry(issued, lead, status):
    key = make_expired(issued.key, status=status)
    passed = key.expires_at
    services.api_key_update(key=key, actor=lead, name="renamed", expires_at=passed)
    saved = row(key)
    assert (saved["name"], saved["expires_at"], saved["status"]) == ("renamed", passed, status)
    assert events(key)[-1].changes == {"name": ["claude-code-main", "renamed"]}


def test_editing_an_expired_key_may_keep_its_expiry_given_in_another_time_zone(issued, lead):
    key = make_expired(issued.key)
    same_instant = key.expires_at.astimezone(dt_timezone(timedelta(hours=-7)))
    services.api_key_update(key=key, actor=lead, name="renamed", expires_at=same_instant)
    assert events(key)[-1].changes == {"name": ["claude-code-main", "renamed"]}


def test_editing_an_expired_key_may_clear_its_expiry(issued, lead):
    key = make_expired(issued.key)
    passed = key.expires_at
    services.api_key_update(key=key, actor=lead, expires_at=None)
    assert row(key)["expires_at"] is None
    assert events(key)[-1].changes == {"expires_at": [passed.astimezone(UTC).isoformat(), None]}


def test_editing_an_expired_key_refuses_another_past_expiry(issued, lead):
    key = make_expired(issued.key)
    stored = row(key)
    with pytest.raises(ValidationError) as caught:
        services.api_key_update(key=key, actor=lead, expires_at=key.expires_at - timedelta(days=1))
    assert caught.value.message_dict == {"expires_at": [FUTURE_MESSAGE]}
    assert row(key) == stored
    assert [event.action for event in events(key)] == ["key.created"]


@pytest.mark.parametrize("via", ["enable", "update", "update-keeping-expiry"])
def test_re_enabling_an_expired_key_without_a_new_expiry_is_refused(issued, lead, via):
    key = make_expired(issued.key)
    stored = row(key)
    with pytest.raises(ValidationError) as caught:
        if via == "enable":
            services.api_key_enable(key=key, actor=lead)
        elif via == "update":
            services.api_key_update(key=key, actor=lead, status="enabled", name="back")
        else:
            services.api_key_update(
                key=key, actor=lead, status="enabled", expires_at=key.expires_at
            )
    assert caught.value.message_dict == {"expires_at": [expired_message(stored["expires_at"])]}
    assert row(key) == stored
    assert key.status == "disabled"
    assert [event.action for event in events(key)] == ["key.created"]


@pytest.mark.parametrize(
    "new_expiry", [None, timezone.now() + timedelta(days=365)], ids=["cleared", "extended"]
)
def test_re_enabling_an_expired_key_with_a_new_expiry_is_allowed(issued, lead, new_expiry):
    key = make_expired(issued.key)
    passed = key.expires_at
    services.api_key_update(key=key, actor=lead, status="enabled", expires_at=new_expiry)
    saved = row(key)
    assert (saved["status"], saved["expires_at"]) == ("enabled", new_expiry)
    event = events(key)[-1]
    assert (event.action, event.actor) == ("key.updated", lead)
    assert event.changes == {
        "status": ["disabled", "enabled"],
        "expires_at": [
            passed.astimezone(UTC).isoformat(),
            new_expiry.astimezone(UTC).isoformat() if new_expiry else None,
        ],
    }


# --- expire (the system) --------------------------------------------------------------------


def test_expire_disables_an_expired_key_as_the_system(issued):
    key = make_expired(issued.key, status=ApiKey.Status.ENABLED)
    assert services.api_key_expire(key=key) is True
    assert row(key)["status"] == "disabled"
    assert key.status == "disabled"
    event = events(key)[-1]
    assert (event.action, event.actor) == ("key.expired", None)
    assert event.changes == {"status": ["enabled", "disabled"]}


@pytest.mark.parametrize("state", ["not-expired", "never-expires", "expired-and-disabled"], ids=str)
def test_expire_leaves_other_keys_alone(issued, state):
    key = issued.key
    if state == "not-expired":
        services.api_key_update(
            key=key, actor=None, expires_at=timezone.now() + timedelta(minutes=5)
        )
    elif state == "expired-and-disabled":
        make_expired(key)
    stored = row(key)
    before = len(events(key))
    assert services.api_key_expire(key=key) is False
    assert row(key) == stored
    assert len(events(key)) == before


# --- rotate ---------------------------------------------------------------------------------


def test_rotate_replaces_the_secret_and_keeps_everything_else(issued, lead):
    key = issued.key
    ApiKey.objects.filter(pk=key.pk).update(spent_usd=Decimal("3.25"))
    key.refresh_from_db()
    before = row(key)
    rotated = services.api_key_rotate(key=key, actor=lead)

    assert rotated.key.pk == key.pk
    assert rotated.plaintext != issued.plaintext
    assert not ApiKey.objects.filter(digest=digest_key(issued.plaintext)).exists()
    assert ApiKey.objects.get(digest=digest_key(rotated.plaintext)).pk == key.pk
    after = row(key)
    assert after["prefix"] == rotated.plaintext[: len(after["prefix"])]
    unchanged = set(before) - {"digest", "prefix", "updated_at"}
    assert {f: after[f] for f in unchanged} == {f: before[f] for f in unchanged}

    event = events(key)[-1]
    assert (event.action, event.actor, event.subject_prefix) == (
        "key.rotated",
        lead,
        after["prefix"],
    )
    assert event.changes == {"prefix": [before["prefix"], after["prefix"]]}


# --- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_key_and_keeps_its_audit_trail(issued, lead, team):
    key_id, prefix = issued.key.pk, issued.key.prefix
    services.api_key_delete(key=issued.key, actor=lead)
    assert not ApiKey.objects.filter(pk=key_id).exists()
    deleted = AuditEvent.objects.get(action="key.deleted")
    assert deleted.key is None
    assert (deleted.team, deleted.actor) == (team, lead)
    assert (deleted.subject_label, deleted.subject_prefix, deleted.changes) == (
        "claude-code-main",
        prefix,
        {},
    )
    created = AuditEvent.objects.get(action="key.created")
    assert created.key is None
    assert created.subject_prefix == prefix


# --- cache invalidation ---------------------------------------------------------------------


def _expired_enabled(issued):
    return make_expired(issued.key, status=ApiKey.Status.ENABLED)


KEY_CHANGES = {
    "update": lambda key, actor: services.api_key_update(key=key, actor=actor, name="x"),
    "disable": lambda key, actor: services.api_key_disable(key=key, actor=actor),
    "rotate": lambda key, actor: services.api_key_rotate(key=key, actor=actor),
    "delete": lambda key, actor: services.api_key_delete(key=key, actor=actor),
    "expire": lambda key, actor: services.api_key_expire(key=key),
}


def _prepare(issued, change):
    if change == "expire":
        return _expired_enabled(issued)
    return issued.key


@pytest.mark.parametrize("change", KEY_CHANGES)
def test_key_changes_drop_the_cached_state_after_commit(
    issued, lead, change, django_capture_on_commit_callbacks
):
    key = _prepare(issued, change)
    cache_key = snapshot_cache_key(key.digest)
    cache.set(cache_key, {"status": "enabled"})
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        KEY_CHANGES[change](key, lead)
        # Not before the commit: a request racing the transaction would reload the old state.
        assert cache.get(cache_key) == {"status": "enabled"}
    assert len(callbacks) == 1
    assert cache.get(cache_key) is None


def test_enable_drops_the_cached_state(issued, lead, django_capture_on_commit_callbacks):
    services.api_key_disable(key=issued.key, actor=lead)
    cache_key = snapshot_cache_key(issued.key.digest)
    cache.set(cache_key, {"status": "disabled"})
    with django_capture_on_commit_callbacks(execute=True):
        services.api_key_enable(key=issued.key, actor=lead)
    assert cache.get(cache_key) is None


@pytest.mark.parametrize("change", KEY_CHANGES)
def test_rolled_back_key_changes_keep_the_cached_state(
    issued, lead, change, django_capture_on_commit_callbacks, monkeypatch
):
    key = _prepare(issued, change)
    cache_key = snapshot_cache_key(key.digest)
    cache.set(cache_key, {"status": "enabled"})
    key_id, stored = key.pk, row(key)

    # The services are durable actions no caller can wrap: the work fails inside the action's
    # own transaction instead, once the invalidation has been asked for.
    def invalidate_then_fail(digests):
        invalidate_key_state(digests)
        raise RuntimeError("the surrounding work failed")

    monkeypatch.setattr("keys.services.keys.invalidate_key_state", invalidate_then_fail)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError, match="the surrounding work failed"),
    ):
        KEY_CHANGES[change](key, lead)
    assert callbacks == []
    assert cache.get(cache_key) == {"status": "enabled"}
    assert ApiKey.objects.filter(pk=key_id).values().get() == stored
    assert list(AuditEvent.objects.filter(subject_type="key").values_list("action", flat=True)) == [
        "key.created"
    ]


@pytest.mark.django_db(transaction=True)
def test_invalidation_waits_for_a_real_commit_and_skips_a_real_rollback(team, member, group):
    lead = MembershipFactory(team=team, role=Membership.Role.LEAD).user
    issued = make_key(team=team, owner=member, group=group)
    cache_key = snapshot_cache_key(issued.key.digest)

    cache.set(cache_key, "stale")
    # The services are durable actions that refuse to nest, so their non-durable core is what
    # runs inside a transaction that commits or rolls back here.
    with pytest.raises(RuntimeError, match="rolled back"), transaction.atomic():
        disable_inside(key=issued.key, actor=lead)
        raise RuntimeError("rolled back")
    assert cache.get(cache_key) == "stale"
    assert ApiKey.objects.get(pk=issued.key.pk).status == "enabled"
    assert not AuditEvent.objects.filter(action="key.disabled").exists()

    issued.key.refresh_from_db()
    with transaction.atomic():
        disable_inside(key=issued.key, actor=lead)
        assert cache.get(cache_key) == "stale"
    assert cache.get(cache_key) is None
    assert ApiKey.objects.get(pk=issued.key.pk).status == "disabled"


def test_team_allow_list_change_drops_its_keys_cached_state(
    issued, team, group, django_capture_on_commit_callbacks
):
    cache_key = snapshot_cache_key(issued.key.digest)
    cache.set(cache_key, "stale")
    with django_capture_on_commit_callbacks(execute=True):
        services.team_set_allowed_groups(team=team, groups=[group], actor=None)
    assert list(team.allowed_groups.all()) == [group]
    assert cache.get(cache_key) is None


def test_group_save_drops_its_keys_cached_state(issued, group, django_capture_on_commit_callbacks):
    other = make_key(group=GroupFactory(name="Other"))
    cache.set(snapshot_cache_key(issued.key.digest), "stale")
    cache.set(snapshot_cache_key(other.key.digest), "fresh")
    group.multiplier = Decimal("0.5")
    with django_capture_on_commit_callbacks(execute=True):
        services.group_save(group=group, actor=None)
    assert cache.get(snapshot_cache_key(issued.key.digest)) is None
    assert cache.get(snapshot_cache_key(other.key.digest)) == "fresh"


def test_group_save_validates_and_writes_nothing_on_failure(group):
    group.multiplier = Decimal("0")
    with pytest.raises(ValidationError) as caught:
        services.group_save(group=group, actor=None)
    assert caught.value.message_dict == {
        "multiplier": ["The multiplier must be greater than 0 (for example 0.25 or 1.0)."]
    }
    group.refresh_from_db()
    assert group.multiplier == Decimal("1.0")


# --- memberships ----------------------------------------------------------------------------


def test_membership_add(team, lead):
    user = UserFactory(username="newcomer")
    membership = services.membership_add(team=team, user=user, role="member", actor=lead)
    assert Membership.objects.get(team=team, user=user) == membership
    assert membership.role == "member"


def test_membership_add_refuses_a_duplicate(team, member, lead):
    with pytest.raises(ValidationError) as caught:
        services.membership_add(team=team, user=member, role="lead", actor=lead)
    assert caught.value.message_dict == {"user": ["member is already a member of Acme."]}
    assert Membership.objects.get(team=team, user=member).role == "member"
    assert Membership.objects.filter(team=team).count() == 2


def test_membership_add_refuses_an_unknown_role(team, lead):
    user = UserFactory(username="newcomer")
    with pytest.raises(ValidationError) as caught:
        services.membership_add(team=team, user=user, role="owner", actor=lead)
    assert caught.value.message_dict == {"role": ["Value 'owner' is not a valid choice."]}
    assert not Membership.objects.filter(user=user).exists()


def test_same_user_may_join_several_teams(team, other_team, member, outsider):
    services.membership_add(team=other_team, user=member, role="member", actor=outsider)
    assert set(Membership.objects.filter(user=member).values_list("team__slug", flat=True)) == {
        "acme",
        "globex",
    }


def test_membership_set_role(team, member, lead):
    membership = Membership.objects.get(team=team, user=member)
    services.membership_set_role(membership=membership, role="lead", actor=lead)
    assert Membership.objects.get(pk=membership.pk).role == "lead"
    lead_membership = Membership.objects.get(team=team, user=lead)
    services.membership_set_role(membership=lead_membership, role="member", actor=member)
    assert Membership.objects.get(pk=lead_membership.pk).role == "member"


def test_membership_set_role_refuses_an_unknown_role(team, member, lead):
    membership = Membership.objects.get(team=team, user=member)
    with pytest.raises(ValidationError) as caught:
        services.membership_set_role(membership=membership, role="boss", actor=lead)
    assert caught.value.message_dict == {"role": ["Value 'boss' is not a valid choice."]}
    assert Membership.objects.get(pk=membership.pk).role == "member"


def test_cannot_demote_the_last_lead(team, lead, member):
    membership = Membership.objects.get(team=team, user=lead)
    with pytest.raises(ValidationError) as caught:
        services.membership_set_role(membership=membership, role="member", actor=lead)
    assert caught.value.message_dict == {
        "role": ["Cannot change the role of the last lead of Acme: add another first."]
    }
    assert Membership.objects.get(pk=membership.pk).role == "lead"


def test_a_lead_of_another_team_does_not_count(team, lead, outsider):
    membership = Membership.objects.get(team=team, user=lead)
    with pytest.raises(ValidationError):
        services.membership_set_role(membership=membership, role="member", actor=lead)
    with pytest.raises(ValidationError):
        services.membership_remove(membership=membership, actor=lead)
    assert Membership.objects.get(pk=membership.pk).role == "lead"


def test_cannot_remove_the_last_lead(team, lead, member):
    issued = make_key(team=team, owner=lead, name="lead key")
    membership = Membership.objects.get(team=team, user=lead)
    with pytest.raises(ValidationError) as caught:
        services.membership_remove(membership=membership, actor=lead)
    assert caught.value.message_dict == {
        "role": ["Cannot remove the last lead of Acme: add another first."]
    }
    assert Membership.objects.filter(pk=membership.pk).exists()
    assert row(issued.key)["status"] == "enabled"
    assert [event.action for event in events(issued.key)] == ["key.created"]


def test_a_lead_can_go_when_another_lead_stays(team, lead):
    second = MembershipFactory(team=team, role=Membership.Role.LEAD).user
    membership = Membership.objects.get(team=team, user=lead)
    assert services.membership_remove(membership=membership, actor=second) == 0
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_removing_a_member_disables_their_keys_in_that_team_only(
    team, other_team, member, lead, outsider, group, django_capture_on_commit_callbacks
):
    first = make_key(team=team, owner=member, group=group, name="first")
    second = make_key(team=team, owner=member, group=group, name="second")
    already_off = make_key(team=team, owner=member, group=group, name="off")
    services.api_key_disable(key=already_off.key, actor=member)
    leads_key = make_key(team=team, owner=lead, group=group, name="lead's")
    MembershipFactory(team=other_team, user=member)
    elsewhere = make_key(team=other_team, owner=member, group=group, name="elsewhere")
    for issued in (first, second, elsewhere, leads_key):
        cache.set(snapshot_cache_key(issued.key.digest), "stale")

    membership = Membership.objects.get(team=team, user=member)
    with django_capture_on_commit_callbacks(execute=True):
        disabled = services.membership_remove(membership=membership, actor=lead)

    assert disabled == 2
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert Membership.objects.filter(team=other_team, user=member).exists()
    for issued in (first, second):
        assert row(issued.key)["status"] == "disabled"
        assert cache.get(snapshot_cache_key(issued.key.digest)) is None
        _created, event = events(issued.key)
        assert (event.action, event.actor) == ("key.disabled", lead)
        assert event.changes == {"status": ["enabled", "disabled"]}
    assert [event.action for event in events(already_off.key)] == ["key.created", "key.disabled"]
    for untouched in (elsewhere, leads_key):
        assert row(untouched.key)["status"] == "enabled"
        assert [event.action for event in events(untouched.key)] == ["key.created"]
        assert cache.get(snapshot_cache_key(untouched.key.digest)) == "stale"
    assert ApiKey.objects.filter(owner=member).count() == 4


def test_removing_a_member_without_keys(team, member, lead):
    membership = Membership.objects.get(team=team, user=member)
    assert services.membership_remove(membership=membership, actor=lead) == 0
    assert not Membership.objects.filter(pk=membership.pk).exists()


# --- the team's audit trail: one AuditEvent per membership action ----------------------------


def team_events(team) -> list[tuple]:
    return list(
        AuditEvent.objects.filter(team=team)
        .order_by("id")
        .values_list("action", "actor__username", "subject_label", "changes")
    )


def test_each_membership_action_writes_one_team_event(team, lead):
    newbie = UserFactory(username="newbie")

    membership = services.membership_add(team=team, user=newbie, role="member", actor=lead)
    services.membership_set_role(membership=membership, role="lead", actor=lead)
    services.membership_set_role(membership=membership, role="lead", actor=lead)  # no change
    services.membership_remove(membership=membership, actor=None)

    assert team_events(team) == [
        ("member.added", "lead", "newbie", {"role": [None, "member"]}),
        ("member.role_changed", "lead", "newbie", {"role": ["member", "lead"]}),
        ("member.removed", None, "newbie", {"role": ["lead", None]}),
    ]


def test_a_refused_membership_change_writes_no_team_event(team, lead):
    membership = Membership.objects.get(team=team, user=lead)

    with pytest.raises(ValidationError):
        services.membership_set_role(membership=membership, role="member", actor=lead)
    with pytest.raises(ValidationError):
        services.membership_remove(membership=membership, actor=lead)
    with pytest.raises(ValidationError):
        services.membership_add(team=team, user=lead, role="member", actor=lead)

    assert team_events(team) == []


def test_changing_the_allowed_groups_writes_one_team_event(team, lead):
    budget, premium = GroupFactory(name="Budget"), GroupFactory(name="Premium")

    services.team_set_allowed_groups(team=team, groups=[premium, budget], actor=lead)
    services.team_set_allowed_groups(team=team, groups=[budget, premium], actor=lead)  # same
    services.team_set_allowed_groups(team=team, groups=[], actor=None)

    assert team_events(team) == [
        (
            "team.allowed_groups_changed",
            "lead",
            team.name,
            {"allowed_groups": [[], ["Budget", "Premium"]]},
        ),
        (
            "team.allowed_groups_changed",
            None,
            team.name,
            {"allowed_groups": [["Budget", "Premium"], []]},
        ),
    ]
