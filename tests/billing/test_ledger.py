"""billing.ledger: the usage record's wire format, and the running total."""

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing import ledger, services
from billing.models import UsageEvent
from billing.services import settle_usage
from core import keyspace
from keys.models import ApiKey
from tests.billing.factories import UsageEventFactory, usage_record

needs_redis = pytest.mark.skipif(settings.REDIS is None, reason="the stream lives in Redis")
embedded_only = pytest.mark.skipif(settings.REDIS is not None, reason="the embedded default")


# A stream entry as releases before this one wrote it (`dataclasses.asdict`, then the three
# conversions), byte for byte: entries in the stream during a deploy must still be read.
EARLIER_RELEASE_ENTRY = (
    '{"key_id":7,"team_id":3,"group_id":null,"model":"claude-sonnet-4-5","input_tokens":100,'
    '"output_tokens":20,"cache_creation_tokens":5,"cache_read_tokens":6,"cost_usd":"0.00029400",'
    '"charged_usd":"0.00044100","status_code":200,"latency_ms":12,"client_ip":"2001:db8::1",'
    '"session_id":"s\\u00e9ance \\"1\\"","request_id":"req_01","created_at":'
    '"2025-03-01T10:00:00.000123+00:00"}'
)
EARLIER_RELEASE_RECORD = ledger.UsageRecord(
    key_id=7,
    team_id=3,
    group_id=None,
    model="claude-sonnet-4-5",
    input_tokens=100,
    output_tokens=20,
    cache_creation_tokens=5,
    cache_read_tokens=6,
    cost_usd=Decimal("0.00029400"),
    charged_usd=Decimal("0.00044100"),
    status_code=200,
    latency_ms=12,
    client_ip="2001:db8::1",
    session_id='séance "1"',
    request_id="req_01",
    created_at=datetime(2025, 3, 1, 10, 0, 0, 123, tzinfo=UTC),
)


def test_record_round_trips_through_json(issued):
    record = usage_record(issued.key, charged="0.00044100")

    assert ledger.UsageRecord.from_json(record.to_json()) == record
    assert record.charge_units == 44100


def test_an_entry_written_by_an_earlier_release_is_read():
    assert ledger.UsageRecord.from_json(EARLIER_RELEASE_ENTRY) == EARLIER_RELEASE_RECORD
    assert ledger.UsageRecord.from_json(EARLIER_RELEASE_ENTRY.encode()) == EARLIER_RELEASE_RECORD


def test_the_wire_format_is_the_one_earlier_releases_read():
    """An ingest worker of the earlier release may read entries this release's relay wrote."""
    assert json.loads(EARLIER_RELEASE_RECORD.to_json()) == json.loads(EARLIER_RELEASE_ENTRY)
    assert EARLIER_RELEASE_RECORD.to_json() == EARLIER_RELEASE_ENTRY


def test_the_one_hour_cache_writes_go_beside_the_json_not_in_it():
    """An earlier release's from_json refuses a name it does not know: the 1-hour count (like
    the endpoint) travels beside the JSON, which stays the one earlier releases read."""
    record = dataclasses.replace(
        EARLIER_RELEASE_RECORD, cache_creation_1h_tokens=4, endpoint="messages"
    )

    assert record.to_json() == EARLIER_RELEASE_ENTRY
    assert (
        ledger.UsageRecord.from_json(
            record.to_json(), endpoint="messages", cache_creation_1h_tokens=4
        )
        == record
    )


def test_an_earlier_release_entry_has_no_one_hour_cache_writes():
    assert ledger.UsageRecord.from_json(EARLIER_RELEASE_ENTRY).cache_creation_1h_tokens == 0


def test_names_a_later_release_adds_to_the_json_are_left_out():
    later = json.loads(EARLIER_RELEASE_ENTRY) | {"cache_creation_1h_tokens": 3, "tier": "x"}

    assert ledger.UsageRecord.from_json(json.dumps(later)) == dataclasses.replace(
        EARLIER_RELEASE_RECORD, cache_creation_1h_tokens=3
    )


def test_the_row_has_the_records_fields_with_text_cut_to_its_columns():
    """Client-supplied text (session and request ids) and the model may be longer than the
    columns; every other value goes into the row as it is."""
    record = dataclasses.replace(
        EARLIER_RELEASE_RECORD, model="m" * 250, session_id="s" * 200, request_id="r" * 100
    )

    row = record.event_fields()

    assert row == {
        **dataclasses.asdict(record),
        "model": "m" * 200,
        "session_id": "s" * 128,
        "request_id": "r" * 64,
    }
    assert list(row) == [field.name for field in dataclasses.fields(record)]


def test_rebuild_adds_settled_and_unsettled_spend(issued):
    ApiKey.objects.filter(pk=issued.key.pk).update(spent_usd=Decimal("1.25"))
    UsageEventFactory(key=issued.key, charged_usd=Decimal("0.5"), settled_at=timezone.now())
    UsageEventFactory(key=issued.key, charged_usd=Decimal("0.125"))
    UsageEventFactory(key=issued.key, charged_usd=Decimal("0.00000001"))

    total = ledger.spend_total_rebuild(issued.key.pk)

    # The settled event is already inside spent_usd and is not counted twice.
    assert total == ledger.usd_to_units(Decimal("1.37500001"))
    assert ledger.spend_total(issued.key.pk) == total


def test_rebuild_never_overwrites_a_live_total(issued):
    ledger.spend_totals().add(keyspace.spend_total(issued.key.team_id, issued.key.pk), 777, 60)
    UsageEventFactory(key=issued.key, charged_usd=Decimal("3"))

    assert ledger.spend_total_rebuild(issued.key.pk) == 777
    assert ledger.spend_total(issued.key.pk) == 777


def test_forgotten_total_is_rebuilt_not_zeroed(issued):
    UsageEventFactory(key=issued.key, charged_usd=Decimal("2"))
    ledger.spend_total_rebuild(issued.key.pk)

    ledger.spend_total_forget([issued.key.pk])

    assert ledger.spend_total(issued.key.pk) is None
    assert ledger.spend_total_rebuild(issued.key.pk) == ledger.usd_to_units(Decimal("2"))


@embedded_only
def test_embedded_rebuild_counts_events_not_written_yet(issued):
    ledger.spend_total_rebuild(issued.key.pk)
    record = usage_record(issued.key, charged="0.75")

    ledger.local_totals().count(record, [keyspace.spend_total(record.team_id, record.key_id)])
    ledger.spend_total_forget([issued.key.pk])
    rebuilt_before_write = ledger.spend_total_rebuild(issued.key.pk)
    services.write_queued_usage(records=[record])
    ledger.spend_total_forget([issued.key.pk])
    rebuilt_after_write = ledger.spend_total_rebuild(issued.key.pk)

    assert rebuilt_before_write == rebuilt_after_write == ledger.usd_to_units(Decimal("0.75"))
    assert UsageEvent.objects.filter(key=issued.key).count() == 1


def shard_stream(key: ApiKey) -> str:
    """The usage stream the relay appends the key's usage to: its team's shard's."""
    return keyspace.usage_stream(keyspace.shard(key.team_id))


@needs_redis
@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(shard_stream, id="the team's shard's stream"),
        pytest.param(lambda key: keyspace.LEGACY_USAGE_STREAM, id="the legacy stream"),
    ],
)
def test_rebuild_counts_stream_events_not_ingested_yet(issued, stream):
    """In its team's shard's stream, or still in the one the release before the hash tags
    appended to (a deploy's overlap)."""
    client = ledger.usage_stream_client()
    stream = stream(issued.key)
    ingested = usage_record(issued.key, charged="0.5", request_id="req_in_db")
    services.write_and_settle_usage(records=[ingested])
    pending = usage_record(issued.key, charged="0.25", request_id="req_in_stream")
    # `ingested` is still in the stream too (its ingest has not deleted it yet): counted once.
    client.xadd(stream, {"e": ingested.to_json()})
    client.xadd(stream, {"e": pending.to_json()})

    assert ledger.spend_total_rebuild(issued.key.pk) == ledger.usd_to_units(Decimal("0.75"))


@needs_redis
def test_rebuild_reads_a_long_backlog_in_chunks_and_counts_only_its_key(issued, monkeypatch):
    """A backlog after an ingest outage: read in chunks, and only entries of this key parsed
    (the key id is the first field); one whose key id merely starts the same is another key's,
    and an entry with its fields in another order is still read."""
    monkeypatch.setattr(ledger, "_REBUILD_CHUNK", 7)
    client = ledger.usage_stream_client()
    stream = shard_stream(issued.key)
    look_alike = issued.key.pk * 10 + 1
    for number in range(40):
        other = usage_record(issued.key, charged="9", request_id=f"req_other_{number}")
        client.xadd(stream, {"e": dataclasses.replace(other, key_id=look_alike).to_json()})
        if number % 10 == 0:
            mine = usage_record(issued.key, charged="0.25", request_id=f"req_mine_{number}")
            client.xadd(stream, {"e": mine.to_json()})
    reordered = json.loads(
        usage_record(issued.key, charged="0.5", request_id="req_reordered").to_json()
    )
    client.xadd(stream, {"e": json.dumps(dict(reversed(reordered.items())))})

    assert ledger.spend_total_rebuild(issued.key.pk) == ledger.usd_to_units(Decimal("1.5"))


def test_reconcile_raises_a_total_that_missed_an_event(issued):
    UsageEventFactory(key=issued.key, charged_usd=Decimal("2"))
    # As if the event had been recorded while the total was being rebuilt without it.
    ledger.spend_totals().add(
        keyspace.spend_total(issued.key.team_id, issued.key.pk),
        ledger.usd_to_units(Decimal("0.5")),
        60,
    )

    assert ledger.spend_total_reconcile([issued.key.pk]) == 1

    assert ledger.spend_total(issued.key.pk) == ledger.usd_to_units(Decimal("2"))


def test_reconcile_never_lowers_a_total_ahead_of_the_database(issued):
    UsageEventFactory(key=issued.key, charged_usd=Decimal("2"))
    # Charges still waiting to be written count in the total but not in the database.
    ahead = ledger.usd_to_units(Decimal("3"))
    ledger.spend_totals().add(keyspace.spend_total(issued.key.team_id, issued.key.pk), ahead, 60)

    assert ledger.spend_total_reconcile([issued.key.pk]) == 0

    assert ledger.spend_total(issued.key.pk) == ahead


def test_reconcile_leaves_a_missing_total_for_the_next_request(issued):
    UsageEventFactory(key=issued.key, charged_usd=Decimal("2"))

    assert ledger.spend_total_reconcile([issued.key.pk]) == 0

    assert ledger.spend_total(issued.key.pk) is None


def test_settlement_reconciles_the_totals_of_the_keys_it_settled(
    issued, django_capture_on_commit_callbacks
):
    UsageEventFactory(key=issued.key, charged_usd=Decimal("1.5"))
    ledger.spend_totals().add(keyspace.spend_total(issued.key.team_id, issued.key.pk), 0, 60)

    with django_capture_on_commit_callbacks(execute=True):
        assert settle_usage() == 1

    assert ledger.spend_total(issued.key.pk) == ledger.usd_to_units(Decimal("1.5"))


def test_the_database_holds_one_row_per_relayed_request(issued):
    record = usage_record(issued.key, charged="0.5")
    services.write_and_settle_usage(records=[record])

    with pytest.raises(IntegrityError), transaction.atomic():
        UsageEvent(**record.event_fields()).save()

    assert UsageEvent.objects.filter(request_id=record.request_id).count() == 1


def test_rows_without_a_request_id_may_share_a_timestamp(issued):
    moment = timezone.now()
    UsageEventFactory(key=issued.key, request_id="", created_at=moment)
    UsageEventFactory(key=issued.key, request_id="", created_at=moment)

    assert UsageEvent.objects.filter(key=issued.key, created_at=moment).count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
def test_the_duplicate_check_of_a_full_batch_reads_an_index_without_statistics(issued):
    """Ingest checks each batch of 1,000 against the table. With no statistics on it (a new
    table, autovacuum off or behind), the planner scanned the whole table for every batch;
    bounded by the batch's time span, the plan reads an index."""
    day = datetime(2025, 3, 1, tzinfo=UTC)
    UsageEvent.objects.bulk_create(
        UsageEvent(
            key=issued.key,
            team=issued.key.team,
            model="claude-sonnet-4-5",
            status_code=200,
            request_id=f"req_old_{n:05d}",
            created_at=day + timedelta(seconds=n),
        )
        for n in range(5_000)
    )
    moment = day + timedelta(days=1)
    records = [
        usage_record(issued.key, charged="0.1", request_id=f"req_{n:04d}", created_at=moment)
        for n in range(1000)
    ]
    queries = []

    def capture(execute, sql, params, many, context):
        queries.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        assert ledger.identities_in_db([record.identity for record in records]) == set()
    [(sql, params)] = queries
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname = %s",
            [UsageEvent._meta.db_table],
        )
        assert cursor.fetchone() in (None, (None, None))
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan
