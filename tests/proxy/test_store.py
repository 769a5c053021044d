"""proxy.store against a real Redis: many requests at once on the relay's one connection."""

import asyncio

import pytest
from django.conf import settings

from proxy.store import RedisStore

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
