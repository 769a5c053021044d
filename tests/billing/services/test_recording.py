"""billing.services.recording: usage written once, settled and folded in the same transaction,
from the Redis stream (ingest) or from the embedded relay's queue."""

import dataclasses
import functools
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction

from billing import ledger, services, tasks
from billing.models import UsageDaily, UsageEvent
from billing.services import recording, settlement
from billing.windows import Counter, Scope
from core import keyspace
from keys import services as keys_services
from keys.models import ApiKey
from proxy.usage import MAX_TOKENS

from ...factories import GroupFactory, MembershipFactory, TeamFactory, make_key
from ...threads import join, start_thread, wait_for_a_lock_wait
from ..factories import UsageEventFactory, usage_record

needs_redis = pytest.mark.skipif(settings.REDIS is None, reason="the stream lives in Redis")
embedded_only = pytest.mark.skipif(settings.REDIS is not None, reason="the embedded default")

DAY_1 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
DAY_2 = datetime(2025, 3, 2, 10, 0, tzinfo=UTC)

SONNET = "claude-sonnet-4-5"
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")


def rollups() -> list[dict]:
    return list(
        UsageDaily.objects.order_by("key_id", "model", "day").values(
            "key_id",
            "team_id",
            "model",
            "day",
            "requests",
            *TOKEN_FIELDS,
            "cost_usd",
            "charged_usd",
        )
    )


def spent(*keys) -> list[Decimal]:
    return [ApiKey.objects.get(pk=key.pk).spent_usd for key in keys]


def rows() -> list[tuple]:
    return list(
        UsageEvent.objects.order_by("id").values_list(
            "id", "request_id", "created_at", "charged_usd", "settled_at"
        )
    )


@pytest.fixture
def stream(team):
    """The usage stream of `team`'s shard (core.keyspace), where the relay appends its usage."""
    return keyspace.usage_stream(keyspace.shard(team.pk))


@pytest.fixture
def two_keys(team, member):
    group = GroupFactory(name="Half price", multiplier=Decimal("0.5"))
    first = make_key(team=team, owner=member, group=group, name="first").key
    second = make_key(team=team, owner=member, group=group, name="second").key
    return first, second


@pytest.fixture
def batch(two_keys):
    """Four requests: two keys, two models, two days."""
    first, second = two_keys
    return [
        usage_record(
            first,
            charged="0.00006173",
            cost_usd=Decimal("0.00012345"),
            input_tokens=100,
            output_tokens=20,
            cache_creation_tokens=3,
            cache_read_tokens=4,
            request_id="req_1",
            created_at=DAY_1,
        ),
        usage_record(
            first,
            charged="0.05000001",
            cost_usd=Decimal("0.10000001"),
            input_tokens=1,
            output_tokens=2,
            cache_read_tokens=5,
            request_id="req_2",
            created_at=DAY_1 + timedelta(minutes=1),
        ),
        usage_record(
            first,
            charged="0.1",
            model="gpt-4o",
            input_tokens=9,
            output_tokens=9,
            request_id="req_3",
            created_at=DAY_2,
        ),
        usage_record(
            second,
            charged="1.25",
            input_tokens=50,
            output_tokens=60,
            request_id="req_4",
            created_at=DAY_1,
        ),
    ]


def expected_rollups(first, second) -> list[dict]:
    """The rollups of `batch`, in the order `rollups()` lists them."""

    def row(key, model, day, requests, tokens, cost, charged):
        return {
            "key_id": key.pk,
            "team_id": key.team_id,
            "model": model,
            "day": day,
            "requests": requests,
            **dict(zip(TOKEN_FIELDS, tokens, strict=True)),
            "cost_usd": Decimal(cost),
            "charged_usd": Decimal(charged),
        }

    return [
        row(first, SONNET, date(2025, 3, 1), 2, (101, 22, 3, 9), "0.10012346", "0.05006174"),
        row(first, "gpt-4o", date(2025, 3, 2), 1, (9, 9, 0, 0), "0.1", "0.1"),
        row(second, SONNET, date(2025, 3, 1), 1, (50, 60, 0, 0), "1.25", "1.25"),
    ]


# --- write_and_settle_usage -----------------------------------------------------------------


def test_written_rows_are_settled_and_folded_at_once(two_keys, batch):
    first, second = two_keys
    ApiKey.objects.filter(pk=first.pk).update(spent_usd=Decimal("1.5"))

    assert services.write_and_settle_usage(records=batch) == 4

    written = rows()
    assert [(row[1], row[3]) for row in written] == [
        ("req_1", Decimal("0.00006173")),
        ("req_2", Decimal("0.05000001")),
        ("req_3", Decimal("0.1")),
        ("req_4", Decimal("1.25")),
    ]
    # One stamp for the batch: the moment it was written and settled.
    [settled_at] = {row[4] for row in written}
    assert settled_at is not None
    assert spent(first, second) == [Decimal("1.5") + Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)


def test_settlement_after_a_write_finds_nothing(two_keys, batch, django_assert_num_queries):
    first, second = two_keys
    services.write_and_settle_usage(records=batch)
    before = rows()

    with django_assert_num_queries(1):
        assert services.settle_usage() == 0

    assert rows() == before
    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)


def test_a_batch_read_again_changes_nothing(two_keys, batch):
    """An ingest killed between its commit and deleting its stream entries reads them again."""
    first, second = two_keys
    services.write_and_settle_usage(records=batch)
    before = rows()

    assert services.write_and_settle_usage(records=batch) == 0
    assert services.write_and_settle_usage(records=[batch[3], batch[0], batch[3]]) == 0

    assert rows() == before
    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)


def test_only_the_new_records_of_a_mixed_batch_are_written_and_folded(two_keys, batch):
    first, second = two_keys
    services.write_and_settle_usage(records=batch[:2])
    before = rows()

    assert services.write_and_settle_usage(records=batch) == 2

    after = rows()
    assert after[:2] == before
    assert [row[1] for row in after] == ["req_1", "req_2", "req_3", "req_4"]
    assert None not in {row[4] for row in after}
    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)


def test_a_record_repeated_within_one_batch_is_written_and_folded_once(issued):
    record = usage_record(issued.key, charged="0.5", created_at=DAY_1)
    # A client may reuse a request id: with a different timestamp it is a different request.
    same_id_later = usage_record(issued.key, charged="0.25", created_at=DAY_1 + timedelta(1))

    assert services.write_and_settle_usage(records=[record, record, same_id_later]) == 2

    events = UsageEvent.objects.filter(key=issued.key).order_by("created_at")
    assert [event.charged_usd for event in events] == [Decimal("0.5"), Decimal("0.25")]
    assert events[0].client_ip == "203.0.113.7"
    assert events[0].session_id == "session-1"
    assert spent(issued.key) == [Decimal("0.75")]
    assert list(UsageDaily.objects.order_by("day").values_list("day", "requests")) == [
        (date(2025, 3, 1), 1),
        (date(2025, 3, 2), 1),
    ]


def test_text_cut_to_the_column_is_what_rolls_up(issued):
    long_model = "m" * 250
    record = usage_record(issued.key, charged="0.5", model=long_model, created_at=DAY_1)

    services.write_and_settle_usage(records=[record])

    assert UsageEvent.objects.get().model == "m" * 200
    assert list(UsageDaily.objects.values_list("model", "requests")) == [("m" * 200, 1)]


def test_new_records_add_to_rollups_that_settlement_made(issued):
    UsageEventFactory(key=issued.key, created_at=DAY_1, input_tokens=10, charged_usd=Decimal("1"))
    assert services.settle_usage() == 1

    services.write_and_settle_usage(
        records=[usage_record(issued.key, charged="0.5", input_tokens=5, created_at=DAY_1)]
    )

    assert list(UsageDaily.objects.values_list("requests", "input_tokens", "charged_usd")) == [
        (2, 15, Decimal("1.5"))
    ]
    assert spent(issued.key) == [Decimal("1.5")]


def test_settlement_still_settles_rows_written_unsettled(issued):
    """Rows from another path (here the factory), or written before ingest settled its rows."""
    services.write_and_settle_usage(
        records=[usage_record(issued.key, charged="0.5", created_at=DAY_1)]
    )
    unsettled = UsageEventFactory(key=issued.key, created_at=DAY_1, charged_usd=Decimal("0.25"))

    assert services.settle_usage() == 1

    unsettled.refresh_from_db()
    assert unsettled.settled_at is not None
    assert spent(issued.key) == [Decimal("0.75")]
    assert list(UsageDaily.objects.values_list("requests", "charged_usd")) == [(2, Decimal("0.75"))]
    assert services.settle_usage() == 0


def test_a_batch_without_repeats_is_not_looked_up_first(two_keys, batch, monkeypatch):
    """The unique constraint checks every row as it is inserted; the look-up runs only when it
    finds rows already there."""
    looked_up = []
    monkeypatch.setattr(
        ledger, "identities_in_db", lambda identities: looked_up.append(identities) or set()
    )

    assert services.write_and_settle_usage(records=batch) == 4

    assert looked_up == []


def test_the_largest_counts_the_relay_records_fit_the_row(issued):
    record = usage_record(
        issued.key,
        charged="1",
        input_tokens=MAX_TOKENS,
        output_tokens=MAX_TOKENS,
        cache_creation_tokens=MAX_TOKENS,
        cache_read_tokens=MAX_TOKENS,
    )

    assert services.write_and_settle_usage(records=[record]) == 1

    assert UsageEvent.objects.values_list("input_tokens", "cache_read_tokens").get() == (
        MAX_TOKENS,
        MAX_TOKENS,
    )
    assert UsageDaily.objects.values_list("input_tokens", flat=True).get() == MAX_TOKENS


def test_a_row_the_database_refuses_for_another_reason_fails_the_batch(two_keys, batch):
    """Not a repeat (a negative token count breaks a check constraint): the error stands and
    nothing of the batch is written or folded."""
    first, second = two_keys
    broken = dataclasses.replace(batch[3], input_tokens=-1)

    with pytest.raises(IntegrityError):
        services.write_and_settle_usage(records=[*batch[:3], broken])

    assert rows() == []
    assert spent(first, second) == [Decimal("0"), Decimal("0")]
    assert rollups() == []


def test_a_write_that_fails_midway_leaves_no_trace(two_keys, batch, monkeypatch):
    first, second = two_keys

    def dies_after_the_key_totals(events):
        # The rows and the key totals are already written inside the transaction.
        raise ConnectionError("worker killed")

    monkeypatch.setattr(settlement, "_add_to_rollups", dies_after_the_key_totals)
    with pytest.raises(ConnectionError):
        services.write_and_settle_usage(records=batch)

    assert rows() == []
    assert spent(first, second) == [Decimal("0"), Decimal("0")]
    assert rollups() == []

    monkeypatch.undo()
    assert services.write_and_settle_usage(records=batch) == 4
    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]


def test_the_running_totals_of_the_written_keys_are_reconciled(
    two_keys, batch, django_capture_on_commit_callbacks
):
    first, second = two_keys
    # First's total missed its events (recorded while it was rebuilt); second's is ahead.
    ledger.spend_totals().add(keyspace.spend_total(first.team_id, first.pk), 0, 60)
    ledger.spend_totals().add(
        keyspace.spend_total(second.team_id, second.pk), ledger.usd_to_units(Decimal("2")), 60
    )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.write_and_settle_usage(records=batch)

    # The reconcile, then usage_settled (billing.signals).
    assert len(callbacks) == 2
    assert ledger.spend_total(first.pk) == ledger.usd_to_units(Decimal("0.15006174"))
    assert ledger.spend_total(second.pk) == ledger.usd_to_units(Decimal("2"))


def test_nothing_to_write_means_no_queries(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert services.write_and_settle_usage(records=[]) == 0


# --- the embedded default -------------------------------------------------------------------


def test_write_queued_usage_writes_a_settled_row(issued):
    record = usage_record(issued.key, charged="0.75", created_at=DAY_1)
    ledger.local_totals().count(record, [keyspace.spend_total(record.team_id, record.key_id)])

    assert services.write_queued_usage(records=[record]) == 1

    event = UsageEvent.objects.get()
    assert (event.request_id, event.charged_usd) == (record.request_id, Decimal("0.75"))
    assert event.settled_at is not None
    assert spent(issued.key) == [Decimal("0.75")]
    assert list(UsageDaily.objects.values_list("key", "requests", "charged_usd")) == [
        (issued.key.pk, 1, Decimal("0.75"))
    ]
    # No longer pending: a rebuild reads it from the database, once.
    assert (
        ledger.local_totals().unwritten(Counter(Scope.KEY, issued.key.team_id, issued.key.pk)) == []
    )
    assert services.settle_usage() == 0


def test_a_queued_record_the_database_refuses_does_not_take_its_batch_with_it(issued, caplog):
    good = usage_record(issued.key, charged="0.5", request_id="req_good", created_at=DAY_1)
    refused = dataclasses.replace(good, request_id="req_refused", input_tokens=-1)
    later = usage_record(issued.key, charged="0.25", request_id="req_later", created_at=DAY_1)
    for record in (good, refused, later):
        ledger.local_totals().count(record, [keyspace.spend_total(record.team_id, record.key_id)])

    assert services.write_queued_usage(records=[good, refused, later]) == 2

    assert [row[1] for row in rows()] == ["req_good", "req_later"]
    assert spent(issued.key) == [Decimal("0.75")]
    assert "Usage of request req_refused could not be written" in caplog.text
    assert (
        ledger.local_totals().unwritten(Counter(Scope.KEY, issued.key.team_id, issued.key.pk)) == []
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_local_writes_each_count_once(team, member, group):
    """Embedded writers in several threads at once (each relay process has its own): on SQLite
    they take turns (IMMEDIATE transactions); on PostgreSQL they lock the key and rollup rows in
    turn."""
    keys = [make_key(team=team, owner=member, group=group, name=f"k{n}").key for n in range(2)]
    records = [
        usage_record(
            keys[index % 2],
            charged="0.00000003",
            request_id=f"req_{index}",
            created_at=DAY_1 + timedelta(seconds=index),
        )
        for index in range(40)
    ]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(mine):
        start.wait(timeout=30)
        for record in mine:
            services.write_queued_usage(records=[record])

    join([start_thread(functools.partial(writer, records[n::8]), errors) for n in range(8)])

    assert errors == []
    assert UsageEvent.objects.filter(settled_at__isnull=False).count() == 40
    assert not UsageEvent.objects.filter(settled_at__isnull=True).exists()
    assert spent(*keys) == [Decimal("0.00000060"), Decimal("0.00000060")]
    assert list(
        UsageDaily.objects.order_by("key_id").values_list("key_id", "requests", "charged_usd")
    ) == [(keys[0].pk, 20, Decimal("0.00000060")), (keys[1].pk, 20, Decimal("0.00000060"))]


# --- references deleted while the usage waited ----------------------------------------------
#
# Committed for real (transaction=True): the foreign keys are checked at commit.


@pytest.mark.django_db(transaction=True)
def test_usage_of_a_deleted_key_is_written_without_it(team, member, group, caplog):
    gone = make_key(team=team, owner=member, group=group, name="gone").key
    kept = make_key(team=team, owner=member, group=group, name="kept").key
    records = [
        usage_record(gone, charged="0.5", request_id="req_gone", created_at=DAY_1),
        usage_record(kept, charged="0.25", request_id="req_kept", created_at=DAY_1),
    ]
    gone_id = gone.pk
    keys_services.api_key_delete(key=gone, actor=member)

    assert services.write_and_settle_usage(records=records) == 2

    assert list(
        UsageEvent.objects.order_by("request_id").values_list(
            "request_id", "key_id", "team_id", "group_id", "charged_usd"
        )
    ) == [
        ("req_gone", None, team.pk, group.pk, Decimal("0.5")),
        ("req_kept", kept.pk, team.pk, group.pk, Decimal("0.25")),
    ]
    assert not ApiKey.objects.filter(pk=gone_id).exists()
    assert spent(kept) == [Decimal("0.25")]
    # The team's books keep the deleted key's spend, in a rollup without a key.
    assert set(UsageDaily.objects.values_list("key_id", "team_id", "charged_usd")) == {
        (kept.pk, team.pk, Decimal("0.25")),
        (None, team.pk, Decimal("0.5")),
    }
    assert "Dropped" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_usage_of_a_deleted_group_is_written_without_it(issued):
    retired = GroupFactory(name="Retired")
    record = usage_record(issued.key, charged="0.1", created_at=DAY_1)
    record = dataclasses.replace(record, group_id=retired.pk)
    retired.delete()

    assert services.write_and_settle_usage(records=[record]) == 1

    assert list(UsageEvent.objects.values_list("key_id", "group_id")) == [(issued.key.pk, None)]


@pytest.mark.django_db(transaction=True)
def test_usage_of_a_deleted_team_is_dropped_and_the_rest_written(issued, caplog):
    doomed_team = TeamFactory(name="Doomed", slug="doomed")
    doomed_member = MembershipFactory(team=doomed_team, user__username="doomed").user
    doomed = make_key(team=doomed_team, owner=doomed_member, group=issued.key.group).key
    records = [
        usage_record(doomed, charged="9", request_id="req_doomed", created_at=DAY_1),
        usage_record(issued.key, charged="0.1", request_id="req_alive", created_at=DAY_1),
    ]
    doomed_team.delete()

    assert services.write_and_settle_usage(records=records) == 1

    assert list(UsageEvent.objects.values_list("request_id", "team_id")) == [
        ("req_alive", issued.key.team_id)
    ]
    assert list(UsageDaily.objects.values_list("team_id", "charged_usd")) == [
        (issued.key.team_id, Decimal("0.1"))
    ]
    assert "Dropped 1 usage events of deleted teams" in caplog.text


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_ingestion_goes_on_after_a_key_is_deleted(stream, team, member, group):
    """Before: the deleted key's id failed the foreign key at commit, every later ingest failed
    on the same entries, and no team's usage reached the database again."""
    gone = make_key(team=team, owner=member, group=group, name="gone").key
    kept = make_key(team=team, owner=member, group=group, name="kept").key
    client = ledger.usage_stream_client()
    client.xadd(stream, {"e": usage_record(gone, charged="1", request_id="r1").to_json()})
    keys_services.api_key_delete(key=gone, actor=None)
    client.xadd(stream, {"e": usage_record(kept, charged="2", request_id="r2").to_json()})

    assert tasks.ingest_usage() == 2

    assert client.xlen(stream) == 0
    assert sorted(UsageEvent.objects.values_list("request_id", "key_id")) == [
        ("r1", None),
        ("r2", kept.pk),
    ]


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite serialises writers: nothing to wait for"
)
@pytest.mark.django_db(transaction=True)
def test_a_key_deleted_while_its_usage_is_being_written_waits_for_it(team, member, group):
    """The ingest holds the key's row until it commits, so the deletion then finds the new
    rows and empties their key; without the wait it failed on the foreign key at commit."""
    key = make_key(team=team, owner=member, group=group).key
    written = threading.Event()
    commit = threading.Event()
    errors: list[BaseException] = []

    def ingest():
        with transaction.atomic():
            services.write_and_settle_usage(records=[usage_record(key, charged="0.3")])
            written.set()
            assert commit.wait(timeout=30)

    def delete():
        keys_services.api_key_delete(key=ApiKey.objects.get(pk=key.pk), actor=None)

    writer = start_thread(ingest, errors)
    assert written.wait(timeout=30)
    deleter = start_thread(delete, errors)
    wait_for_a_lock_wait()
    commit.set()
    join([writer, deleter], timeout=30)

    assert errors == []
    assert not ApiKey.objects.filter(pk=key.pk).exists()
    assert list(UsageEvent.objects.values_list("key_id", "charged_usd")) == [(None, Decimal("0.3"))]


# --- the Redis stream -----------------------------------------------------------------------


@needs_redis
def test_ingest_reads_the_endpoint_beside_the_json(stream, issued):
    """This release's relay sends the endpoint as the entry's "p", outside the JSON an earlier
    release's ingest reads; an earlier release's entry has none."""
    client = ledger.usage_stream_client()
    now = usage_record(issued.key, charged="0.1", request_id="req_p_1", endpoint="responses")
    earlier = usage_record(issued.key, charged="0.2", request_id="req_p_2")
    assert '"endpoint"' not in now.to_json()
    client.xadd(stream, {"e": now.to_json(), "p": "responses"})
    client.xadd(stream, {"e": earlier.to_json()})

    assert tasks.ingest_usage() == 2

    assert sorted(UsageEvent.objects.values_list("request_id", "endpoint")) == [
        ("req_p_1", "responses"),
        ("req_p_2", ""),
    ]


@needs_redis
def test_ingest_reads_the_one_hour_cache_writes_beside_the_json(stream, issued):
    """This release's relay sends them as the entry's "h"; an entry an earlier release wrote
    (still in the stream during a deploy) has none: 0."""
    client = ledger.usage_stream_client()
    now = usage_record(
        issued.key,
        charged="0.1",
        request_id="req_h_1",
        cache_creation_tokens=1000,
        cache_creation_1h_tokens=600,
    )
    earlier = usage_record(
        issued.key, charged="0.2", request_id="req_h_2", cache_creation_tokens=300
    )
    client.xadd(stream, {"e": now.to_json(), "p": "messages", "h": "600"})
    client.xadd(stream, {"e": earlier.to_json()})

    assert tasks.ingest_usage() == 2

    assert sorted(
        UsageEvent.objects.values_list(
            "request_id", "cache_creation_tokens", "cache_creation_1h_tokens"
        )
    ) == [("req_h_1", 1000, 600), ("req_h_2", 300, 0)]
    assert list(
        UsageDaily.objects.values_list(
            "requests", "cache_creation_tokens", "cache_creation_1h_tokens", "charged_usd"
        )
    ) == [(2, 1300, 600, Decimal("0.3"))]


def test_queued_usage_keeps_its_one_hour_cache_writes(issued):
    """The embedded relay's queue holds the records themselves: the same writer, the same
    rows and rollups."""
    records = [
        usage_record(
            issued.key,
            charged="0.1",
            request_id=f"req_q_{index}",
            cache_creation_tokens=1000,
            cache_creation_1h_tokens=one_hour,
        )
        for index, one_hour in enumerate([600, 0, 1000])
    ]

    assert services.write_queued_usage(records=records) == 3

    assert sorted(UsageEvent.objects.values_list("request_id", "cache_creation_1h_tokens")) == [
        ("req_q_0", 600),
        ("req_q_1", 0),
        ("req_q_2", 1000),
    ]
    assert list(
        UsageDaily.objects.values_list(
            "requests", "cache_creation_tokens", "cache_creation_1h_tokens"
        )
    ) == [(3, 3000, 1600)]


@needs_redis
def test_ingest_moves_the_stream_into_settled_rows_once(stream, issued):
    client = ledger.usage_stream_client()
    first = usage_record(issued.key, charged="0.1", request_id="req_stream_1", created_at=DAY_1)
    second = usage_record(issued.key, charged="0.2", request_id="req_stream_2", created_at=DAY_1)
    # The second entry twice: an ingest killed after its commit, before deleting its entries.
    for record in (first, second, second):
        client.xadd(stream, {"e": record.to_json()})

    assert tasks.ingest_usage() == 2

    assert client.xlen(stream) == 0
    charged = UsageEvent.objects.filter(key=issued.key, settled_at__isnull=False)
    assert sorted(charged.values_list("charged_usd", flat=True)) == [
        Decimal("0.1"),
        Decimal("0.2"),
    ]
    assert spent(issued.key) == [Decimal("0.3")]
    assert list(UsageDaily.objects.values_list("key", "requests", "charged_usd")) == [
        (issued.key.pk, 2, Decimal("0.3"))
    ]
    assert tasks.ingest_usage() == 0
    assert tasks.settle_usage() == 0


@needs_redis
@pytest.mark.cross_slot_allowed(
    "the reaper's script over the previous release's checkpoints and stream, names without a "
    "hash tag that only a Redis that release ran on holds (never a Cluster)"
)
def test_usage_the_previous_release_left_is_ingested_exactly_once(stream, issued, settings):
    """A deploy finds usage under the names before the hash tags (core.keyspace): entries in
    the old stream, one of them taken by the old release's ingest and never acknowledged, and
    a checkpoint of one of its relay workers that died. The new ingest drains them through the
    consumer group beside the new shard's stream, the reaper bills the checkpoint, raising the
    key's total under its new name: each request becomes exactly one row."""
    settings.USAGE_CLAIM_IDLE_SECONDS = 0
    client = ledger.usage_stream_client()
    legacy, group = keyspace.LEGACY_USAGE_STREAM, keyspace.USAGE_INGEST_GROUP
    key = issued.key
    waiting = usage_record(key, charged="0.1", request_id="req_old_waiting")
    taken = usage_record(key, charged="0.2", request_id="req_old_taken")
    checkpointed = usage_record(key, charged="0.4", request_id="req_old_checkpointed")
    new = usage_record(key, charged="0.8", request_id="req_new")
    # The previous release: its group on its stream, one entry delivered to an ingest of its
    # that died, one not read yet, and a dead worker's checkpoint naming its untagged totals.
    client.xgroup_create(legacy, group, id="0", mkstream=True)
    client.xadd(legacy, {"e": taken.to_json()})
    client.xreadgroup(group, "old-host:1", {legacy: ">"}, count=1)
    client.xadd(legacy, {"e": waiting.to_json()})
    old_total = keyspace.LEGACY_SPEND_TOTAL_PREFIX + str(key.pk)
    old_holds = keyspace.LEGACY_RESERVATIONS_PREFIX + str(key.pk)
    client.set(old_total, 5)
    client.hset(old_holds, "hold-old", "40000000:9999999999:old-host:1:dead")
    client.hset(
        keyspace.LEGACY_CHECKPOINTS,
        "hold-old",
        json.dumps(
            {
                "w": "old-host:1:dead",
                "k": key.pk,
                "c": checkpointed.charge_units,
                "e": checkpointed.to_json(),
                "n": [old_total],
                "h": [old_holds],
            }
        ),
    )
    new_total = keyspace.spend_total(key.team_id, key.pk)
    client.set(new_total, 1_000)
    # This release's relay.
    client.xadd(stream, {"e": new.to_json()})

    # The checkpoint's charge raises the total under its new name, and its hold is released;
    # the old total is left to expire (nothing reads it any more).
    assert ledger.reap_checkpoints() == 1
    assert int(client.get(new_total)) == 1_000 + checkpointed.charge_units
    assert int(client.get(old_total)) == 5
    assert client.exists(old_holds) == client.exists(keyspace.LEGACY_CHECKPOINTS) == 0

    assert services.ingest_usage_stream() == 4
    assert services.ingest_usage_stream() == 0

    assert sorted(UsageEvent.objects.values_list("request_id", "charged_usd")) == [
        ("req_new", Decimal("0.8")),
        ("req_old_checkpointed", Decimal("0.4")),
        ("req_old_taken", Decimal("0.2")),
        ("req_old_waiting", Decimal("0.1")),
    ]
    assert spent(key) == [Decimal("1.5")]
    assert client.xlen(legacy) == client.xlen(stream) == 0
    assert client.xpending(legacy, group)["pending"] == 0


_HANGING_INGEST = """
import os, time
import django
django.setup()
from billing.services import recording

def hang(client, entries):
    print("writing", flush=True)
    time.sleep(300)

recording._write_entries = hang
recording.ingest_usage_stream()
"""


@needs_redis
def test_an_ingest_killed_mid_batch_leaves_its_entries_to_another_worker_once(
    stream, issued, settings
):
    """Workers ingest at once through one consumer group. One SIGKILLed mid-batch leaves the
    entries it took pending under its name: no other worker reads them as new, and once they
    have been idle USAGE_CLAIM_IDLE_SECONDS another takes them over and writes each once.
    (Before, one Redis lock let a single worker ingest at a time, and a killed one stopped
    ingestion until its lock expired.)"""
    settings.USAGE_CLAIM_IDLE_SECONDS = 2
    client = ledger.usage_stream_client()
    group = keyspace.USAGE_INGEST_GROUP
    client.xadd(stream, {"e": usage_record(issued.key, charged="0.1").to_json()})
    hanging = subprocess.Popen(
        [sys.executable, "-c", _HANGING_INGEST],
        stdout=subprocess.PIPE,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "hcai.settings.test"},
    )
    try:
        assert hanging.stdout.readline() == b"writing\n"
    finally:
        hanging.kill()
        hanging.wait(10)
    [dead] = client.xinfo_consumers(stream, group)
    assert dead["pending"] == 1

    assert services.ingest_usage_stream() == 0  # taken by the dead worker, not idle long yet
    started = time.monotonic()
    while (written := services.ingest_usage_stream()) == 0:
        assert time.monotonic() - started < 10, "the dead worker's entry was never taken over"
        time.sleep(0.2)

    assert written == 1
    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["req_ledger_test_1"]
    assert client.xpending(stream, group)["pending"] == 0
    assert client.xlen(stream) == 0
    assert services.ingest_usage_stream() == 0


@needs_redis
def test_a_failed_batch_stays_with_its_worker_and_is_written_by_its_next_run(
    stream, two_keys, batch, monkeypatch
):
    """An outage mid-batch leaves the entries pending under this worker: its next run writes
    them first, each once."""
    client = ledger.usage_stream_client()
    group = keyspace.USAGE_INGEST_GROUP
    for record in batch:
        client.xadd(stream, {"e": record.to_json()})

    def outage(*, records):
        raise OperationalError("the database went away")

    monkeypatch.setattr(recording, "write_and_settle_usage", outage)
    with pytest.raises(OperationalError):
        services.ingest_usage_stream()
    monkeypatch.undo()
    assert client.xpending(stream, group)["pending"] == 4

    assert services.ingest_usage_stream() == 4
    assert client.xpending(stream, group)["pending"] == 0
    assert client.xlen(stream) == 0
    assert UsageEvent.objects.count() == 4


@needs_redis
def test_entries_read_again_after_a_crash_change_nothing(stream, two_keys, batch):
    """The whole batch committed, then the worker died before removing its entries: the next
    ingest reads every entry again, and neither writes nor folds any of them a second time."""
    first, second = two_keys
    client = ledger.usage_stream_client()
    for record in batch:
        client.xadd(stream, {"e": record.to_json()})
    assert services.ingest_usage_stream() == 4
    before = rows()
    for record in batch:
        client.xadd(stream, {"e": record.to_json()})

    assert services.ingest_usage_stream() == 0

    assert client.xlen(stream) == 0
    assert rows() == before
    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)


@needs_redis
def test_the_shards_streams_are_written_in_one_batch(issued, member, group, monkeypatch):
    """Teams in different shards append to different streams (core.keyspace); ingest reads
    each on its own but writes them together: one transaction, not one per shard."""
    client = ledger.usage_stream_client()
    elsewhere = TeamFactory(name="Elsewhere", slug="elsewhere")
    assert keyspace.shard(elsewhere.pk) != keyspace.shard(issued.key.team_id)
    MembershipFactory(team=elsewhere, user=member)
    other = make_key(team=elsewhere, owner=member, group=group, actor=member).key
    for key, name in ((issued.key, "mine"), (other, "theirs"), (issued.key, "mine again")):
        record = usage_record(key, charged="0.1", request_id=name)
        client.xadd(keyspace.usage_stream(keyspace.shard(key.team_id)), {"e": record.to_json()})
    writes = []
    write = recording.write_and_settle_usage
    monkeypatch.setattr(
        recording,
        "write_and_settle_usage",
        lambda *, records: writes.append(len(records)) or write(records=records),
    )

    assert services.ingest_usage_stream() == 3

    assert writes == [3]
    assert sorted(UsageEvent.objects.values_list("request_id", "team_id")) == [
        ("mine", issued.key.team_id),
        ("mine again", issued.key.team_id),
        ("theirs", elsewhere.pk),
    ]
    assert services.ingest_usage_stream() == 0


@needs_redis
def test_ingest_in_small_batches_folds_each_entry_once(stream, two_keys, batch):
    first, second = two_keys
    client = ledger.usage_stream_client()
    for record in batch:
        client.xadd(stream, {"e": record.to_json()})

    assert services.ingest_usage_stream(batch_size=3) == 4

    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)


@needs_redis
@pytest.mark.parametrize(("chunk", "batch_size"), [(1, 3), (2, 3), (3, 2), (4, 1000)])
def test_ingest_reads_the_stream_in_chunks_and_writes_each_entry_once(
    stream, two_keys, batch, monkeypatch, chunk, batch_size
):
    """A read of 1,000 entries held Redis for up to a millisecond: batches are read in chunks,
    which must neither skip nor repeat an entry at their seams."""
    first, second = two_keys
    client = ledger.usage_stream_client()
    for record in batch:
        client.xadd(stream, {"e": record.to_json()})
    monkeypatch.setattr(recording, "_READ_CHUNK", chunk)
    counts, read = [], []
    xreadgroup = client.xreadgroup

    def counting_xreadgroup(group, consumer, streams, count):
        counts.append(count)
        reply = xreadgroup(group, consumer, streams, count=count)
        read.extend(entry_id for entry_id, _ in (reply[0][1] if reply else []))
        return reply

    monkeypatch.setattr(client, "xreadgroup", counting_xreadgroup)

    assert services.ingest_usage_stream(batch_size=batch_size) == 4

    assert max(counts) <= chunk
    assert len(read) == len(set(read)) == 4  # each entry read once
    assert client.xlen(stream) == 0
    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)


@needs_redis
def test_ingest_takes_only_what_was_in_the_stream_when_it_began(
    stream, two_keys, batch, monkeypatch
):
    """Entries the relay appends while an ingest runs wait for the next run, so a steady
    trickle cannot keep one run going in tiny batches."""
    client = ledger.usage_stream_client()
    for record in batch[:3]:
        client.xadd(stream, {"e": record.to_json()})
    write = recording.write_and_settle_usage

    def write_while_the_relay_appends(*, records):
        client.xadd(stream, {"e": batch[3].to_json()})
        return write(records=records)

    monkeypatch.setattr(recording, "write_and_settle_usage", write_while_the_relay_appends)

    assert services.ingest_usage_stream(batch_size=2) == 3

    assert client.xlen(stream) == 2  # batch[3], appended during each of the two batches
    monkeypatch.undo()
    assert services.ingest_usage_stream() == 1
    assert client.xlen(stream) == 0


@needs_redis
def test_entries_that_cannot_be_written_are_set_aside_and_the_rest_ingested(
    stream, two_keys, batch, caplog
):
    """One bad entry used to fail its batch on every run and stop ingestion for every team."""
    first, second = two_keys
    client = ledger.usage_stream_client()
    refused = dataclasses.replace(batch[3], request_id="req_refused", input_tokens=-1)
    client.xadd(stream, {"e": batch[0].to_json()})
    garbled = client.xadd(stream, {"e": b'{"key_id": 1, "team_'})
    client.xadd(stream, {"e": batch[1].to_json()})
    refused_id = client.xadd(stream, {"e": refused.to_json()})
    client.xadd(stream, {"e": batch[2].to_json()})
    client.xadd(stream, {"e": batch[3].to_json()})

    assert services.ingest_usage_stream() == 4

    assert client.xlen(stream) == 0
    assert [row[1] for row in rows()] == ["req_1", "req_2", "req_3", "req_4"]
    assert spent(first, second) == [Decimal("0.15006174"), Decimal("1.25")]
    assert rollups() == expected_rollups(first, second)
    set_aside = client.xrange(keyspace.UNWRITABLE_STREAM)
    assert [fields[b"id"] for _, fields in set_aside] == [garbled, refused_id]
    assert set_aside[0][1][b"e"] == b'{"key_id": 1, "team_'
    assert set_aside[0][1][b"error"].startswith(b"JSONDecodeError: ")
    assert set_aside[1][1][b"e"] == refused.to_json().encode()
    assert set_aside[1][1][b"error"].startswith(b"IntegrityError: ")
    assert f"Usage entry {garbled.decode()} could not be written (JSONDecodeError: " in caplog.text
    assert services.ingest_usage_stream() == 0


@needs_redis
def test_an_outage_while_ingesting_sets_nothing_aside(stream, two_keys, batch, monkeypatch):
    client = ledger.usage_stream_client()
    for record in batch:
        client.xadd(stream, {"e": record.to_json()})

    def database_down(*, records):
        raise OperationalError("connection refused")

    monkeypatch.setattr(recording, "write_and_settle_usage", database_down)
    with pytest.raises(OperationalError):
        services.ingest_usage_stream()

    assert client.xlen(stream) == 4
    assert client.xlen(keyspace.UNWRITABLE_STREAM) == 0
    monkeypatch.undo()
    assert services.ingest_usage_stream() == 4


@embedded_only
def test_ingest_is_a_no_op_on_the_embedded_default(issued):
    assert tasks.ingest_usage() == 0


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite serialises writers, so there is no lock order to get wrong",
)
@pytest.mark.django_db(transaction=True)
def test_writing_and_settling_at_once_cannot_deadlock(team, member):
    """Settlement folds rows written unsettled while ingestion writes and folds new ones, for
    the same keys, models and days: both lock key rows, then rollup rows, in ascending order."""
    group = GroupFactory(name="Mixed", multiplier=Decimal("1.5"))
    keys = [make_key(team=team, owner=member, group=group, name=f"k{n}").key for n in range(4)]
    models = ["claude-sonnet-4-5", "gpt-4o"]
    # Each key: 250 rows of each model, written unsettled at $0.00000001 and 1 input token...
    UsageEvent.objects.bulk_create(
        UsageEvent(
            key=keys[index % 4],
            team=team,
            group=group,
            model=models[index // 4 % 2],
            input_tokens=1,
            charged_usd=Decimal("0.00000001"),
            status_code=200,
            created_at=DAY_1,
        )
        for index in range(2000)
    )
    # ... and 250 records of each model, to ingest, at $0.00000002 and 2 input tokens.
    records = [
        usage_record(
            keys[index % 4],
            charged="0.00000002",
            model=models[index // 4 % 2],
            input_tokens=2,
            request_id=f"req_{index}",
            created_at=DAY_1 + timedelta(microseconds=index),
        )
        for index in range(2000)
    ]
    start = threading.Barrier(2)
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def settle():
        start.wait(timeout=30)
        results["settled"] = services.settle_usage(batch_size=50)

    def write():
        start.wait(timeout=30)
        results["written"] = sum(
            services.write_and_settle_usage(records=records[offset : offset + 50])
            for offset in range(0, 2000, 50)
        )

    join([start_thread(settle, errors), start_thread(write, errors)])

    assert errors == []
    assert results == {"settled": 2000, "written": 2000}
    assert not UsageEvent.objects.filter(settled_at__isnull=True).exists()
    assert spent(*keys) == [Decimal("0.00001500")] * 4
    assert (
        list(
            UsageDaily.objects.order_by("key_id", "model").values_list(
                "model", "requests", "input_tokens", "charged_usd"
            )
        )
        == [
            ("claude-sonnet-4-5", 500, 750, Decimal("0.00000750")),
            ("gpt-4o", 500, 750, Decimal("0.00000750")),
        ]
        * 4
    )
