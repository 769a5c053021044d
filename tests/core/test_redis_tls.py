"""TLS (rediss://) with a real redis-server on a private TLS port, its certificate signed by a
CA made here: the relay's client, redis-py's client, Django's cache and Celery's broker all
connect with the same REDIS_URL options, and all refuse a server their CA did not sign; and
through Sentinel to a primary and replica that speak TLS only, across a failover."""

import asyncio

import pytest
import redis
from django.utils.module_loading import import_string
from kombu import Connection

from core.redis_config import redis_config
from proxy.redis_client import RedisConnectionError
from proxy.redis_connect import client_for
from tests.redis_server import (
    REDIS_SERVER,
    REPLICA_PORT,
    RedisServer,
    Sentinels,
    SentinelSetup,
    TlsFiles,
)

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server")

TLS_PORT = 17121


@pytest.fixture
def tls_redis(tmp_path):
    files = TlsFiles.make(tmp_path / "tls")
    server = RedisServer(tmp_path, port=TLS_PORT, tls=files)
    try:
        yield server.start()
    finally:
        server.stop()


def _url(server: RedisServer, ca) -> str:
    return f"rediss://127.0.0.1:{server.port}/2?ssl_ca_certs={ca}"


def _cache(config):
    entry = config.django_cache()
    return import_string(entry["BACKEND"])(entry["LOCATION"], entry)


async def _relay_round_trip(config) -> bytes:
    client = client_for(config)
    try:
        await client.execute("SET", "tls-relay", "over TLS")
        return await client.execute("GET", "tls-relay")
    finally:
        await client.close()


def test_every_client_speaks_tls(tls_redis):
    config = redis_config(url=_url(tls_redis, tls_redis.tls.ca))

    assert asyncio.run(_relay_round_trip(config)) == b"over TLS"

    client = config.sync_client()
    assert client.get("tls-relay") == b"over TLS"
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls_redis.tls.ca)

    cache = _cache(config)
    cache.set("tls-cache", {"a": 1}, timeout=30)
    assert cache.get("tls-cache") == {"a": 1}

    with Connection(config.celery_broker()["broker_url"]) as connection:
        queue = connection.SimpleQueue("tls-broker")
        queue.put({"task": "over TLS"})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert message.payload == {"task": "over TLS"}
    # Each wrote to the database the URL names, over the TLS port (there is no other).
    assert client.exists("tls-relay", "_kombu.binding.tls-broker") == 2
    assert client.exists("hcai:1:tls-cache") == 1


def test_a_server_signed_by_another_ca_is_refused(tls_redis):
    config = redis_config(url=_url(tls_redis, tls_redis.tls.other_ca))

    with pytest.raises(RedisConnectionError) as refused:
        asyncio.run(_relay_round_trip(config))
    assert str(refused.value) == (
        "could not connect to Redis (the server's TLS certificate was refused: self-signed "
        "certificate in certificate chain)"
    )

    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        config.sync_client().ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        _cache(config).get("anything")


def test_verification_can_be_turned_off_as_in_redis_py(tls_redis):
    """ssl_cert_reqs=none means the same to both clients: no check of the certificate."""
    config = redis_config(url=f"rediss://127.0.0.1:{tls_redis.port}/2?ssl_cert_reqs=none")

    assert asyncio.run(_relay_round_trip(config)) == b"over TLS"
    assert config.sync_client().get("tls-relay") == b"over TLS"


@pytest.fixture
def tls_sentinel_redis(tmp_path):
    """A primary and its replica speaking TLS only, and three sentinels (reached without TLS,
    speaking TLS to the servers)."""
    setup = SentinelSetup(tmp_path, tls=TlsFiles.make(tmp_path / "tls"))
    try:
        yield setup.start()
    finally:
        setup.stop()


def test_tls_through_sentinel(tls_sentinel_redis):
    ca = tls_sentinel_redis.primary.tls.ca
    config = redis_config(
        url=f"rediss://@/1?ssl_ca_certs={ca}",
        sentinels=tls_sentinel_redis.sentinel_addresses,
        service=Sentinels.SERVICE,
    )
    broker = config.celery_broker()

    assert asyncio.run(_relay_round_trip(config)) == b"over TLS"
    assert config.sync_client().get("tls-relay") == b"over TLS"
    cache = _cache_through_sentinel(config)
    cache.set("tls-cache", "cached", timeout=30)
    assert cache.get("tls-cache") == "cached"
    with Connection(
        broker["broker_url"],
        transport_options=broker["broker_transport_options"],
        ssl=broker["broker_use_ssl"],
    ) as connection:
        queue = connection.SimpleQueue("tls-broker")
        queue.put({"task": "over TLS"})
        assert queue.get(timeout=5).payload == {"task": "over TLS"}
        queue.close()

    tls_sentinel_redis.primary.kill()
    tls_sentinel_redis.wait_for_failover()

    assert asyncio.run(_relay_round_trip(config)) == b"over TLS"
    assert config.sync_client().connection_pool.get_master_address()[1] == REPLICA_PORT


def _cache_through_sentinel(config):
    """Django's cache backend for Sentinel reads settings.REDIS."""
    from django.conf import settings

    previous = settings.REDIS
    settings.REDIS = config
    try:
        cache = _cache(config)
        cache.get("warm")  # its connection pool is made now, from this configuration
        return cache
    finally:
        settings.REDIS = previous
