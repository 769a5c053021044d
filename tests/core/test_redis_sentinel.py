"""Every Redis client follows a Sentinel failover without a restart: a real primary, its
replica and three sentinels (tests/redis_server.py), the primary SIGKILLed. The relay under
traffic through a failover: tests/proxy/test_sentinel.py."""

import asyncio

import pytest
from django.core.cache import caches
from django.utils.module_loading import import_string
from kombu import Connection

from billing import ledger
from core.cache import cache_redis_client
from core.redis_config import redis_config
from proxy.redis_client import RedisConnectionError
from proxy.redis_connect import client_for
from tests.redis_server import PRIMARY_PORT, REPLICA_PORT, Sentinels


@pytest.fixture
def config(sentinel_redis, settings):
    settings.REDIS = redis_config(
        sentinels=sentinel_redis.sentinel_addresses, service=Sentinels.SERVICE, url="redis://@/4"
    )
    return settings.REDIS


def _cache(config):
    entry = config.django_cache()
    return import_string(entry["BACKEND"])(entry["LOCATION"], entry)


def test_redis_py_and_django_s_cache_follow_a_failover(sentinel_redis, config):
    client = config.sync_client()
    cache = _cache(config)
    client.set("before", "1")
    cache.set("cached", "x", timeout=60)
    assert client.wait(1, 2000) == 1  # on the replica too, before the primary dies

    sentinel_redis.primary.kill()
    sentinel_redis.wait_for_failover()

    assert client.get("before") == b"1"
    assert client.set("after", "2")
    assert client.connection_pool.get_master_address() == ("127.0.0.1", REPLICA_PORT)
    assert cache.get("cached") == "x"
    cache.set("cached", "y", timeout=60)
    assert cache.get("cached") == "y"


def _peer_port(client) -> int:
    return client._connection.transport.get_extra_info("peername")[1]


def test_the_relay_s_client_follows_a_failover(sentinel_redis, config):
    async def scenario():
        client = client_for(config)
        try:
            await client.execute("SET", "before", "1")
            assert await client.execute("WAIT", 1, 2000) == 1
            assert _peer_port(client) == PRIMARY_PORT

            sentinel_redis.primary.kill()
            # The connection is gone, and the sentinels still name the dead primary.
            with pytest.raises(RedisConnectionError) as failed:
                await client.execute("GET", "before")
            assert str(failed.value) in (
                "the connection to Redis was lost",
                "could not connect to Redis (ConnectionRefusedError)",
            )

            await asyncio.to_thread(sentinel_redis.wait_for_failover)
            # No restart: the next command asks the sentinels again.
            assert await client.execute("GET", "before") == b"1"
            assert _peer_port(client) == REPLICA_PORT
            assert await client.execute("SET", "after", "2") == b"OK"
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_stuck_primary_is_left_for_the_one_the_sentinels_promote(sentinel_redis, config):
    """A primary that stops answering (SIGSTOP: its connections stay open) fails the commands
    waiting on it within the command timeout; once the sentinels have promoted the replica,
    the next command goes there."""

    async def scenario():
        client = client_for(config)
        try:
            await client.execute("SET", "before", "1")
            assert await client.execute("WAIT", 1, 2000) == 1

            sentinel_redis.primary.pause()
            with pytest.raises(RedisConnectionError) as failed:
                await client.execute("GET", "before")
            assert str(failed.value) == "Redis did not answer within 0.5 s"

            await asyncio.to_thread(sentinel_redis.wait_for_failover)
            assert await client.execute("GET", "before") == b"1"
            assert _peer_port(client) == REPLICA_PORT
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_demoted_primary_is_left_for_the_one_the_sentinels_name(sentinel_redis, config):
    """A primary turned replica under a connection answers its writes READONLY: the
    connection is dropped, and a server the sentinels name that is not the primary (ROLE) is
    not used."""

    async def scenario():
        client = client_for(config)
        try:
            await client.execute("SET", "before", "1")
            assert sentinel_redis.replica.command("REPLICAOF", "NO", "ONE") == b"OK"
            assert (
                sentinel_redis.primary.command("REPLICAOF", "127.0.0.1", str(REPLICA_PORT)) == b"OK"
            )
            assert sentinel_redis.primary.info("replication")["role"] == "slave"

            with pytest.raises(RedisConnectionError) as failed:
                await client.execute("SET", "during", "1")
            assert str(failed.value) == "Redis answered READONLY: it is a replica now (a failover)"
            assert client._connection.lost

            # The sentinels have not noticed yet: they still name the demoted one.
            with pytest.raises(RedisConnectionError) as refused:
                await client.execute("GET", "before")
            assert str(refused.value) == (
                "could not connect to Redis: 127.0.0.1:17101, named the primary of 'hcai' by "
                "Sentinel, is a replica (a failover is under way)"
            )
        finally:
            await client.close()

    asyncio.run(scenario())


@pytest.mark.django_db
def test_readyz_checks_redis_through_sentinel(sentinel_redis, config, client, settings):
    """/readyz reads the cache, the persistence (append-only) and the usage stream's lag, all
    from the primary the sentinels name, before and after a failover."""
    ledger.usage_stream_client.cache_clear()
    settings.CACHES = {"default": config.django_cache()}
    settings.REDIS_REQUIRE_APPEND_ONLY = True
    settings.READYZ_MAX_INGEST_LAG_SECONDS = 300  # set with Redis (this run may have none)
    try:
        assert client.get("/readyz").json() == {"status": "ok"}

        sentinel_redis.primary.kill()
        sentinel_redis.wait_for_failover()

        response = client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        assert cache_redis_client().connection_pool.get_master_address()[1] == REPLICA_PORT
    finally:
        caches["default"].close()
        ledger.usage_stream_client.cache_clear()


def test_celery_s_broker_follows_a_failover(sentinel_redis, config):
    broker = config.celery_broker()
    with Connection(
        broker["broker_url"], transport_options=broker["broker_transport_options"]
    ) as connection:
        queue = connection.SimpleQueue("sentinel-broker")
        queue.put({"n": 1})
        sentinel_redis.primary.kill()
        sentinel_redis.wait_for_failover()
        # kombu reconnects through the sentinels; the message was replicated.
        connection.ensure_connection(max_retries=3)
        message = queue.get(timeout=5)
        message.ack()
        queue.put({"n": 2})
        assert queue.get(timeout=5).payload == {"n": 2}
        queue.close()
    assert message.payload == {"n": 1}
