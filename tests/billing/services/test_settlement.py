"""billing.services.settlement: the one fold, and `settle_usage` for rows written unsettled."""

import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.test import override_settings

from billing import services
from billing.models import UsageDaily, UsageEvent
from billing.services import settlement
from keys.models import ApiKey
from keys.services import api_key_delete

from ...factories import GroupFactory, make_key
from ...threads import join, start_thread
from ..factories import UsageEventFactory

DAY_1 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
DAY_2 = datetime(2025, 3, 2, 10, 0, tzinfo=UTC)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite has no row locks (it ignores SELECT ... FOR UPDATE SKIP LOCKED) and "
    "serialises writers, so concurrent settlement is only meaningful on PostgreSQL",
)


def rollup(key, model, day) -> dict:
    return UsageDaily.objects.filter(key=key, model=model, day=day).values(
        "team_id",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_creation_tokens",
        "cache_read_tokens",
        "cost_usd",
        "charged_usd",
    )[0]


@pytest.fixture
def two_keys(team, member):
    group = GroupFactory(name="Half price", multiplier=Decimal("0.5"))
    first = make_key(team=team, owner=member, group=group, name="first").key
    second = make_key(team=team, owner=member, group=group, name="second").key
    return first, second


def test_settle_folds_events_into_key_totals_and_daily_rollups(two_keys):
    first, second = two_keys
    ApiKey.objects.filter(pk=first.pk).update(spent_usd=Decimal("1.5"))
    UsageEventFactory(
        key=first,
        created_at=DAY_1,
        input_tokens=100,
        output_tokens=20,
        cache_creation_tokens=3,
        cache_read_tokens=4,
        cost_usd=Decimal("0.00012345"),
        charged_usd=Decimal("0.00006173"),
    )
    UsageEventFactory(
        key=first,
        created_at=DAY_1,
        input_tokens=1,
        output_tokens=2,
        cache_creation_tokens=0,
        cache_read_tokens=5,
        cost_usd=Decimal("0.10000001"),
        charged_usd=Decimal("0.05000001"),
    )
    UsageEventFactory(
        key=first,
        created_at=DAY_2,
        input_tokens=7,
        output_tokens=0,
        cost_usd=Decimal("0.00000002"),
        charged_usd=Decimal("0.00000001"),
    )
    UsageEventFactory(
        key=first,
        model="gpt-4o",
        created_at=DAY_1,
        input_tokens=9,
        output_tokens=9,
        cost_usd=Decimal("0.2"),
        charged_usd=Decimal("0.1"),
    )
    UsageEventFactory(
        key=second,
        created_at=DAY_1,
        input_tokens=50,
        output_tokens=60,
        cost_usd=Decimal("2.5"),
        charged_usd=Decimal("1.25"),
    )

    assert services.settle_usage() == 5

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.spent_usd == Decimal("1.5") + Decimal("0.15006175")
    assert second.spent_usd == Decimal("1.25")
    assert rollup(first, "claude-sonnet-4-5", date(2025, 3, 1)) == {
        "team_id": first.team_id,
        "requests": 2,
        "input_tokens": 101,
        "output_tokens": 22,
        "cache_creation_tokens": 3,
        "cache_read_tokens": 9,
        "cost_usd": Decimal("0.10012346"),
        "charged_usd": Decimal("0.05006174"),
    }
    assert rollup(first, "claude-sonnet-4-5", date(2025, 3, 2)) == {
        "team_id": first.team_id,
        "requests": 1,
        "input_tokens": 7,
        "output_tokens": 0,
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
        "cost_usd": Decimal("0.00000002"),
        "charged_usd": Decimal("0.00000001"),
    }
    assert rollup(first, "gpt-4o", date(2025, 3, 1))["charged_usd"] == Decimal("0.1")
    assert rollup(second, "claude-sonnet-4-5", date(2025, 3, 1))["requests"] == 1
    assert UsageDaily.objects.count() == 4
    assert not UsageEvent.objects.filter(settled_at__isnull=True).exists()


def test_settling_again_counts_nothing_twice(two_keys):
    first, _ = two_keys
    UsageEventFactory.create_batch(3, key=first, created_at=DAY_1, charged_usd=Decimal("0.1"))
    assert services.settle_usage() == 3
    settled_at = set(UsageEvent.objects.values_list("settled_at", flat=True))

    assert services.settle_usage() == 0

    first.refresh_from_db()
    assert first.spent_usd == Decimal("0.3")
    assert rollup(first, "claude-sonnet-4-5", DAY_1.date())["requests"] == 3
    assert set(UsageEvent.objects.values_list("settled_at", flat=True)) == settled_at
    assert None not in settled_at


def test_new_events_add_to_existing_rollups(two_keys):
    first, _ = two_keys
    UsageEventFactory(key=first, created_at=DAY_1, input_tokens=10, charged_usd=Decimal("0.1"))
    services.settle_usage()
    UsageEventFactory(key=first, created_at=DAY_1, input_tokens=5, charged_usd=Decimal("0.02"))

    assert services.settle_usage() == 1

    totals = rollup(first, "claude-sonnet-4-5", DAY_1.date())
    assert (totals["requests"], totals["input_tokens"], totals["charged_usd"]) == (
        2,
        15,
        Decimal("0.12"),
    )
    first.refresh_from_db()
    assert first.spent_usd == Decimal("0.12")


def test_small_batches_settle_everything(two_keys):
    first, second = two_keys
    for index in range(7):
        UsageEventFactory(
            key=first if index % 2 else second,
            created_at=DAY_1,
            charged_usd=Decimal("0.00000001") * (index + 1),
        )

    assert services.settle_usage(batch_size=2) == 7

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.spent_usd == Decimal("0.00000012")  # 2 + 4 + 6
    assert second.spent_usd == Decimal("0.00000016")  # 1 + 3 + 5 + 7


def test_already_settled_events_are_left_alone(two_keys):
    first, _ = two_keys
    UsageEventFactory(key=first, created_at=DAY_1, charged_usd=Decimal("9"), settled_at=DAY_2)
    UsageEventFactory(key=first, created_at=DAY_1, charged_usd=Decimal("0.5"))

    assert services.settle_usage() == 1

    first.refresh_from_db()
    assert first.spent_usd == Decimal("0.5")
    assert UsageEvent.objects.get(charged_usd=Decimal("9")).settled_at == DAY_2


def test_the_day_is_the_local_date_in_the_configured_time_zone(two_keys):
    first, _ = two_keys
    UsageEventFactory(key=first, created_at=datetime(2025, 3, 1, 23, 30, tzinfo=UTC))

    with override_settings(TIME_ZONE="Europe/Berlin"):
        services.settle_usage()

    assert list(UsageDaily.objects.values_list("day", flat=True)) == [date(2025, 3, 2)]


def test_events_of_a_deleted_key_roll_up_without_a_key(two_keys, team, member):
    first, second = two_keys
    UsageEventFactory(key=first, created_at=DAY_1, charged_usd=Decimal("0.1"))
    services.settle_usage()
    UsageEventFactory(key=first, created_at=DAY_1, charged_usd=Decimal("0.2"))
    UsageEventFactory(key=second, created_at=DAY_1, charged_usd=Decimal("0.4"))
    services.settle_usage()
    UsageEventFactory(key=second, created_at=DAY_1, charged_usd=Decimal("0.8"))

    api_key_delete(key=first, actor=member)
    api_key_delete(key=second, actor=member)
    # Both deleted keys' rows for that model and day now have no key.
    assert UsageDaily.objects.filter(key=None, team=team).count() == 2

    assert services.settle_usage() == 1

    keyless = UsageDaily.objects.filter(key=None, team=team)
    assert keyless.count() == 2
    assert keyless.aggregate(Sum("charged_usd"), Sum("requests")) == {
        "charged_usd__sum": Decimal("1.5"),
        "requests__sum": 4,
    }


def test_an_orphan_event_creates_a_keyless_rollup(team):
    UsageEventFactory(key=None, team=team, group=None, created_at=DAY_1, charged_usd=Decimal("2"))

    assert services.settle_usage() == 1

    assert list(UsageDaily.objects.values_list("key", "team", "requests", "charged_usd")) == [
        (None, team.pk, 1, Decimal("2"))
    ]


def test_a_batch_that_fails_midway_leaves_no_trace(two_keys, monkeypatch):
    first, _ = two_keys
    UsageEventFactory.create_batch(4, key=first, created_at=DAY_1, charged_usd=Decimal("0.25"))
    real_add_to_rollups = settlement._add_to_rollups
    batches = []

    def dies_in_second_batch(events):
        batches.append(len(events))
        real_add_to_rollups(events)
        if len(batches) == 2:
            # The key total and the rollup are already written inside the batch transaction.
            raise ConnectionError("worker killed")

    monkeypatch.setattr(settlement, "_add_to_rollups", dies_in_second_batch)
    with pytest.raises(ConnectionError):
        services.settle_usage(batch_size=2)

    first.refresh_from_db()
    assert first.spent_usd == Decimal("0.5")
    assert rollup(first, "claude-sonnet-4-5", DAY_1.date())["requests"] == 2
    assert UsageEvent.objects.filter(settled_at__isnull=True).count() == 2

    monkeypatch.undo()
    assert services.settle_usage(batch_size=2) == 2
    first.refresh_from_db()
    assert first.spent_usd == Decimal("1")
    assert rollup(first, "claude-sonnet-4-5", DAY_1.date())["requests"] == 4


def test_no_events_means_no_writes(two_keys, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert services.settle_usage() == 0


@pytest.mark.django_db(transaction=True)
def test_the_fold_refuses_to_run_outside_a_transaction(team, member, group):
    """Folded outside the transaction that marks the events settled, a crash in between would
    leave charges in the totals that settlement then adds again."""
    key = make_key(team=team, owner=member, group=group).key
    event = {
        "key_id": key.pk,
        "team_id": team.pk,
        "model": "claude-sonnet-4-5",
        "created_at": DAY_1,
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
        "cost_usd": Decimal("1"),
        "charged_usd": Decimal("1"),
    }

    with pytest.raises(
        transaction.TransactionManagementError,
        match=r"^fold_usage must run in the transaction that marks its events settled$",
    ):
        settlement.fold_usage(events=[event])

    assert ApiKey.objects.get(pk=key.pk).spent_usd == Decimal("0")
    assert not UsageDaily.objects.exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_rows_locked_by_another_worker_are_skipped_not_waited_for(team, member, group):
    key = make_key(team=team, owner=member, group=group).key
    locked_events = UsageEventFactory.create_batch(
        3, key=key, created_at=DAY_1, charged_usd=Decimal("1")
    )
    UsageEventFactory.create_batch(2, key=key, created_at=DAY_1, charged_usd=Decimal("0.01"))
    holding, release = threading.Event(), threading.Event()

    def other_worker():
        try:
            with transaction.atomic():
                list(
                    UsageEvent.objects.select_for_update().filter(
                        pk__in=[event.pk for event in locked_events]
                    )
                )
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        assert services.settle_usage() == 2
        key.refresh_from_db()
        assert key.spent_usd == Decimal("0.02")
    finally:
        release.set()
        thread.join(timeout=30)

    assert services.settle_usage() == 3
    key.refresh_from_db()
    assert key.spent_usd == Decimal("3.02")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_workers_settling_at_once_count_each_event_exactly_once(team, member):
    group = GroupFactory(name="Mixed", multiplier=Decimal("1.5"))
    keys = [make_key(team=team, owner=member, group=group, name=f"k{n}").key for n in range(4)]
    models = ["claude-sonnet-4-5", "claude-opus-4-1", "gpt-4o"]
    days = [DAY_1, DAY_2, datetime(2025, 3, 3, 10, 0, tzinfo=UTC)]
    UsageEvent.objects.bulk_create(
        UsageEvent(
            key=keys[index % 4],
            team=team,
            group=group,
            model=models[index % 3],
            input_tokens=index,
            output_tokens=2 * index,
            cache_read_tokens=index % 7,
            cost_usd=Decimal(index) / 10**8 + Decimal("0.001"),
            charged_usd=Decimal(index) * 3 / 10**8 + Decimal("0.0015"),
            status_code=200,
            created_at=days[index % 5 % 3],
        )
        for index in range(3000)
    )
    expected = {
        "requests": 3000,
        **UsageEvent.objects.aggregate(
            input_tokens=Sum("input_tokens"),
            cost_usd=Sum("cost_usd"),
            charged_usd=Sum("charged_usd"),
        ),
    }
    expected_by_key = dict(
        UsageEvent.objects.values("key")
        .annotate(total=Sum("charged_usd"))
        .values_list("key", "total")
    )
    start = threading.Barrier(2)
    settled: list[int] = []
    errors: list[BaseException] = []

    def worker():
        start.wait(timeout=30)
        settled.append(services.settle_usage(batch_size=50))

    join([start_thread(worker, errors) for _ in range(2)])

    assert errors == []
    assert sorted(settled) != [0, 3000], "one worker did everything: no concurrency was tested"
    assert sum(settled) == 3000
    assert not UsageEvent.objects.filter(settled_at__isnull=True).exists()
    assert {key.pk: ApiKey.objects.get(pk=key.pk).spent_usd for key in keys} == expected_by_key
    assert (
        UsageDaily.objects.aggregate(
            requests=Sum("requests"),
            input_tokens=Sum("input_tokens"),
            cost_usd=Sum("cost_usd"),
            charged_usd=Sum("charged_usd"),
        )
        == expected
    )
    # One row per key, model and day: 4 keys x 3 models x 3 days, all combinations present.
    assert UsageDaily.objects.count() == 36
