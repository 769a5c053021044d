"""proxy.redis_cluster: the relay's client for a Redis Cluster, against a real 3-primary cluster
(tests/redis_cluster.py; one with replicas for a failover), and against small fake nodes for
what a real one does not show (what goes out in which write, the credentials each node gets)."""

import asyncio
import hashlib
import ssl

import pytest
from redis.cluster import RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.crc import key_slot

from core import keyspace
from core.redis_config import redis_config
from proxy import redis_cluster
from proxy.redis_client import Encoded, RedisConnectionError, RedisReplyError
from proxy.redis_cluster import ClusterClient, CrossSlotError
from proxy.redis_connect import client_for
from proxy.store.channel_health import RedisChannelHealth, read_redis

from .test_redis_client import FakeRedis, closed_port, run

SUM_AND_NAME = """
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[1])
return {KEYS[1], KEYS[2]}
"""


@pytest.fixture
def cluster(redis_cluster):
    """The session's cluster, emptied, its scripts forgotten and its command counts reset."""
    for port in redis_cluster.ports:
        node = redis_cluster.client(port)
        node.flushdb()
        node.script_flush()
        node.config_resetstat()
    return redis_cluster


def key_on(cluster, port: int, prefix: str) -> str:
    """A key (`prefix` and a number) whose slot `port` serves."""
    for number in range(1000):
        key = f"{prefix}{number}"
        if cluster.port_of_slot(key_slot(key.encode())) == port:
            return key
    raise AssertionError(f"no key found for node {port}")


def keys_in_slot(cluster, port: int, key: str) -> list[bytes]:
    """The keys node `port` holds in `key`'s slot, sorted."""
    return sorted(
        cluster.client(port).execute_command(
            "CLUSTER", "GETKEYSINSLOT", key_slot(key.encode()), 100
        )
    )


def calls(cluster, port: int, command: str, kind: str = "calls") -> int:
    """How often node `port` ran `command` since its counts were reset (kind "calls"), or
    refused it (kind "rejected_calls": a MOVED or ASK reply is one)."""
    return cluster.client(port).info("commandstats").get(f"cmdstat_{command}", {}).get(kind, 0)


def test_each_command_goes_to_the_node_serving_its_keys_slot(cluster):
    keys = [key_on(cluster, port, "key") for port in cluster.ports]

    async def scenario():
        client = ClusterClient(cluster.nodes)
        try:
            for key in keys:
                assert await client.execute("SET", key, key) == b"OK"
                assert await client.execute("HSET", "{" + key + "}:h", "f", 1) == 1
            return [await client.execute("GET", key) for key in keys], [
                client.node_of(key) for key in keys
            ]
        finally:
            await client.close()

    values, routed = run(scenario())
    assert values == [key.encode() for key in keys]
    assert routed == cluster.nodes
    for key, port in zip(keys, cluster.ports, strict=True):
        assert keys_in_slot(cluster, port, key) == sorted([key.encode(), b"{%s}:h" % key.encode()])
        for other in cluster.ports:
            if other != port:
                assert keys_in_slot(cluster, other, key) == []
        # Each node was sent its own keys' commands only, each once.
        assert calls(cluster, port, "get") == 1
        assert calls(cluster, port, "set") == 1


def test_a_script_on_tagged_keys_runs_and_loads_itself_on_each_node_that_lacks_it(cluster):
    tags = {}
    for port in cluster.ports:
        tag = key_on(cluster, port, "t")
        tags[port] = [f"{{{tag}}}:a", f"{{{tag}}}:b"]
    first, second, third = cluster.ports

    async def scenario():
        client = ClusterClient(cluster.nodes)
        script = client.script(SUM_AND_NAME)
        try:
            replies = [await script(keys=tags[first], args=[2])]
            # Through execute_together, with the keys encoded once (as the relay's admission).
            keys = Encoded.of(tags[second])
            (reply,) = await client.execute_together(script.command(keys=keys, args=[3]))
            assert isinstance(reply, RedisReplyError) and str(reply).startswith("NOSCRIPT")
            replies.append(await script.result(reply, keys=keys, args=[3]))
            replies.append(await script(keys=tags[second], args=[4]))
            return replies
        finally:
            await client.close()

    replies = run(scenario())
    assert replies == [
        [key.encode() for key in tags[first]],
        [key.encode() for key in tags[second]],
        [key.encode() for key in tags[second]],
    ]
    sha = script_sha(SUM_AND_NAME)
    # Loaded (by EVAL after NOSCRIPT) where it ran, once per node; the third never needed it.
    assert cluster.client(first).script_exists(sha) == [True]
    assert cluster.client(second).script_exists(sha) == [True]
    assert cluster.client(third).script_exists(sha) == [False]
    assert [calls(cluster, port, "eval") for port in cluster.ports] == [1, 1, 0]
    assert cluster.client(first).get(tags[first][0]) == b"2"
    assert cluster.client(second).mget(tags[second]) == [b"7", b"7"]


def script_sha(source: str) -> str:
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def test_a_command_or_script_naming_keys_in_two_slots_is_refused_before_it_is_sent(cluster):
    slot_1 = cluster.client(cluster.ports[0]).execute_command("CLUSTER", "KEYSLOT", "{t1}:a")
    slot_2 = cluster.client(cluster.ports[0]).execute_command("CLUSTER", "KEYSLOT", "{t2}:b")
    assert (slot_1, slot_2) == (key_slot(b"t1"), key_slot(b"t2"))
    cluster.client(cluster.ports[0]).config_resetstat()

    async def scenario():
        client = ClusterClient(cluster.nodes)
        try:
            with pytest.raises(CrossSlotError) as refused_script:
                await client.script(SUM_AND_NAME)(keys=["{t1}:a", "{t2}:b"], args=[1])
            with pytest.raises(CrossSlotError) as refused_mget:
                await client.execute("MGET", "{t1}:a", "{t2}:b")
            together = await client.execute_together(("DEL", "{t1}:a", "{t2}:b"), ("PING",))
            return str(refused_script.value), str(refused_mget.value), together
        finally:
            await client.close()

    script_error, mget_error, together = run(scenario())
    assert script_error == (
        f"CROSSSLOT EVALSHA names keys in different hash slots, which a Redis Cluster cannot "
        f"run together: '{{t1}}:a' (slot {slot_1}), '{{t2}}:b' (slot {slot_2}); give them one "
        f"hash tag, as in '{{t1}}:a' and '{{t1}}:b'"
    )
    assert mget_error == script_error.replace("EVALSHA", "MGET")
    assert isinstance(together[0], CrossSlotError)
    assert str(together[0]) == script_error.replace("EVALSHA", "DEL")
    assert together[1] == b"PONG"
    # Nothing of them reached any node.
    for port in cluster.ports:
        for command in ("evalsha", "eval", "mget", "del"):
            assert calls(cluster, port, command) == 0
        assert cluster.client(port).dbsize() == 0


def test_commands_sent_together_across_three_nodes_get_their_replies_in_order(cluster):
    a, b, c = (key_on(cluster, port, "together") for port in cluster.ports)

    async def scenario():
        client = ClusterClient(cluster.nodes)
        try:
            return await client.execute_together(
                ("SET", a, "1"),
                ("INCR", b),
                ("HSET", c, "f", "v"),
                ("GET", a),
                ("HGET", a, "f"),  # a string, not a hash: an error in its place
                ("HGETALL", c),
                ("INCR", b),
                ("TIME",),
            )
        finally:
            await client.close()

    replies = run(scenario())
    assert replies[:4] == [b"OK", 1, 1, b"1"]
    assert isinstance(replies[4], RedisReplyError)
    assert str(replies[4]).startswith("WRONGTYPE")
    assert replies[5:7] == [[b"f", b"v"], 2]
    assert len(replies[7]) == 2


def test_each_nodes_share_of_commands_sent_together_goes_out_in_one_write():
    """Three fake nodes; the map gives each a third of the slots."""
    fakes = []

    def reply(command):
        """CLUSTER SLOTS: a third of the slots for each fake; any other command: its key."""
        if command[:2] == [b"CLUSTER", b"SLOTS"]:
            ranges = []
            for n, fake in enumerate(fakes):
                host, port = fake.address.split(":")
                first, last = n * 5462, min(n * 5462 + 5461, 16383)
                ranges.append(
                    b"*3\r\n:%d\r\n:%d\r\n*2\r\n$%d\r\n%s\r\n:%d\r\n"
                    % (first, last, len(host), host.encode(), int(port))
                )
            return b"*%d\r\n" % len(ranges) + b"".join(ranges)
        return b"$%d\r\n%s\r\n" % (len(command[1]), command[1])

    async def scenario():
        fakes.extend(FakeRedis(reply) for _ in range(3))
        for fake in fakes:
            fake.address = await fake.__aenter__()
        host, port = fakes[0].address.split(":")
        client = ClusterClient([(host, int(port))])
        try:
            keys = {}
            for n in range(3):
                keys[n] = [
                    k for k in (f"k{i}" for i in range(200)) if key_slot(k.encode()) // 5462 == n
                ][:2]
            order = [keys[0][0], keys[1][0], keys[2][0], keys[0][1], keys[1][1], keys[2][1]]
            replies = await client.execute_together(*(("GET", key) for key in order))
            return order, keys, replies
        finally:
            await client.close()
            for fake in fakes:
                await fake.__aexit__()

    order, keys, replies = run(scenario())
    assert replies == [key.encode() for key in order]
    assert fakes[0].reads[0] == [[b"CLUSTER", b"SLOTS"]]
    for n, fake in enumerate(fakes):
        share = [[b"GET", key.encode()] for key in keys[n]]
        assert fake.reads[-1] == share


def test_each_node_is_reached_with_the_urls_credentials_and_database_0():
    async def scenario():
        fake = FakeRedis(lambda command: b"*0\r\n" if command[0] == b"CLUSTER" else b"+OK\r\n")
        address = await fake.__aenter__()
        host, port = address.split(":")
        options = parse_url("redis://relay:s%3Acret%40x@ignored.example:1/0")
        client = ClusterClient([(host, int(port))], url_options=options)
        try:
            assert await client.execute("PING") == b"OK"
        finally:
            await client.close()
            await fake.__aexit__()
        return fake.commands

    commands = run(scenario())
    assert commands[0] == [b"AUTH", b"relay", b"s:cret@x"]
    assert [b"SELECT", b"0"] not in commands


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:pa%3Ass@10.0.0.1:7000",
        "rediss://relay:s%40cret@redis.example:6380/0?ssl_cert_reqs=none&ssl_ca_certs=%2Fetc%2Fca.pem",
    ],
)
def test_each_nodes_url_keeps_the_configured_credentials_and_tls(url):
    options = parse_url(url)
    node_options = parse_url(redis_cluster._node_url(("10.1.2.3", 7001), options))
    assert node_options == {**options, "host": "10.1.2.3", "port": 7001, "db": 0}


def test_the_relays_client_for_a_tls_cluster_reaches_every_node_over_tls():
    """REDIS_URL's scheme and options reach each node's connection: a rediss:// cluster is
    never spoken to in plain text (the settings' client arguments carry TLS as ssl=True, which
    a node's URL cannot say; the client is given the URL's own options)."""
    config = redis_config(
        url="rediss://relay:s%40cret@?ssl_cert_reqs=none", cluster_nodes="10.1.2.3:7001"
    )
    client = client_for(config)

    node = client._node(("10.1.2.4", 7002))  # a node learned from the slot map, not listed

    assert node._options["connection_class"] is SSLConnection
    assert (node._options["host"], node._options["port"]) == ("10.1.2.4", 7002)
    assert (node._options["username"], node._options["password"]) == ("relay", "s@cret")
    assert node._ssl is not None and node._ssl.verify_mode == ssl.CERT_NONE


def test_a_database_other_than_0_is_refused():
    with pytest.raises(ValueError) as refused:
        ClusterClient([("127.0.0.1", 17001)], url_options=parse_url("redis://127.0.0.1/3"))
    assert str(refused.value) == "A Redis Cluster has only database 0; the URL names database 3"


def test_a_moved_slot_is_followed_and_its_new_node_used_from_then_on(cluster):
    source, target = cluster.ports[0], cluster.ports[1]
    key = key_on(cluster, source, "moving")
    slot = key_slot(key.encode())

    async def scenario():
        client = ClusterClient(cluster.nodes)
        try:
            await client.execute("SET", key, "before")
            assert client.node_of(key) == ("127.0.0.1", source)
            cluster.move_slot(slot, source, target)
            cluster.client(source).config_resetstat()
            moved = await client.execute("GET", key)
            routed = client.node_of(key)
            again = await client.execute_together(("SET", key, "after"), ("GET", key))
            return moved, routed, again
        finally:
            await client.close()
            cluster.move_slot(slot, target, source)

    moved, routed, again = run(scenario())
    assert moved == b"before"
    assert routed == ("127.0.0.1", target)
    assert again == [b"OK", b"after"]
    # The source refused the first GET (MOVED) and was sent nothing after.
    assert calls(cluster, source, "get", "rejected_calls") == 1
    assert calls(cluster, source, "get") == calls(cluster, source, "set") == 0
    assert calls(cluster, target, "get") == 2


def test_a_key_already_migrated_is_asked_of_the_target_without_changing_the_map(cluster):
    source, target = cluster.ports[1], cluster.ports[2]
    tag = key_on(cluster, source, "m")
    moved, stayed, new = (f"{{{tag}}}:{name}" for name in ("moved", "stayed", "new"))
    slot = key_slot(moved.encode())

    async def scenario():
        client = ClusterClient(cluster.nodes)
        try:
            await client.execute_together(("SET", moved, "1"), ("SET", stayed, "2"))
            cluster.begin_migration(slot, source, target)
            cluster.migrate_keys(source, target, [moved])
            replies = [
                await client.execute("GET", moved),
                await client.execute("GET", stayed),
                await client.execute("SET", new, "3"),
                await client.execute_together(("GET", moved), ("GET", stayed), ("GET", new)),
            ]
            return replies, client.node_of(moved)
        finally:
            await client.close()

    try:
        replies, routed = run(scenario())
        assert replies == [b"1", b"2", b"OK", [b"1", b"2", b"3"]]
        assert routed == ("127.0.0.1", source)
        assert keys_in_slot(cluster, target, moved) == [moved.encode(), new.encode()]
        assert keys_in_slot(cluster, source, moved) == [stayed.encode()]
        # One ASKING for each command the source redirected; it kept the key that stayed.
        assert calls(cluster, target, "asking") == 4
        assert calls(cluster, source, "get", "rejected_calls") == 3
        assert calls(cluster, source, "get") == 2  # the key that stayed, twice
    finally:
        cluster.end_migration(slot, source, target)
        cluster.move_slot(slot, target, source)


def test_a_publish_sent_to_another_node_reaches_the_subscription(cluster):
    async def scenario():
        client = ClusterClient(cluster.nodes)
        received = asyncio.Queue()
        try:
            subscription = await client.subscribe("events", received.put_nowait)
            subscribed = [
                port
                for port in cluster.ports
                if cluster.client(port).pubsub_numsub("events")[0][1] == 1
            ]
            assert len(subscribed) == 1
            other = next(port for port in cluster.ports if port != subscribed[0])
            cluster.client(other).publish("events", "hello")
            async with asyncio.timeout(5):
                message = await received.get()
            subscription.close()
            return message
        finally:
            await client.close()

    assert run(scenario()) == b"hello"


def test_a_killed_node_fails_its_slots_only_and_subscriptions_move_on(
    doomed_redis_cluster, monkeypatch
):
    cluster = doomed_redis_cluster
    # Read the map again at each command after a failure, to show a refresh with a node down
    # still routes the others.
    monkeypatch.setattr(redis_cluster, "MAP_REFRESH_INTERVAL_SECONDS", 0)

    async def scenario():
        client = ClusterClient(cluster.nodes)
        received = asyncio.Queue()
        try:
            subscription = await client.subscribe("events", received.put_nowait)
            victim = next(
                port
                for port in cluster.ports
                if cluster.client(port).pubsub_numsub("events")[0][1] == 1
            )
            survivors = [port for port in cluster.ports if port != victim]
            lost_key = key_on(cluster, victim, "k")
            kept = [key_on(cluster, port, "k") for port in survivors]
            for key in [lost_key, *kept]:
                await client.execute("SET", key, key)

            cluster.kill(victim)
            async with asyncio.timeout(5):
                while not subscription.lost:
                    await asyncio.sleep(0.01)
            outcomes = []
            names_the_node = rf"\(Redis Cluster node 127\.0\.0\.1:{victim}\)$"
            for _ in range(2):
                with pytest.raises(RedisConnectionError, match=names_the_node):
                    await client.execute("GET", lost_key)
                outcomes.append([await client.execute("GET", key) for key in kept])
            with pytest.raises(RedisConnectionError, match=names_the_node):
                await client.execute_together(("GET", kept[0]), ("GET", lost_key))
            outcomes.append(await client.execute_together(*(("GET", key) for key in kept)))

            # Subscribing again lands on a node that is alive, and hears a PUBLISH sent
            # through the client (to any live node).
            await client.subscribe("events", received.put_nowait)
            assert await client.execute("PUBLISH", "events", "after") == 1
            async with asyncio.timeout(5):
                outcomes.append(await received.get())
            return kept, outcomes
        finally:
            await client.close()

    kept, outcomes = run(scenario())
    values = [key.encode() for key in kept]
    assert outcomes == [values, values, values, b"after"]


def test_a_killed_primarys_slots_are_served_by_its_promoted_replica_without_a_new_client(
    replicated_redis_cluster,
):
    """A primary with a replica is killed: its slots fail (the retryable connection error)
    until the replica is promoted, then the same client, which knew the dead primary only,
    reads the map again and sends them to the replica, finding what was written before."""
    cluster = replicated_redis_cluster
    victim, other = [port for port, role in cluster.roles().items() if role == "master"][:2]
    lost_key, kept = key_on(cluster, victim, "k"), key_on(cluster, other, "k")

    async def scenario():
        # Started from the primary that will die: the others are learned from its map.
        client = ClusterClient([("127.0.0.1", victim)])
        try:
            await client.execute("SET", lost_key, "before")
            await client.execute("SET", kept, "kept")
            # Its replica has every write before the kill (replication is asynchronous).
            cluster.pause_writes(victim, 5)
            replica = cluster.wait_for_replica(victim)
            cluster.kill(victim)
            with pytest.raises(RedisConnectionError, match=rf"127\.0\.0\.1:{victim}\)$"):
                await client.execute("GET", lost_key)
            during = await client.execute("GET", kept)
            await asyncio.to_thread(cluster.wait_for_failover, victim, replica)
            # The map is read again at most once a second after a failure.
            async with asyncio.timeout(redis_cluster.MAP_REFRESH_INTERVAL_SECONDS + 3):
                while True:
                    try:
                        after = await client.execute("GET", lost_key)
                        break
                    except RedisConnectionError:
                        await asyncio.sleep(0.05)
            written = await client.execute("SET", lost_key, "after")
            return during, after, written, client.node_of(lost_key), replica
        finally:
            await client.close()

    during, after, written, node, replica = run(scenario())
    assert (during, after, written) == (b"kept", b"before", b"OK")
    assert node == ("127.0.0.1", replica)
    assert cluster.client(replica).get(lost_key) == b"after"


def test_a_node_that_stops_answering_fails_its_commands_after_the_timeout_only(
    doomed_redis_cluster,
):
    """Each node's connection has RedisClient's watchdog: a silent node fails what waits on it
    after command_timeout; the other nodes answer meanwhile, and the node is used again once
    it answers."""
    cluster = doomed_redis_cluster
    silent, *answering = cluster.ports
    silent_key = key_on(cluster, silent, "k")
    kept = [key_on(cluster, port, "k") for port in answering]

    async def scenario():
        client = ClusterClient(cluster.nodes, command_timeout=0.2)
        try:
            for key in [silent_key, *kept]:
                await client.execute("SET", key, key)
            cluster.pause(silent)
            try:
                stuck = asyncio.ensure_future(client.execute("GET", silent_key))
                meanwhile = [await client.execute("GET", key) for key in kept]
                with pytest.raises(RedisConnectionError) as failed:
                    await stuck
            finally:
                cluster.resume(silent)
            again = await client.execute("GET", silent_key)
            return meanwhile, str(failed.value), again
        finally:
            await client.close()

    meanwhile, error, again = run(scenario())
    assert meanwhile == [key.encode() for key in kept]
    assert error == f"Redis did not answer within 0.2 s (Redis Cluster node 127.0.0.1:{silent})"
    assert again == silent_key.encode()


def test_a_startup_node_that_is_down_is_passed_over(cluster):
    down = closed_port()

    async def scenario():
        client = ClusterClient([("127.0.0.1", down), *cluster.nodes])
        try:
            return await client.execute("SET", "k", "v"), client.node_of("k")
        finally:
            await client.close()

    assert run(scenario()) == (b"OK", ("127.0.0.1", cluster.port_of_slot(key_slot(b"k"))))


def test_no_reachable_node_is_a_connection_error_naming_each_node_tried():
    port = closed_port()

    async def scenario():
        client = ClusterClient([("127.0.0.1", port)])
        try:
            await client.execute("GET", "k")
        finally:
            await client.close()

    with pytest.raises(RedisConnectionError) as failed:
        run(scenario())
    assert str(failed.value) == (
        "could not read the Redis Cluster's slot map from any node "
        f"(127.0.0.1:{port}: could not connect to Redis (ConnectionRefusedError))"
    )


def test_the_relays_channel_health_is_shared_through_the_cluster(cluster):
    """The relay's own code on the cluster: two workers' channel health (proxy.store), each
    with its ClusterClient, subscribed on a node that does not serve the channel-health slot
    (so the scripts' PUBLISH crosses nodes); the admin reads the state with RedisCluster."""
    channel_id = 987_002
    owner = cluster.port_of_slot(key_slot(keyspace.CHANNEL_HEALTH_INDEX.encode()))
    others = [("127.0.0.1", port) for port in cluster.ports if port != owner]

    async def scenario():
        one = RedisChannelHealth(ClusterClient(others))
        two = RedisChannelHealth(ClusterClient(list(reversed(others))))
        try:
            await one.ready()
            await two.ready()
            for _ in range(3):
                outcome = await one.failed(
                    channel_id, "status 502", failures_to_open=3, reopen=False
                )
            async with asyncio.timeout(5):
                while channel_id not in two.view():
                    await asyncio.sleep(0.005)
            subscribers = {
                port: cluster.client(port).pubsub_numsub(keyspace.CHANNEL_HEALTH_EVENTS)[0][1]
                for port in cluster.ports
            }
            return outcome, subscribers
        finally:
            await one.close()
            await two.close()
            await one.redis.close()
            await two.redis.close()

    outcome, subscribers = run(scenario())
    assert outcome.transition == "open"
    assert subscribers[owner] == 0 and sum(subscribers.values()) == 2
    admin_client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        health = read_redis(admin_client, [channel_id], cooldown_seconds=60)[channel_id]
    finally:
        admin_client.close()
    assert (health.state, health.failures, health.last_error) == ("open", 3, "status 502")
