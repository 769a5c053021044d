"""proxy.store against a real Redis: many requests at once on the relay's one connection."""

import asyncio
import dataclasses
from decimal import Decimal

import pytest
from django.conf import settings

from billing import ledger
from proxy.keystate import state_cache_name
from proxy.store import Admission, Plan, RedisStore, _reservations, _total
from tests.billing.factories import usage_record

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


def test_hundreds_of_concurrent_commands_all_succeed():
    """Each in-flight request has a command in flight. redis-py's default pool refused commands
    past 100 in flight (measured in bench/ as 500s at c256); the multiplexed connection has no
    such limit."""
    count = 1000

    async def burst() -> list:
        store = RedisStore(settings.REDIS_URL)
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


def test_snapshot_and_admission_together_after_redis_forgot_the_script():
    """The admission script sent by its SHA-1 next to the snapshot read; after a Redis restart
    (SCRIPT FLUSH here) it is loaded again and the admission still made, exactly once."""
    plan = Plan(
        key_id=987_654, limit_units=1_000, estimate_units=300, minimum_units=1, hold_seconds=60
    )

    async def scenario():
        store = RedisStore(settings.REDIS_URL)
        total, reservations = _total(plan.key_id), _reservations(plan.key_id)
        try:
            await store.redis.execute("SET", total, 500, "EX", 60)
            await store.put_key_state("store-test-digest", b'{"a":1}', 60, b"")
            await store.redis.execute("SCRIPT", "FLUSH")
            first = await store.get_key_state_and_admit("store-test-digest", plan, "req_1")
            second = await store.get_key_state_and_admit("store-test-digest", plan, "req_2")
            held = await store.redis.execute("HKEYS", reservations)
            return first, second, sorted(held)
        finally:
            await store.redis.execute(
                "DEL", total, reservations, state_cache_name("store-test-digest")
            )
            await store.close()

    first, second, held = asyncio.run(scenario())

    assert first == (b'{"a":1}', Admission(True, 500, 0, 300))
    # 500 spent + req_1's 300 held leave 200 of 1,000: req_2 is admitted holding those 200.
    assert second == (b'{"a":1}', Admission(True, 500, 300, 200))
    assert held == [b"req_1", b"req_2"]


def test_a_dead_workers_checkpoint_is_billed_once_and_a_live_ones_is_left_alone(issued):
    """reap_checkpoints bills a checkpoint only once its worker's key has expired; a worker
    that was only frozen and records afterwards finds its checkpoint gone and adds nothing."""
    key = issued.key
    client = ledger.usage_stream_client()
    stream = ledger.usage_stream_name()
    checkpoint = usage_record(key, charged="0.25", request_id="req_checkpointed")
    final = dataclasses.replace(checkpoint, charged_usd=Decimal("0.40"), status_code=200)
    total, reservations = _total(key.pk), _reservations(key.pk)

    async def scenario():
        store = RedisStore(settings.REDIS_URL)
        try:
            await store.redis.execute("SET", total, 1_000)
            await store.redis.execute("HSET", reservations, "hold-1", "999:9999999999")
            await store.checkpoint(checkpoint, hold_id="hold-1")
            alive = ledger.reap_checkpoints()  # its worker is alive
            await store.redis.execute("DEL", ledger.relay_alive_name(store.worker_id))
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
    assert client.hlen(ledger.checkpoints_name()) == 0
