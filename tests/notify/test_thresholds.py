"""notify.thresholds: each threshold of each limit told once per window, found where usage is
settled (billing.signals.usage_settled), through the real ingestion path."""

import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import connection

from billing import services as billing_services
from billing.models import UsageEvent
from keys.models import ApiKey, Membership
from notify import thresholds
from notify.models import Event, EventType, NotificationSettings

from ..billing.factories import UsageEventFactory
from ..factories import GroupFactory, MembershipFactory, make_key
from ..threads import join, start_thread
from .usage import charge, ingest

# Monday 7 December 2026, noon in Chicago (CST, UTC-6).
NOON = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def set_limits(key: ApiKey, **limits) -> ApiKey:
    ApiKey.objects.filter(pk=key.pk).update(**limits)
    return ApiKey.objects.get(pk=key.pk)


def told(type: EventType | None = None) -> list[str]:
    events = Event.objects.order_by("id")
    if type is not None:
        events = events.filter(type=type)
    return list(events.values_list("dedupe_key", flat=True))


def threshold_events() -> list[str]:
    return told(EventType.KEY_LIMIT_THRESHOLD)


@pytest.fixture
def chicago(team):
    team.time_zone = "America/Chicago"
    team.save(update_fields=["time_zone"])
    return team


@pytest.fixture
def key(chicago, member, group):
    return make_key(team=chicago, owner=member, group=group, name="workshop").key


def test_each_threshold_is_told_once_as_spend_climbs(key, settle):
    key = set_limits(key, daily_limit_usd=Decimal("10"))
    prefix = f"key.limit:{key.pk}:daily:2026-12-07"

    settle(charge(key, "4", NOON))
    assert threshold_events() == []

    settle(charge(key, "1.5", NOON + timedelta(minutes=1)))
    assert threshold_events() == [f"{prefix}:50:10.00"]

    settle(charge(key, "0.5", NOON + timedelta(minutes=2)))
    settle(charge(key, "2.5", NOON + timedelta(minutes=3)))
    settle(charge(key, "2", NOON + timedelta(minutes=4)))
    settle(charge(key, "1", NOON + timedelta(minutes=5)))

    assert threshold_events() == [f"{prefix}:50:10.00", f"{prefix}:80:10.00", f"{prefix}:100:10.00"]
    event = Event.objects.get(dedupe_key=f"{prefix}:80:10.00")
    assert (event.team_id, event.key_id) == (key.team_id, key.pk)
    assert event.payload == {
        "key_id": key.pk,
        "key_name": "workshop",
        "key_prefix": key.prefix,
        "limit": "daily",
        "threshold": 80,
        "spent_usd": "8.50000000",
        "limit_usd": "10.00",
        "window": "2026-12-07",
        # Midnight in Chicago.
        "resets_at": "2026-12-08T06:00:00+00:00",
    }


def test_several_thresholds_crossed_in_one_batch_are_each_told_once(key, settle):
    key = set_limits(key, quota_limit_usd=Decimal("10"))

    settle(charge(key, "6", NOON), charge(key, "4.5", NOON + timedelta(seconds=1)))
    settle(charge(key, "1", NOON + timedelta(seconds=2)))

    prefix = f"key.limit:{key.pk}:quota:lifetime"
    assert threshold_events() == [f"{prefix}:50:10.00", f"{prefix}:80:10.00", f"{prefix}:100:10.00"]
    assert [
        (payload["threshold"], payload["spent_usd"], payload["window"])
        for payload in Event.objects.order_by("id").values_list("payload", flat=True)
        if payload.get("limit") == "quota"
    ] == [(50, "10.50000000", None), (80, "10.50000000", None), (100, "10.50000000", None)]


def test_a_new_day_tells_again_and_the_week_only_once(key, settle):
    key = set_limits(key, daily_limit_usd=Decimal("10"), weekly_limit_usd=Decimal("100"))

    settle(charge(key, "6", NOON))
    # Tuesday, 00:30 in Chicago: a new day, the same week (weeks start on Monday).
    tuesday = datetime(2026, 12, 8, 6, 30, tzinfo=UTC)
    settle(charge(key, "6", tuesday))
    settle(charge(key, "40", tuesday + timedelta(minutes=1)))

    assert threshold_events() == [
        f"key.limit:{key.pk}:daily:2026-12-07:50:10.00",
        f"key.limit:{key.pk}:daily:2026-12-08:50:10.00",
        f"key.limit:{key.pk}:daily:2026-12-08:80:10.00",
        f"key.limit:{key.pk}:daily:2026-12-08:100:10.00",
        f"key.limit:{key.pk}:weekly:2026-W50:50:100.00",
    ]


def test_a_late_event_of_yesterday_counts_in_yesterdays_window(key, settle):
    key = set_limits(key, daily_limit_usd=Decimal("10"))

    settle(charge(key, "6", NOON - timedelta(days=1)))

    assert threshold_events() == [f"key.limit:{key.pk}:daily:2026-12-06:50:10.00"]


def test_a_raised_limit_tells_its_own_crossings(key, settle):
    key = set_limits(key, quota_limit_usd=Decimal("10"))
    settle(charge(key, "8", NOON))
    set_limits(key, quota_limit_usd=Decimal("20"))

    settle(charge(key, "1", NOON + timedelta(minutes=1)))
    settle(charge(key, "7", NOON + timedelta(minutes=2)))

    prefix = f"key.limit:{key.pk}:quota:lifetime"
    assert threshold_events() == [
        f"{prefix}:50:10.00",
        f"{prefix}:80:10.00",
        f"{prefix}:50:20.00",
        f"{prefix}:80:20.00",
    ]


def test_the_members_cap_and_the_teams_budget(chicago, member, group, settle):
    Membership.objects.filter(team=chicago, user=member).update(monthly_limit_usd=Decimal("10"))
    chicago.monthly_budget_usd = Decimal("40")
    chicago.save(update_fields=["monthly_budget_usd"])
    first = make_key(team=chicago, owner=member, group=group, name="first").key
    second = make_key(team=chicago, owner=member, group=group, name="second").key
    colleague = MembershipFactory(team=chicago, user__username="colleague").user
    theirs = make_key(team=chicago, owner=colleague, group=group, name="theirs").key

    settle(charge(first, "3", NOON))
    settle(charge(second, "3", NOON + timedelta(minutes=1)))
    # Two keys of the team in one batch reach the budget's 50 %: told once.
    settle(
        charge(theirs, "10", NOON + timedelta(minutes=2)),
        charge(second, "5", NOON + timedelta(minutes=2)),
    )

    assert told(EventType.MEMBER_LIMIT_THRESHOLD) == [
        f"member.limit:{chicago.pk}:{member.pk}:2026-12:50:10.00",
        f"member.limit:{chicago.pk}:{member.pk}:2026-12:80:10.00",
        f"member.limit:{chicago.pk}:{member.pk}:2026-12:100:10.00",
    ]
    assert told(EventType.TEAM_BUDGET_THRESHOLD) == [f"team.budget:{chicago.pk}:2026-12:50:40.00"]
    assert threshold_events() == []
    cap = Event.objects.get(type=EventType.MEMBER_LIMIT_THRESHOLD, payload__threshold=50)
    assert (cap.key_id, cap.payload["user_id"], cap.payload["limit"]) == (
        second.pk,
        member.pk,
        "member_monthly",
    )
    assert cap.payload["spent_usd"] == "6.00000000"
    budget = Event.objects.get(type=EventType.TEAM_BUDGET_THRESHOLD)
    assert budget.key_id is None
    assert (budget.payload["limit"], budget.payload["spent_usd"], budget.payload["limit_usd"]) == (
        "team_monthly",
        "21.00000000",
        "40.00",
    )


def test_the_teams_own_thresholds(key, settle):
    NotificationSettings.objects.create(team=key.team, thresholds=[90, 25])
    key = set_limits(key, quota_limit_usd=Decimal("10"))

    settle(charge(key, "8.9", NOON))
    settle(charge(key, "0.1", NOON + timedelta(minutes=1)))

    assert threshold_events() == [
        f"key.limit:{key.pk}:quota:lifetime:25:10.00",
        f"key.limit:{key.pk}:quota:lifetime:90:10.00",
    ]


def test_no_thresholds_tells_nothing(key, settle):
    NotificationSettings.objects.create(team=key.team, thresholds=[])
    key = set_limits(key, quota_limit_usd=Decimal("10"))

    settle(charge(key, "11", NOON))

    assert told() == []


def test_no_limit_tells_nothing(key, settle):
    settle(charge(key, "1000", NOON))

    assert threshold_events() == []


def test_settlement_of_rows_written_unsettled_tells_too(key, django_capture_on_commit_callbacks):
    key = set_limits(key, quota_limit_usd=Decimal("10"))
    UsageEventFactory.create_batch(3, key=key, charged_usd=Decimal("3"), created_at=NOON)

    with django_capture_on_commit_callbacks(execute=True):
        assert billing_services.settle_usage() == 3

    assert threshold_events() == [
        f"key.limit:{key.pk}:quota:lifetime:50:10.00",
        f"key.limit:{key.pk}:quota:lifetime:80:10.00",
    ]


def test_a_failing_receiver_neither_undoes_nor_stops_ingestion(key, settle, monkeypatch, caplog):
    key = set_limits(key, quota_limit_usd=Decimal("10"))

    def broken(**kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(thresholds, "thresholds_emit", broken)
    with caplog.at_level(logging.ERROR):
        assert settle(charge(key, "9", NOON)) == 1

    assert UsageEvent.objects.filter(key=key).count() == 1
    assert ApiKey.objects.get(pk=key.pk).spent_usd == Decimal("9")
    assert told(EventType.KEY_LIMIT_THRESHOLD) == []
    assert "broken" in caplog.text


@pytest.mark.skipif(
    not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="ingesters at the same moment: PostgreSQL (SQLite serialises its writers)",
)
@pytest.mark.django_db(transaction=True)
def test_each_threshold_is_told_once_under_concurrent_ingestion(team, member):
    """Four ingesters write usage of the same key at once, batch after batch: each sees the
    totals after its own commit, several see the same crossing, and each crossing is written
    once."""
    assert connection.vendor == "postgresql"
    key = make_key(team=team, owner=member, group=GroupFactory(), name="shared").key
    Membership.objects.filter(team=team, user=member).update(monthly_limit_usd=Decimal("12"))
    key = set_limits(key, quota_limit_usd=Decimal("12"), daily_limit_usd=Decimal("12"))
    now = datetime.now(UTC).replace(microsecond=0)
    # 4 ingesters x 7-8 batches x 2 records x $0.25 = $15: past 100 % of every limit.
    batches = [[charge(key, "0.25", now), charge(key, "0.25", now)] for _ in range(30)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def ingester(mine):
        start.wait(timeout=30)
        for batch in mine:
            ingest(batch)

    join([start_thread(lambda n=n: ingester(batches[n::4]), errors) for n in range(4)])

    assert errors == []
    assert ApiKey.objects.get(pk=key.pk).spent_usd == Decimal("15")
    day = thresholds.window_name(thresholds.LimitKind.DAILY, team.time_zone, now)
    month = thresholds.window_name(thresholds.LimitKind.MONTHLY, team.time_zone, now)
    assert sorted(told()) == sorted(
        [
            *(f"key.limit:{key.pk}:quota:lifetime:{t}:12.00" for t in (50, 80, 100)),
            *(f"key.limit:{key.pk}:daily:{day}:{t}:12.00" for t in (50, 80, 100)),
            *(f"member.limit:{team.pk}:{member.pk}:{month}:{t}:12.00" for t in (50, 80, 100)),
        ]
    )
