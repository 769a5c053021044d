"""billing.limits: every limit in force on a key, spent against the gate's running totals, in
the team's time zone; and the tightest of them. billing.selectors.key_daily_charges."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings

from billing import limits as limits_module
from billing.limits import LimitKind, LimitStatus, key_limits, key_limits_by_key, tightest
from billing.selectors import key_daily_charges
from billing.services import settle_usage
from keys.models import ApiKey, Membership
from tests.billing.factories import UsageEventFactory
from tests.factories import make_key

CHICAGO = "America/Chicago"
# Monday 7 December 2026, noon in Chicago (CST, UTC-6).
NOW = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def set_limits(key: ApiKey, **limits) -> ApiKey:
    """The write side (forms, API, services) is another change's: set the columns directly."""
    if limits:
        ApiKey.objects.filter(pk=key.pk).update(**limits)
    return ApiKey.objects.select_related("team", "owner").get(pk=key.pk)


def spend(key: ApiKey, amount: str, at: datetime, model: str = "claude-sonnet-4-5") -> None:
    UsageEventFactory(key=key, charged_usd=Decimal(amount), created_at=at, model=model)


@pytest.fixture
def chicago(team):
    team.time_zone = CHICAGO
    team.save(update_fields=["time_zone"])
    return team


@pytest.fixture
def key(chicago, member, group):
    return make_key(team=chicago, owner=member, group=group, actor=member).key


def by_kind(found: list[LimitStatus]) -> dict[LimitKind, LimitStatus]:
    return {limit.kind: limit for limit in found}


def test_no_limit_in_force_is_an_empty_list(key):
    spend(key, "3", NOW - timedelta(hours=1))

    assert key_limits(set_limits(key), now=NOW) == []
    assert tightest([]) is None


def test_windows_keep_the_teams_clock_and_leave_last_months_spend_out(key):
    # Today in Chicago: Monday 7 December, 10:00 CST.
    spend(key, "2", datetime(2026, 12, 7, 16, 0, tzinfo=UTC))
    # Sunday 6 December 23:30 CST: the same UTC date as today, yet yesterday in Chicago and
    # last week (weeks start on Monday).
    spend(key, "3", datetime(2026, 12, 7, 5, 30, tzinfo=UTC))
    # Monday 30 November 23:00 CST, already 1 December in UTC: last month in Chicago.
    spend(key, "4", datetime(2026, 12, 1, 5, 0, tzinfo=UTC))
    key = set_limits(
        key,
        quota_limit_usd=Decimal("100"),
        daily_limit_usd=Decimal("10"),
        weekly_limit_usd=Decimal("50"),
        monthly_limit_usd=Decimal("80"),
    )

    found = key_limits(key, now=NOW)

    assert found == [
        LimitStatus(
            LimitKind.QUOTA,
            "Quota",
            Decimal("9.00000000"),
            Decimal("100.00"),
            Decimal("91.00000000"),
            None,
            9,
        ),
        LimitStatus(
            LimitKind.DAILY,
            "Daily limit",
            Decimal("2.00000000"),
            Decimal("10.00"),
            Decimal("8.00000000"),
            datetime(2026, 12, 8, 6, 0, tzinfo=UTC),
            20,
        ),
        LimitStatus(
            LimitKind.WEEKLY,
            "Weekly limit",
            Decimal("2.00000000"),
            Decimal("50.00"),
            Decimal("48.00000000"),
            datetime(2026, 12, 14, 6, 0, tzinfo=UTC),
            4,
        ),
        LimitStatus(
            LimitKind.MONTHLY,
            "Monthly limit",
            Decimal("5.00000000"),
            Decimal("80.00"),
            Decimal("75.00000000"),
            datetime(2027, 1, 1, 6, 0, tzinfo=UTC),
            6,
        ),
    ]
    assert tightest(found).kind is LimitKind.DAILY


def test_spend_not_yet_settled_counts_as_the_gate_sees_it(key):
    spend(key, "1.5", NOW - timedelta(hours=1))
    spend(key, "2.5", NOW - timedelta(hours=2))
    settle_usage()
    spend(key, "0.25", NOW - timedelta(minutes=5))  # Not settled: in the running total only.
    key = set_limits(key, quota_limit_usd=Decimal("10"), daily_limit_usd=Decimal("5"))

    found = by_kind(key_limits(key, now=NOW))

    assert found[LimitKind.QUOTA].spent_usd == Decimal("4.25")
    assert found[LimitKind.DAILY].spent_usd == Decimal("4.25")


def test_an_overshot_limit_has_nothing_left_and_a_full_bar(key):
    spend(key, "10.40", NOW - timedelta(hours=1))
    key = set_limits(key, daily_limit_usd=Decimal("10"))

    [daily] = key_limits(key, now=NOW)

    assert (daily.spent_usd, daily.remaining_usd, daily.percent) == (
        Decimal("10.40"),
        Decimal(0),
        100,
    )


def test_member_cap_and_team_budget_only_when_set(key, chicago, member, lead, group):
    other_own_key = make_key(team=chicago, owner=member, group=group, name="second").key
    leads_key = make_key(team=chicago, owner=lead, group=group, name="lead's").key
    spend(key, "1", NOW - timedelta(hours=1))
    spend(other_own_key, "2", NOW - timedelta(hours=1))
    spend(leads_key, "4", NOW - timedelta(hours=1))
    spend(leads_key, "8", datetime(2026, 11, 15, tzinfo=UTC))  # Last month.

    assert key_limits(key, now=NOW) == []

    Membership.objects.filter(team=chicago, user=member).update(monthly_limit_usd=Decimal("20"))
    chicago.monthly_budget_usd = Decimal("500")
    chicago.save(update_fields=["monthly_budget_usd"])
    key = set_limits(key)

    as_owner = key_limits(key, now=NOW)
    as_lead = key_limits(key, now=NOW, viewer=lead)

    assert [(limit.kind, limit.label, limit.spent_usd, limit.limit_usd) for limit in as_owner] == [
        (LimitKind.MEMBER_MONTHLY, "Your monthly cap in team Acme", Decimal("3"), Decimal("20")),
        (LimitKind.TEAM_MONTHLY, "Team Acme's monthly budget", Decimal("7"), Decimal("500")),
    ]
    assert [limit.label for limit in as_lead] == [
        "member's monthly cap",
        "Team Acme's monthly budget",
    ]
    assert key_limits(key, now=NOW, viewer=member) == as_owner
    assert {limit.resets_at for limit in as_owner} == {datetime(2027, 1, 1, 6, 0, tzinfo=UTC)}


def test_an_owner_who_left_the_team_has_no_cap_there(key, chicago, member):
    Membership.objects.filter(team=chicago, user=member).update(monthly_limit_usd=Decimal("20"))
    assert [limit.kind for limit in key_limits(set_limits(key), now=NOW)] == [
        LimitKind.MEMBER_MONTHLY
    ]

    Membership.objects.filter(team=chicago, user=member).delete()

    assert key_limits(set_limits(key), now=NOW) == []


def status(kind, remaining: str, limit: str = "100", resets_at=None) -> LimitStatus:
    left = Decimal(remaining)
    return LimitStatus(kind, str(kind), Decimal(limit) - left, Decimal(limit), left, resets_at, 0)


def test_the_tightest_limit_is_the_least_money_left_not_the_fullest_bar():
    daily = status(LimitKind.DAILY, "4", limit="5", resets_at=NOW)  # 20 % used
    monthly = status(LimitKind.MONTHLY, "3", limit="1000", resets_at=NOW + timedelta(days=20))

    assert tightest([daily, monthly]) is monthly


def test_of_limits_as_tight_the_one_that_resets_last_is_the_tightest():
    quota = status(LimitKind.QUOTA, "0")
    daily = status(LimitKind.DAILY, "0", resets_at=NOW)
    monthly = status(LimitKind.MONTHLY, "0", resets_at=NOW + timedelta(days=20))

    assert tightest([daily, monthly]) is monthly
    assert tightest([daily, monthly, quota]) is quota


def test_a_page_of_keys_reads_each_running_total_once(
    key, chicago, member, lead, group, monkeypatch
):
    keys = [key] + [
        make_key(team=chicago, owner=member, group=group, name=f"k{number}").key
        for number in range(3)
    ]
    leads_key = make_key(team=chicago, owner=lead, group=group, name="lead's").key
    ApiKey.objects.filter(team=chicago).update(daily_limit_usd=Decimal("5"))
    Membership.objects.filter(team=chicago).update(monthly_limit_usd=Decimal("20"))
    chicago.monthly_budget_usd = Decimal("500")
    chicago.save(update_fields=["monthly_budget_usd"])
    page = list(ApiKey.objects.filter(team=chicago).select_related("team", "owner"))
    read = []
    monkeypatch.setattr(
        limits_module, "counter_spend", lambda counter: read.append(counter.name) or 0
    )

    found = key_limits_by_key(page, now=NOW, viewer=lead)

    # Five daily totals, two members' caps, one team budget.
    assert len(read) == len(set(read)) == 8
    assert set(found) == {key.pk for key in keys} | {leads_key.pk}
    assert [limit.kind for limit in found[leads_key.pk]] == [
        LimitKind.DAILY,
        LimitKind.MEMBER_MONTHLY,
        LimitKind.TEAM_MONTHLY,
    ]
    assert found[leads_key.pk][1].label == "Your monthly cap in team Acme"
    assert found[key.pk][1].label == "member's monthly cap"


# --- a key's charges per day -------------------------------------------------------------


def test_daily_charges_in_a_non_utc_team_zone_come_from_the_events(key):
    assert settings.TIME_ZONE != CHICAGO
    spend(key, "1.25", datetime(2026, 12, 7, 5, 30, tzinfo=UTC))  # 6 Dec, 23:30 CST
    spend(key, "0.75", datetime(2026, 12, 7, 5, 45, tzinfo=UTC), model="gpt-4o")
    spend(key, "2", datetime(2026, 12, 7, 16, 0, tzinfo=UTC))  # 7 Dec, 10:00 CST
    spend(key, "9", datetime(2026, 12, 8, 6, 0, tzinfo=UTC))  # 8 Dec, 00:00 CST: out of range

    charges = key_daily_charges(key=key, start=date(2026, 12, 6), end=date(2026, 12, 8))

    assert charges == {
        date(2026, 12, 6): {"claude-sonnet-4-5": Decimal("1.25"), "gpt-4o": Decimal("0.75")},
        date(2026, 12, 7): {"claude-sonnet-4-5": Decimal("2")},
    }


def test_daily_charges_in_the_rollups_zone_come_from_the_rollups(team, member, group):
    assert team.time_zone == settings.TIME_ZONE == "UTC"
    key = make_key(team=team, owner=member, group=group).key
    other = make_key(team=team, owner=member, group=group, name="other").key
    spend(key, "1.25", datetime(2026, 12, 6, 23, 30, tzinfo=UTC))
    spend(key, "2", datetime(2026, 12, 7, 1, 0, tzinfo=UTC))
    spend(other, "5", datetime(2026, 12, 7, 1, 0, tzinfo=UTC))
    settle_usage()
    # An unsettled row (the relay's rows are written settled) is in no rollup yet: left out,
    # which shows that this path sums the rollups.
    spend(key, "100", datetime(2026, 12, 7, 2, 0, tzinfo=UTC))

    charges = key_daily_charges(key=key, start=date(2026, 12, 1), end=date(2026, 12, 31))

    assert charges == {
        date(2026, 12, 6): {"claude-sonnet-4-5": Decimal("1.25")},
        date(2026, 12, 7): {"claude-sonnet-4-5": Decimal("2")},
    }
