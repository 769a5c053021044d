"""proxy.store against a real Redis: the relay's connection pool under many requests at once."""

import asyncio

import pytest
from django.conf import settings

from proxy.store import REDIS_CONNECTIONS, RedisStore

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


def test_more_concurrent_commands_than_connections_all_succeed():
    """Each in-flight request holds a connection; past the pool's size they wait their turn
    instead of failing (redis-py's default pool refused commands past 100 in flight)."""

    async def burst() -> list:
        store = RedisStore(settings.REDIS_URL)
        try:
            digests = [f"concurrency-test-{n:04d}" for n in range(REDIS_CONNECTIONS * 5)]
            return await asyncio.gather(
                *(store.get_key_state(digest) for digest in digests), return_exceptions=True
            )
        finally:
            await store.close()

    results = asyncio.run(burst())

    assert [result for result in results if isinstance(result, BaseException)] == []
    assert results == [None] * (REDIS_CONNECTIONS * 5)
