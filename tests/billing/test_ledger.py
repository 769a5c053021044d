"""billing.ledger: writing usage once, the Redis stream's ingest, and the running total."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import ledger, tasks
from billing.models import UsageEvent
from billing.services import settle_usage
from keys.models import ApiKey
from tests.billing.factories import UsageEventFactory

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="the stream lives in Redis")
embedded_only = pytest.mark.skipif(bool(settings.REDIS_URL), reason="the embedded default")


def record_for(key, *, charged: str, request_id: str = "req_ledger_test_1", **fields):
    values = {
        "key_id": key.pk,
        "team_id": key.team_id,
        "group_id": key.group_id,
        "model": "claude-sonnet-4-5",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
        "cost_usd": Decimal(charged),
        "charged_usd": Decimal(charged),
        "status_code": 200,
        "latency_ms": 12,
        "client_ip": "203.0.113.7",
        "session_id": "session-1",
        "request_id": request_id,
        "created_at": timezone.now(),
    }
    return ledger.UsageRecord(**{**values, **fields})


def test_record_round_trips_through_json(issued):
    record = record_for(issued.key, charged="0.00044100")

    assert ledger.UsageRecord.from_json(record.to_json()) == record
    assert record.charge_units == 44100


def test_write_usage_events_writes_each_record_once(issued):
    record = record_for(issued.key, charged="0.5")
    same_id_later = record_for(
        issued.key, charged="0.25", created_at=record.created_at + timedelta(seconds=1)
    )

    assert ledger.write_usage_events([record]) == 1
    assert ledger.write_usage_events([record, same_id_later]) == 1

    events = UsageEvent.objects.filter(key=issued.key).order_by("created_at")
    # A client may reuse a request id: with a different timestamp it is a different request.
    assert [event.charged_usd for event in events] == [Decimal("0.5"), Decimal("0.25")]
    assert events[0].client_ip == "203.0.113.7"
    assert events[0].session_id == "session-1"


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
    cache.set(ledger.spend_total_cache_key(issued.key.pk), 777)
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
    record = record_for(issued.key, charged="0.75")

    ledger.count_locally(record)
    ledger.spend_total_forget([issued.key.pk])
    rebuilt_before_write = ledger.spend_total_rebuild(issued.key.pk)
    ledger.write_locally(record)
    ledger.spend_total_forget([issued.key.pk])
    rebuilt_after_write = ledger.spend_total_rebuild(issued.key.pk)

    assert rebuilt_before_write == rebuilt_after_write == ledger.usd_to_units(Decimal("0.75"))
    assert UsageEvent.objects.filter(key=issued.key).count() == 1


@needs_redis
def test_ingest_moves_the_stream_into_the_database_once(issued):
    client = ledger._redis()
    stream = ledger.usage_stream_name()
    first = record_for(issued.key, charged="0.1", request_id="req_stream_1")
    second = record_for(issued.key, charged="0.2", request_id="req_stream_2")
    # The second entry twice: an ingest killed after its commit, before deleting its entries.
    for record in (first, second, second):
        client.xadd(stream, {"e": record.to_json()})

    assert tasks.ingest_usage() == 2
    assert client.xlen(stream) == 0
    assert tasks.ingest_usage() == 0
    charged = UsageEvent.objects.filter(key=issued.key).values_list("charged_usd", flat=True)
    assert sorted(charged) == [Decimal("0.1"), Decimal("0.2")]


@needs_redis
def test_rebuild_counts_stream_events_not_ingested_yet(issued):
    client = ledger._redis()
    stream = ledger.usage_stream_name()
    ingested = record_for(issued.key, charged="0.5", request_id="req_in_db")
    ledger.write_usage_events([ingested])
    pending = record_for(issued.key, charged="0.25", request_id="req_in_stream")
    # `ingested` is still in the stream too (its ingest has not deleted it yet): counted once.
    client.xadd(stream, {"e": ingested.to_json()})
    client.xadd(stream, {"e": pending.to_json()})

    assert ledger.spend_total_rebuild(issued.key.pk) == ledger.usd_to_units(Decimal("0.75"))


@embedded_only
def test_ingest_is_a_no_op_on_the_embedded_default(issued):
    assert tasks.ingest_usage() == 0


def test_reconcile_raises_a_total_that_missed_an_event(issued):
    UsageEventFactory(key=issued.key, charged_usd=Decimal("2"))
    # As if the event had been recorded while the total was being rebuilt without it.
    cache.set(ledger.spend_total_cache_key(issued.key.pk), ledger.usd_to_units(Decimal("0.5")))

    assert ledger.spend_total_reconcile([issued.key.pk]) == 1

    assert ledger.spend_total(issued.key.pk) == ledger.usd_to_units(Decimal("2"))


def test_reconcile_never_lowers_a_total_ahead_of_the_database(issued):
    UsageEventFactory(key=issued.key, charged_usd=Decimal("2"))
    # Charges still waiting to be written count in the total but not in the database.
    ahead = ledger.usd_to_units(Decimal("3"))
    cache.set(ledger.spend_total_cache_key(issued.key.pk), ahead)

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
    cache.set(ledger.spend_total_cache_key(issued.key.pk), 0)

    with django_capture_on_commit_callbacks(execute=True):
        assert settle_usage() == 1

    assert ledger.spend_total(issued.key.pk) == ledger.usd_to_units(Decimal("1.5"))


def test_the_database_holds_one_row_per_relayed_request(issued):
    record = record_for(issued.key, charged="0.5")
    ledger.write_usage_events([record])

    with pytest.raises(IntegrityError), transaction.atomic():
        record.to_event().save()

    assert UsageEvent.objects.filter(request_id=record.request_id).count() == 1


def test_rows_without_a_request_id_may_share_a_timestamp(issued):
    moment = timezone.now()
    UsageEventFactory(key=issued.key, request_id="", created_at=moment)
    UsageEventFactory(key=issued.key, request_id="", created_at=moment)

    assert UsageEvent.objects.filter(key=issued.key, created_at=moment).count() == 2
