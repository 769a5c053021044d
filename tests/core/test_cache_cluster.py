"""core.cache_cluster: Django's cache API on a real 3-primary Redis Cluster
(tests/redis_cluster.py), and the raw commands the apps send through core.cache's client."""

import pytest
from django.core.cache import caches
from django.test import override_settings
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from billing.ledger import RedisTotals
from core.cache import cache_redis_client
from core.cache_cluster import RedisClusterCache


@pytest.fixture
def cluster(redis_cluster):
    for port in redis_cluster.ports:
        redis_cluster.client(port).flushdb()
    return redis_cluster


def location(cluster) -> str:
    return ",".join(f"redis://127.0.0.1:{port}" for port in cluster.ports[:2])


@pytest.fixture
def cluster_cache(cluster):
    backend = RedisClusterCache(
        location(cluster),
        {"KEY_PREFIX": "hcai", "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}},
    )
    yield backend
    backend._cache.get_client().close()


def keys_per_node(cluster) -> dict[int, int]:
    return {port: cluster.client(port).dbsize() for port in cluster.ports}


def test_the_single_key_calls_work_on_the_cluster(cluster, cluster_cache):
    assert cluster_cache.add("a", {"plan": 1}, 60) is True
    assert cluster_cache.add("a", "other", 60) is False
    assert cluster_cache.get("a") == {"plan": 1}
    cluster_cache.set("count", 5, 60)
    assert cluster_cache.incr("count", 3) == 8
    with pytest.raises(ValueError):
        cluster_cache.incr("missing")
    assert cluster_cache.has_key("count") is True
    assert cluster_cache.touch("count", 300) is True
    assert 290 < cluster_cache._cache.get_client().ttl("hcai:1:count") <= 300
    assert cluster_cache.delete("count") is True
    assert cluster_cache.get("count", "gone") == "gone"
    # Stored as Django names them, on the node serving the name's slot.
    node = cluster.port_of_slot(key_slot(b"hcai:1:a"))
    assert cluster.client(node).exists("hcai:1:a") == 1


def test_many_keys_across_slots_are_set_read_and_deleted(cluster, cluster_cache):
    data = {f"key{n}": n for n in range(30)}
    cluster_cache.set_many(data, 60)
    # They landed on every node (so the calls did cross slots and nodes).
    assert all(count > 0 for count in keys_per_node(cluster).values())
    assert sum(keys_per_node(cluster).values()) == 30
    assert cluster_cache.get_many([*data, "absent"]) == data
    client = cluster_cache._cache.get_client()
    assert all(0 < client.ttl(f"hcai:1:{name}") <= 60 for name in data)

    cluster_cache.delete_many(list(data)[:20])
    assert cluster_cache.get_many(list(data)) == {f"key{n}": n for n in range(20, 30)}
    cluster_cache.set_many({"key25": "x", "key26": "y"}, 0)  # a timeout of 0 deletes
    assert sorted(cluster_cache.get_many(list(data))) == [
        f"key{n}" for n in range(20, 30) if n not in (25, 26)
    ]


def test_clear_empties_every_primary(cluster, cluster_cache):
    cluster_cache.set_many({f"key{n}": n for n in range(30)}, 60)
    assert cluster_cache.clear() is True
    assert keys_per_node(cluster) == {port: 0 for port in cluster.ports}


@pytest.mark.parametrize(
    "location, message",
    [
        (
            "redis://127.0.0.1:17001/2",
            "A Redis Cluster has only database 0; the cache's LOCATION names database 2",
        ),
        (
            "unix:///tmp/redis.sock",
            "A Redis Cluster node is reached over TCP, not a Unix socket: 'unix:///tmp/redis.sock'",
        ),
        (",", "A Redis Cluster cache needs at least one node in LOCATION"),
    ],
)
def test_a_location_a_cluster_cannot_have_is_refused(location, message):
    backend = RedisClusterCache(location, {})
    with pytest.raises(ValueError) as refused:
        backend.get("a")
    assert str(refused.value) == message


def test_the_first_urls_credentials_and_tls_are_every_nodes():
    backend = RedisClusterCache(
        "rediss://relay:s%3Acret@10.0.0.1:6380,rediss://10.0.0.2:6380",
        {"OPTIONS": {"socket_timeout": 2}},
    )
    client = backend._cache
    assert [(node.host, node.port) for node in client._startup_nodes] == [
        ("10.0.0.1", 6380),
        ("10.0.0.2", 6380),
    ]
    assert client._url_options == {"username": "relay", "password": "s:cret", "ssl": True}


def test_the_cache_redis_client_is_the_cluster_client_and_the_apps_commands_work(cluster):
    caches_setting = {
        "default": {
            "BACKEND": "core.cache_cluster.RedisClusterCache",
            "LOCATION": location(cluster),
            "KEY_PREFIX": "hcai",
        }
    }
    with override_settings(CACHES=caches_setting):
        client = cache_redis_client()
        assert isinstance(client, RedisCluster)
        assert client is caches["default"]._cache.get_client()
        # billing.ledger's running totals: GET, SET NX EX, a script, DEL over several slots.
        totals = RedisTotals(client)
        names = [f"hcai:1:spend:{n}" for n in range(6)]
        assert len({cluster.port_of_slot(key_slot(name.encode())) for name in names}) > 1
        for name in names:
            assert totals.add(name, 100, 60) is True
        assert totals.add(names[0], 5, 60) is False
        assert totals.raise_by(names[0], 7) is True
        assert totals.raise_by("hcai:1:spend:absent", 7) is False
        assert totals.get(names[0]) == 107
        totals.forget(names)
        assert [totals.get(name) for name in names] == [None] * 6
        # A transaction (keys.cache's drop_key_state, billing.refusals) must name keys of one
        # slot; redis-py refuses it before sending otherwise.
        with (
            pytest.raises(RedisClusterException, match="all keys must map to the same key slot"),
            client.pipeline(transaction=True) as pipe,
        ):
            pipe.incr("hcai:1:keystate-gen:a")
            pipe.delete("hcai:1:keystate:a", "hcai:1:keystate:b")
            pipe.execute()
        assert client.get("hcai:1:keystate-gen:a") is None
