"""proxy.store: against a real Redis, many requests at once on the relay's one connection and
the keys it shares with the ledger; on the embedded default, the queue of usage records and its
one writer."""

import asyncio
import dataclasses
import threading
from decimal import Decimal

import pytest
from django.conf import settings

from billing import ledger
from billing.models import UsageEvent
from billing.services import ingest_usage_stream, recording
from billing.windows import Counter, Scope
from core import keyspace
from keys.models import ApiKey
from proxy.quota import Admission, Refused
from proxy.redis_connect import client_for
from proxy.store import LocalStore, RedisStore, run_db
from tests.billing.factories import usage_record

from .conftest import quota_plan

needs_redis = pytest.mark.skipif(settings.REDIS is None, reason="needs Redis")
embedded_only = pytest.mark.skipif(settings.REDIS is not None, reason="the embedded default")


@needs_redis
def test_hundreds_of_concurrent_commands_all_succeed():
    """Each in-flight request has a command in flight. redis-py's default pool refused commands
    past 100 in flight (measured in bench/ as 500s at c256); the multiplexed connection has no
    such limit."""
    count = 1000

    async def burst() -> list:
        store = RedisStore(client_for(settings.REDIS))
        try:
            digests = [f"concurrency-test-{n:04d}" for n in range(count)]
            return await asyncio.gather(
                *(store.get_key_state(digest) for digest in digests), return_exceptions=True
            )
        finally:
            await store.close()

    results = asyncio.run(burst())

    assert [result for result in results if isinstance(result, BaseException)] == []
    assert results == [None] * count


@needs_redis
def test_snapshot_and_admission_together_after_redis_forgot_the_script():
    """The admission script sent by its SHA-1 next to the snapshot read; after a Redis restart
    (SCRIPT FLUSH here) it is loaded again and the admission still made, exactly once."""
    plan = quota_plan(987_654, limit_units=1_000, estimate_units=300)

    async def scenario():
        store = RedisStore(client_for(settings.REDIS))
        total = keyspace.spend_total(plan.team_id, plan.key_id)
        reservations = keyspace.reservations(plan.team_id, plan.key_id)
        try:
            await store.redis.execute("SET", total, 500, "EX", 60)
            await store.put_key_state("store-test-digest", b'{"a":1}', 60, b"")
            await store.redis.execute("SCRIPT", "FLUSH")
            first = await store.get_key_state_and_admit("store-test-digest", plan, "req_1")
            second = await store.get_key_state_and_admit("store-test-digest", plan, "req_2")
            held = await store.redis.execute("HKEYS", reservations)
            return first, second, sorted(held)
        finally:
            await store.redis.execute_together(
                ("DEL", total),
                ("DEL", reservations),
                ("DEL", keyspace.snapshot("store-test-digest")),
            )
            await store.close()

    first, second, held = asyncio.run(scenario())

    assert first == (b'{"a":1}', Admission(True, held_units=300))
    # 500 spent + req_1's 300 held leave 200 of 1,000: req_2 is admitted holding those 200.
    assert second == (b'{"a":1}', Admission(True, held_units=200))
    assert held == [keyspace.HOLDS_SUM.encode(), b"req_1", b"req_2"]


@needs_redis
def test_a_dead_workers_checkpoint_is_billed_once_and_a_live_ones_is_left_alone(issued):
    """reap_checkpoints bills a checkpoint only once its worker's key has expired; a worker
    that was only frozen and records afterwards finds its checkpoint gone and adds nothing."""
    key = issued.key
    client = ledger.usage_stream_client()
    shard = keyspace.shard(key.team_id)
    stream = keyspace.usage_stream(shard)
    checkpoint = usage_record(key, charged="0.25", request_id="req_checkpointed")
    final = dataclasses.replace(checkpoint, charged_usd=Decimal("0.40"), status_code=200)
    total = keyspace.spend_total(key.team_id, key.pk)
    reservations = keyspace.reservations(key.team_id, key.pk)

    async def scenario():
        store = RedisStore(client_for(settings.REDIS))
        try:
            await store.redis.execute("SET", total, 1_000)
            await store.redis.execute("HSET", reservations, "hold-1", "999:9999999999")
            await store.checkpoint(checkpoint, hold_id="hold-1")
            alive = ledger.reap_checkpoints()  # its worker is alive
            # Taken for dead where its checkpoint is: in the team's shard (alive elsewhere).
            await store.redis.execute("DEL", keyspace.relay_alive(shard, store.worker_id))
            dead = ledger.reap_checkpoints()  # ... and now taken for dead
            await store.record(final, hold_id="hold-1", checkpointed=True)
            return alive, dead
        finally:
            await store.close()

    alive, dead = asyncio.run(scenario())

    assert (alive, dead) == (0, 1)
    [(_, fields)] = client.xrange(stream, "-", "+")
    assert ledger.UsageRecord.from_json(fields[b"e"]) == checkpoint
    assert int(client.get(total)) == 1_000 + ledger.usd_to_units(Decimal("0.25"))
    assert client.hlen(reservations) == 0
    assert client.hlen(keyspace.checkpoints(shard)) == 0


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_the_relay_and_the_ledger_share_one_running_total(issued):
    """The ledger builds the total, the relay's scripts read and raise it, the ledger reads
    and reconciles it, and ingest writes what the relay appended: one set of names, and
    integers as Redis itself stores them (no serializer in between)."""
    key = issued.key
    plan = quota_plan(key.pk, team_id=key.team_id, limit_units=10**8, estimate_units=10**6)
    record = usage_record(key, charged="0.25", request_id="req_shared")

    async def scenario():
        store = RedisStore(client_for(settings.REDIS))
        try:
            missing = await store.admit(plan, "hold-1")
            rebuilt = await run_db(ledger.spend_total_rebuild, key.pk)
            admitted = await store.admit(plan, "hold-1")
            await store.record(record, hold_id="hold-1")
            after_record = await run_db(ledger.spend_total, key.pk)
            await run_db(ledger.spend_total_forget, [key.pk])
            forgotten = await store.admit(plan, "hold-2")
            return missing, rebuilt, admitted, after_record, forgotten
        finally:
            await store.close()

    missing, rebuilt, admitted, after_record, forgotten = asyncio.run(scenario())

    assert missing == Admission(False, missing=(0,))
    assert rebuilt == 0
    assert admitted == Admission(True, held_units=10**6)
    assert after_record == ledger.usd_to_units(Decimal("0.25"))
    assert forgotten == Admission(False, missing=(0,))
    assert ingest_usage_stream() == 1
    assert UsageEvent.objects.get().request_id == "req_shared"


class BlockedWrites:
    """Holds the embedded writer's batches (what `write_and_settle_usage` is given) until
    released, and remembers each batch's size."""

    def __init__(self, monkeypatch) -> None:
        self.sizes: list[int] = []
        self.writing = threading.Event()
        self.release = threading.Event()
        write = recording.write_and_settle_usage

        def held(*, records):
            records = list(records)
            self.sizes.append(len(records))
            self.writing.set()
            assert self.release.wait(10), "the test never released the writer"
            return write(records=records)

        monkeypatch.setattr(recording, "write_and_settle_usage", held)

    async def until_writing(self) -> None:
        assert await asyncio.to_thread(self.writing.wait, 10), "the writer never began"


@embedded_only
@pytest.mark.django_db(transaction=True)
def test_the_embedded_writer_writes_what_queued_meanwhile_in_one_batch_and_close_loses_none(
    issued, monkeypatch
):
    writes = BlockedWrites(monkeypatch)
    records = [
        usage_record(issued.key, charged="0.01", request_id=f"req_{number}") for number in range(10)
    ]

    async def scenario():
        store = LocalStore()
        await store.record(records[0], hold_id="hold-0")
        await writes.until_writing()  # the first record alone: the relay was idle
        for number, record in enumerate(records[1:], start=1):
            await store.record(record, hold_id=f"hold-{number}")
        writes.release.set()
        await store.close()

    asyncio.run(scenario())

    assert writes.sizes == [1, 9]
    assert sorted(UsageEvent.objects.filter(settled_at__isnull=False).values_list(
        "request_id", flat=True
    )) == sorted(record.request_id for record in records)  # fmt: skip
    assert ApiKey.objects.get(pk=issued.key.pk).spent_usd == Decimal("0.10")
    assert (
        ledger.local_totals().unwritten(Counter(Scope.KEY, issued.key.team_id, issued.key.pk)) == []
    )


@embedded_only
@pytest.mark.django_db(transaction=True)
def test_a_quota_holds_while_records_wait_to_be_written(issued, monkeypatch):
    """Records queued, their writes held, and the running total lost meanwhile: the rebuilt
    total still counts them, so the quota refuses what it cannot pay for."""
    writes = BlockedWrites(monkeypatch)
    key_id = issued.key.pk
    plan = quota_plan(
        key_id,
        team_id=issued.key.team_id,
        limit_units=ledger.usd_to_units(Decimal("1")),
        estimate_units=ledger.usd_to_units(Decimal("0.30")),
        minimum_units=ledger.usd_to_units(Decimal("0.01")),
    )

    async def scenario():
        store = LocalStore()
        await run_db(ledger.spend_total_rebuild, key_id)
        for number in range(3):
            record = usage_record(issued.key, charged="0.25", request_id=f"req_{number}")
            await store.record(record, hold_id=f"hold-{number}")
        await writes.until_writing()
        await run_db(ledger.spend_total_forget, [key_id])  # e.g. the cache lost it
        rebuilt = await run_db(ledger.spend_total_rebuild, key_id)
        first = await store.admit(plan, "hold-a")
        second = await store.admit(plan, "hold-b")
        writes.release.set()
        await store.close()
        await run_db(ledger.spend_total_forget, [key_id])
        return rebuilt, first, second, await run_db(ledger.spend_total_rebuild, key_id)

    rebuilt, first, second, rebuilt_after_writes = asyncio.run(scenario())

    spent = ledger.usd_to_units(Decimal("0.75"))
    assert rebuilt == rebuilt_after_writes == spent
    # $0.25 left: the first request holds it all, and the second finds nothing left.
    assert first == Admission(True, held_units=ledger.usd_to_units(Decimal("0.25")))
    assert second == Admission(
        False, spent, ledger.usd_to_units(Decimal("0.25")), refused=Refused.SPEND
    )
    assert UsageEvent.objects.filter(key_id=key_id).count() == 3


@needs_redis
def test_the_record_script_sends_the_endpoint_and_one_hour_writes_beside_the_json(issued):
    record = usage_record(
        issued.key,
        charged="0.1",
        endpoint="count_tokens",
        cache_creation_tokens=900,
        cache_creation_1h_tokens=600,
    )

    async def scenario():
        store = RedisStore(client_for(settings.REDIS))
        try:
            await store.record(record, hold_id="hold-p")
            stream = keyspace.usage_stream(keyspace.shard(record.team_id))
            return await store.redis.execute("XRANGE", stream, "-", "+")
        finally:
            await store.close()

    [(_, fields)] = asyncio.run(scenario())

    entry = dict(zip(fields[::2], fields[1::2], strict=True))
    assert entry == {b"e": record.to_json().encode(), b"p": b"count_tokens", b"h": b"600"}
    assert "cache_creation_1h_tokens" not in record.to_json()
    assert (
        ledger.UsageRecord.from_json(
            entry[b"e"], endpoint="count_tokens", cache_creation_1h_tokens=600
        )
        == record
    )


@needs_redis
def test_holds_keep_their_sum_and_stale_ones_are_dropped_only_when_they_would_refuse():
    """An admission reads a hash's sum, not every hold in it. A hold of a dead worker still
    counts in the sum until an admission would be refused: then the holds are scanned, the
    dead one dropped, and the request admitted."""
    plan = quota_plan(987_655, limit_units=1_000, estimate_units=400)
    total = keyspace.spend_total(plan.team_id, plan.key_id)
    holds = keyspace.reservations(plan.team_id, plan.key_id)
    dead = "deadhost:1:feed"

    async def scenario():
        store = RedisStore(client_for(settings.REDIS))
        try:
            await store.redis.execute("SET", total, 0, "EX", 60)
            # A killed worker's hold of 500, far from its deadline, with the sum kept.
            await store.redis.execute(
                "HSET", holds, "ghost", f"500:9999999999:{dead}", keyspace.HOLDS_SUM, 500
            )
            first = await store.admit(plan, "hold-1")  # 500 + 400 <= 1,000: no scan needed
            after_first = await store.redis.execute("HGETALL", holds)
            second = await store.admit(plan, "hold-2")  # would refuse on the sum: scanned
            after_second = await store.redis.execute("HGETALL", holds)
            await store.release(plan, "hold-1")
            await store.release(plan, "hold-2")
            released = await store.redis.execute("EXISTS", holds)
            return first, after_first, second, after_second, released
        finally:
            await store.redis.execute_together(("DEL", total), ("DEL", holds))
            await store.close()

    first, after_first, second, after_second, released = asyncio.run(scenario())

    def as_dict(reply):
        return dict(zip(reply[::2], reply[1::2], strict=True))

    assert first == Admission(True, held_units=400)
    assert as_dict(after_first)[b"ghost"].startswith(b"500:")  # still there
    assert as_dict(after_first)[keyspace.HOLDS_SUM.encode()] == b"900"
    assert second == Admission(True, held_units=400)
    assert b"ghost" not in as_dict(after_second)
    assert as_dict(after_second)[keyspace.HOLDS_SUM.encode()] == b"800"
    assert released == 0  # the last hold given back takes the hash with it
