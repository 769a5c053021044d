from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageDaily, UsageEvent
from billing.selectors import (
    DaySpend,
    KeySpend,
    ModelSpend,
    daily_spend,
    spend_by_key,
    spend_by_model,
    usage_daily_list_for,
    usage_event_list_for,
)
from billing.services import settle_usage
from keys.services import api_key_delete

from ..factories import make_key
from .factories import UsageEventFactory

ZERO = Decimal("0")


def at(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(12)))


@pytest.fixture
def today():
    return timezone.localdate()


@pytest.fixture
def keys(team, member, group):
    return (
        make_key(team=team, owner=member, group=group, name="alpha").key,
        make_key(team=team, owner=member, group=group, name="beta").key,
    )


@pytest.fixture
def settled_usage(keys, today, other_team, outsider, group):
    alpha, beta = keys
    stranger = make_key(team=other_team, owner=outsider, group=group, name="theirs").key
    for key, model, days_ago, charged in [
        (alpha, "claude-sonnet-4-5", 0, "0.5"),
        (alpha, "claude-sonnet-4-5", 0, "0.25"),
        (alpha, "gpt-4o", 2, "1"),
        (beta, "claude-sonnet-4-5", 2, "0.125"),
        (beta, "claude-sonnet-4-5", 40, "7"),
        (stranger, "claude-sonnet-4-5", 0, "100"),
    ]:
        UsageEventFactory(
            key=key,
            model=model,
            created_at=at(today - timedelta(days=days_ago)),
            input_tokens=10,
            output_tokens=1,
            cost_usd=Decimal(charged) * 2,
            charged_usd=Decimal(charged),
        )
    settle_usage()


def test_daily_spend_zero_fills_the_days_without_use(team, settled_usage, today):
    assert daily_spend(team=team, days=4) == [
        DaySpend(day=today - timedelta(days=3), requests=0, cost_usd=ZERO, charged_usd=ZERO),
        DaySpend(
            day=today - timedelta(days=2),
            requests=2,
            cost_usd=Decimal("2.25"),
            charged_usd=Decimal("1.125"),
        ),
        DaySpend(day=today - timedelta(days=1), requests=0, cost_usd=ZERO, charged_usd=ZERO),
        DaySpend(day=today, requests=2, cost_usd=Decimal("1.5"), charged_usd=Decimal("0.75")),
    ]


def test_daily_spend_of_one_key(team, keys, settled_usage, today):
    _, beta = keys
    spend = daily_spend(team=team, key=beta, days=3)
    assert [(row.day, row.requests, row.charged_usd) for row in spend] == [
        (today - timedelta(days=2), 1, Decimal("0.125")),
        (today - timedelta(days=1), 0, ZERO),
        (today, 0, ZERO),
    ]


def test_daily_spend_never_shows_another_teams_key(team, other_team, settled_usage):
    theirs = other_team.api_keys.get()
    assert {row.requests for row in daily_spend(team=team, key=theirs, days=3)} == {0}
    assert sum(row.charged_usd for row in daily_spend(team=other_team, days=3)) == Decimal(100)


def test_daily_spend_needs_at_least_one_day(team):
    with pytest.raises(ValueError, match=r"days must be at least 1, not 0\."):
        daily_spend(team=team, days=0)


def test_spend_by_key_since_a_day(team, keys, settled_usage, today):
    alpha, beta = keys
    assert spend_by_key(team=team, since=today - timedelta(days=30)) == [
        KeySpend(
            key_id=alpha.pk,
            key_name="alpha",
            key_prefix=alpha.prefix,
            requests=3,
            input_tokens=30,
            output_tokens=3,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("3.5"),
            charged_usd=Decimal("1.75"),
        ),
        KeySpend(
            key_id=beta.pk,
            key_name="beta",
            key_prefix=beta.prefix,
            requests=1,
            input_tokens=10,
            output_tokens=1,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("0.25"),
            charged_usd=Decimal("0.125"),
        ),
    ]
    # The 40-day-old event counts once `since` reaches back to it, and beta then leads.
    assert [row.key_name for row in spend_by_key(team=team, since=today - timedelta(days=40))] == [
        "beta",
        "alpha",
    ]


def test_a_deleted_keys_spend_stays_in_the_team_totals(team, keys, member, settled_usage, today):
    alpha, beta = keys
    api_key_delete(key=alpha, actor=member)

    rows = spend_by_key(team=team, since=today - timedelta(days=30))

    assert [(row.key_id, row.key_name, row.charged_usd) for row in rows] == [
        (None, "", Decimal("1.75")),
        (beta.pk, "beta", Decimal("0.125")),
    ]


def test_spend_by_model(team, settled_usage, today):
    assert spend_by_model(team=team, since=today - timedelta(days=2)) == [
        ModelSpend(
            model="gpt-4o",
            requests=1,
            input_tokens=10,
            output_tokens=1,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("2"),
            charged_usd=Decimal("1"),
        ),
        ModelSpend(
            model="claude-sonnet-4-5",
            requests=3,
            input_tokens=30,
            output_tokens=3,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("1.75"),
            charged_usd=Decimal("0.875"),
        ),
    ]


def test_views_read_rollups_not_events(team, settled_usage, today):
    # Raw events gone: the totals do not change, because they never came from there.
    UsageEvent.objects.all().delete()
    assert spend_by_model(team=team, since=today)[0].charged_usd == Decimal("0.75")
    UsageDaily.objects.all().delete()
    assert spend_by_model(team=team, since=today) == []


def test_an_empty_team_has_no_spend(other_team, today):
    assert spend_by_key(team=other_team, since=today) == []
    assert spend_by_model(team=other_team, since=today) == []
    assert daily_spend(team=other_team, days=1) == [
        DaySpend(day=today, requests=0, cost_usd=ZERO, charged_usd=ZERO)
    ]


def test_usage_visible_to_lead_member_and_outsider(team, lead, member, group, outsider):
    own = UsageEventFactory(key=make_key(team=team, owner=member, group=group).key)
    leads = UsageEventFactory(key=make_key(team=team, owner=lead, group=group).key)
    settle_usage()

    assert set(usage_event_list_for(actor=lead)) == {own, leads}
    assert set(usage_event_list_for(actor=member)) == {own}
    assert list(usage_event_list_for(actor=outsider)) == []
    assert set(usage_daily_list_for(actor=lead).values_list("key_id", flat=True)) == {
        own.key_id,
        leads.key_id,
    }
    assert list(usage_daily_list_for(actor=member).values_list("key_id", flat=True)) == [own.key_id]
    assert not usage_daily_list_for(actor=outsider).exists()
