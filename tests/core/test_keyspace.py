"""core.keyspace: the relay's names in Redis are the ones a running deployment already holds."""

import pytest
from django.core.cache import cache

from core import keyspace


def test_the_names_are_those_of_the_release_before():
    """Usage waiting in the stream and the checkpoints during a deploy is found by the new
    release's ingest and reaper: the names did not move."""
    assert keyspace.USAGE_STREAM == "hcai:1:usage:stream"
    assert keyspace.CHECKPOINTS == "hcai:1:usage:checkpoints"
    assert keyspace.UNWRITABLE_STREAM == "hcai:1:usage:unwritable"
    assert keyspace.USAGE_INGEST_GROUP == "ingest"
    assert keyspace.spend_total(42) == "hcai:1:spend:42"
    assert keyspace.reservations(42) == "hcai:1:spend-reserved:42"
    assert keyspace.relay_alive("host:7:ab12") == "hcai:1:relay:alive:host:7:ab12"
    assert keyspace.snapshot("d1g3st") == "hcai:1:keystate:d1g3st"
    assert keyspace.generation("d1g3st") == "hcai:1:keystate-gen:d1g3st"


def test_the_refusal_counts_names():
    """Counts waiting for the collector during a deploy are found by the next release's."""
    assert keyspace.REFUSAL_MINUTES == "hcai:1:refusal-minutes"
    assert keyspace.refusals(1_796_000_040) == "hcai:1:refusals:1796000040"


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
