"""proxy.store against a real Redis: many requests at once on the relay's one connection."""

import asyncio

import pytest
from django.conf import settings

from proxy.keystate import state_cache_name
from proxy.store import Admission, Plan, RedisStore, _reservations, _total

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
