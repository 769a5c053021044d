"""core.keyspace: the relay's names in Redis, a team's in one hash slot, and the names a running
deployment already holds still read."""

import asyncio
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.core.cache import cache

from billing.windows import Account
from core import keyspace
from proxy.redis_client import Encoded
from proxy.redis_connect import client_for
from tests import redis_slots


def test_a_teams_names_carry_its_shards_hash_tag():
    """Team 70 is in shard 6 (70 % 64): every name of its keys, members and budget starts with
    that shard's tag, right after the prefix, and its usage goes to that shard's stream."""
    assert keyspace.SHARDS == 64
    assert keyspace.shard(70) == 6
    assert keyspace.spend_total(70, 42) == "hcai:1:{t6}:spend:42"
    assert keyspace.reservations(70, 42) == "hcai:1:{t6}:spend-reserved:42"
    assert keyspace.member_reservations(70, 5) == "hcai:1:{t6}:spend-reserved:member:70:5"
    assert keyspace.team_reservations(70) == "hcai:1:{t6}:spend-reserved:team:70"
    assert (
        keyspace.spend_window(70, "key", 42, "d", 1_796_000_000)
        == "hcai:1:{t6}:spend-window:key:42:d:1796000000"
    )
    assert keyspace.rate(70, 42) == "hcai:1:{t6}:rate:42"
    assert keyspace.usage_stream(6) == "hcai:1:{t6}:usage:stream"
    assert keyspace.checkpoints(6) == "hcai:1:{t6}:usage:checkpoints"
    assert keyspace.relay_alive(6, "host:7:ab12") == "hcai:1:{t6}:relay:alive:host:7:ab12"
    assert keyspace.UNWRITABLE_STREAM == "hcai:1:usage:unwritable"
    assert keyspace.USAGE_INGEST_GROUP == "ingest"


def _team_names(team_id: int) -> list[str]:
    """Every name an admission, a record, a checkpoint or a reap of the team touches."""
    account = Account(key_id=42, team_id=team_id, user_id=5, time_zone="Europe/Berlin")
    at = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    shard = keyspace.shard(team_id)
    targets = account.targets(at)
    return [
        *(counter.name for counter in account.counters(at)),
        *(counter.holds for counter in account.counters(at)),
        *targets.counters,
        *targets.holds,
        keyspace.rate(team_id, 42),
        keyspace.usage_stream(shard),
        keyspace.checkpoints(shard),
        keyspace.relay_alive(shard, "host:7:ab12"),
    ]


@pytest.mark.parametrize("team_id", [1, 70, 64 * 1000 + 63])
def test_all_names_of_one_team_share_one_slot(team_id):
    assert len(redis_slots.slots(_team_names(team_id))) == 1


def test_teams_spread_over_the_shards_slots():
    """Teams 0..63 are in 64 shards, each its own Cluster slot; team 64 shares team 0's."""
    team_slots = [redis_slots.slots(_team_names(team)).pop() for team in range(65)]
    assert len(set(team_slots[:64])) == 64
    assert team_slots[64] == team_slots[0]


def test_the_names_before_the_hash_tags_are_drained():
    """What the release before the hash tags left in its stream, checkpoints and refusal
    counts is still read (ingest, the reaper, the collector): never orphaned."""
    assert keyspace.LEGACY_USAGE_STREAM == "hcai:1:usage:stream"
    assert keyspace.LEGACY_CHECKPOINTS == "hcai:1:usage:checkpoints"
    assert keyspace.LEGACY_RELAY_ALIVE_PREFIX == "hcai:1:relay:alive:"
    assert keyspace.LEGACY_REFUSAL_MINUTES == "hcai:1:refusal-minutes"
    assert keyspace.LEGACY_REFUSALS_PREFIX == "hcai:1:refusals:"
    assert keyspace.INGESTED_STREAMS[-1] == keyspace.LEGACY_USAGE_STREAM
    assert len(keyspace.INGESTED_STREAMS) == keyspace.SHARDS + 1
    assert keyspace.retagged(70, "hcai:1:spend:42") == "hcai:1:{t6}:spend:42"
    assert keyspace.retagged(70, "hcai:1:{t6}:spend:42") == "hcai:1:{t6}:spend:42"


def test_the_refusal_counts_names_share_one_hash_tag():
    """The count script adds to the index and to a minute's counts (named from Redis's clock,
    in the script): one slot."""
    assert keyspace.REFUSAL_MINUTES == "hcai:1:{refusals}:minutes"
    assert keyspace.refusals(1_796_000_040) == "hcai:1:{refusals}:1796000040"
    assert len(redis_slots.slots([keyspace.REFUSAL_MINUTES, keyspace.refusals(60)])) == 1


def test_a_snapshot_and_its_generation_share_the_digests_hash_tag():
    assert keyspace.snapshot("d1g3st") == "hcai:1:keystate:{d1g3st}"
    assert keyspace.generation("d1g3st") == "hcai:1:keystate-gen:{d1g3st}"
    assert len(redis_slots.slots([keyspace.snapshot("d1"), keyspace.generation("d1")])) == 1


@pytest.mark.parametrize(
    ("cache_key", "name"),
    [
        (keyspace.snapshot_cache_key, keyspace.snapshot),
        (keyspace.generation_cache_key, keyspace.generation),
    ],
)
def test_a_snapshot_reached_through_djangos_cache_is_the_one_in_redis(cache_key, name):
    """The services and the embedded default address snapshots through Django's cache API, the
    relay through raw Redis: Django's cache gives the cache key exactly the Redis name."""
    assert cache.make_key(cache_key("d1g3st")) == name("d1g3st")


def test_the_channel_health_names_share_one_hash_tag():
    """The breaker's scripts touch a channel's hash, the index and its trial together: one
    Redis Cluster slot for all of them."""
    names = [
        keyspace.channel_health(7),
        keyspace.CHANNEL_HEALTH_INDEX,
        keyspace.channel_trial(7),
        keyspace.channel_tally(7, 1_796_000_040),
    ]
    assert names == [
        "hcai:1:{channel-health}:7",
        "hcai:1:{channel-health}:index",
        "hcai:1:{channel-health}:trial:7",
        "hcai:1:{channel-health}:tally:7:1796000040",
    ]


def test_the_slot_check_finds_the_keys_of_scripts_stream_reads_and_multi_key_commands():
    """tests/redis_slots.py reads keys as a Cluster client does, a script's pre-encoded KEYS
    (proxy.redis_client.Encoded) included."""
    keys = ["hcai:1:{t1}:a", "hcai:1:{t1}:b"]
    script = ("EVALSHA", "f00d", 2, Encoded.of(keys), "arg", 7)
    assert redis_slots.command_keys(script) == [key.encode() for key in keys]
    assert redis_slots.command_keys(("EVAL", "return 1", 1, "k", "a")) == ["k"]
    stream_read = (
        "XREADGROUP",
        "GROUP",
        "ingest",
        "me",
        "COUNT",
        5,
        "STREAMS",
        "s1",
        "s2",
        ">",
        ">",
    )
    assert redis_slots.command_keys(stream_read) == ["s1", "s2"]
    assert redis_slots.command_keys(("MSET", "a", 1, "b", 2)) == ["a", "b"]
    assert redis_slots.command_keys(("DEL", "a", "b")) == ["a", "b"]
    assert redis_slots.command_keys(("HSET", "a", "f", "v")) == []
    assert redis_slots.command_keys(("HSET", "a", "f", "v"), first_if_unknown=True) == ["a"]


@pytest.mark.skipif(settings.REDIS is None, reason="checks commands sent to Redis")
@pytest.mark.skipif(
    settings.REDIS is not None and settings.REDIS.mode == "cluster",
    reason="a Redis Cluster's clients refuse these themselves (tests/proxy/test_redis_cluster.py)",
)
def test_the_slot_check_fails_a_command_across_slots(redis_single_slot):
    """Through the relay's client and through redis-py, in a transaction too: two teams' names
    in one command are refused before they are sent."""
    one, other = keyspace.spend_total(1, 42), keyspace.spend_total(2, 42)
    client = settings.REDIS.sync_client()

    async def relay_client():
        relay = client_for(settings.REDIS)
        try:
            with pytest.raises(AssertionError, match="cross-slot"):
                await relay.execute("MGET", one, other)
            return await relay.execute("MGET", one, keyspace.reservations(1, 42))
        finally:
            await relay.close()

    assert asyncio.run(relay_client()) == [None, None]
    with pytest.raises(AssertionError, match="cross-slot"):
        client.exists(one, other)
    with pytest.raises(AssertionError, match="cross-slot"), client.pipeline() as pipe:
        pipe.get(one).get(other).execute()
    assert client.exists(one, keyspace.rate(1, 42)) == 0

    assert len(redis_single_slot.cross_slot) == 3
    redis_single_slot.cross_slot.clear()  # refused as they should be: not this test's failure
