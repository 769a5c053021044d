"""billing.services.refusals: the relay's per-minute refusal counts become RefusalCount rows,
each written as the whole count so far, so that writing it again changes nothing."""

import time
from datetime import UTC, datetime

import pytest
from django.conf import settings

from billing import ledger
from billing.models import RefusalCount
from billing.refusals import Refusal
from billing.services import RefusalTally, collect_refusal_counts, write_refusal_counts
from core import keyspace
from keys import services as key_services
from tests.factories import make_key

needs_redis = pytest.mark.skipif(settings.REDIS is None, reason="the counts live in Redis")

MINUTE = 1_796_000_040  # A minute long past (its start, in seconds since the epoch).


def rows() -> list[tuple]:
    return list(
        RefusalCount.objects.order_by("minute", "status_code", "code", "endpoint").values_list(
            "key_id", "team_id", "minute", "status_code", "code", "endpoint", "count"
        )
    )


def at(minute: int) -> datetime:
    return datetime.fromtimestamp(minute, tz=UTC)


def test_a_tally_is_written_as_its_whole_count(issued):
    key = issued.key
    disabled = Refusal(key.pk, 403, "key_disabled", "messages")

    assert write_refusal_counts(tallies=[RefusalTally(disabled, MINUTE, 3)]) == 1
    assert write_refusal_counts(tallies=[RefusalTally(disabled, MINUTE, 3)]) == 1
    assert rows() == [(key.pk, key.team_id, at(MINUTE), 403, "key_disabled", "messages", 3)]

    # The minute went on: its grown count is written over the row, not added to it.
    write_refusal_counts(tallies=[RefusalTally(disabled, MINUTE, 5)])
    assert rows() == [(key.pk, key.team_id, at(MINUTE), 403, "key_disabled", "messages", 5)]


def test_each_minute_status_reason_and_endpoint_is_a_row_of_its_own(issued):
    key = issued.key
    tallies = [
        RefusalTally(Refusal(key.pk, 402, "insufficient_quota", "messages"), MINUTE, 7),
        RefusalTally(Refusal(key.pk, 429, "insufficient_quota", "chat_completions"), MINUTE, 2),
        RefusalTally(Refusal(key.pk, 429, "rate_limit_exceeded", "chat_completions"), MINUTE, 1),
        RefusalTally(Refusal(key.pk, 402, "insufficient_quota", "messages"), MINUTE + 60, 4),
    ]

    assert write_refusal_counts(tallies=tallies) == 4

    team = key.team_id
    assert rows() == [
        (key.pk, team, at(MINUTE), 402, "insufficient_quota", "messages", 7),
        (key.pk, team, at(MINUTE), 429, "insufficient_quota", "chat_completions", 2),
        (key.pk, team, at(MINUTE), 429, "rate_limit_exceeded", "chat_completions", 1),
        (key.pk, team, at(MINUTE + 60), 402, "insufficient_quota", "messages", 4),
    ]


def test_a_deleted_keys_counts_are_dropped(team, member, group):
    kept = make_key(team=team, owner=member, group=group, name="kept").key
    gone = make_key(team=team, owner=member, group=group, name="gone").key
    gone_id = gone.pk
    key_services.api_key_delete(key=gone, actor=None)

    written = write_refusal_counts(
        tallies=[
            RefusalTally(Refusal(gone_id, 403, "key_disabled", "messages"), MINUTE, 9),
            RefusalTally(Refusal(kept.pk, 403, "key_disabled", "messages"), MINUTE, 1),
        ]
    )

    assert written == 1
    assert [row[0] for row in rows()] == [kept.pk]


# --- the collector (Redis) -----------------------------------------------------------------


def count_in_redis(refusal: Refusal, minute: int, times: int) -> None:
    """As the relay's count script files it (proxy.store), for a minute of our choosing."""
    client = ledger.usage_stream_client()
    client.hincrby(keyspace.refusals(minute), refusal.field(), times)
    client.sadd(keyspace.REFUSAL_MINUTES, minute)


def redis_minutes() -> set[int]:
    client = ledger.usage_stream_client()
    return {int(minute) for minute in client.smembers(keyspace.REFUSAL_MINUTES)}


def current_minute() -> int:
    now = int(ledger.usage_stream_client().time()[0])
    return now - now % 60


@needs_redis
def test_the_collector_writes_nothing_twice(issued):
    key = issued.key
    quota = Refusal(key.pk, 402, "insufficient_quota", "messages")
    count_in_redis(quota, MINUTE, 10_000)
    count_in_redis(Refusal(key.pk, 403, "ip_not_allowed", "models"), MINUTE, 2)

    assert collect_refusal_counts() == 2
    assert collect_refusal_counts() == 0

    assert rows() == [
        (key.pk, key.team_id, at(MINUTE), 402, "insufficient_quota", "messages", 10_000),
        (key.pk, key.team_id, at(MINUTE), 403, "ip_not_allowed", "models", 2),
    ]
    # The closed minute has left Redis.
    assert redis_minutes() == set()
    assert not ledger.usage_stream_client().exists(keyspace.refusals(MINUTE))


@needs_redis
@pytest.mark.cross_slot_allowed(
    "the previous release's minutes and counts, without a hash tag, removed together: only a "
    "Redis that release ran on holds them (never a Cluster)"
)
def test_counts_the_previous_release_left_are_collected_once(issued):
    """Counts under the names before the hash tags (a relay of the previous release adds to
    them during a deploy) are collected like the new ones, and leave Redis the same way."""
    key = issued.key
    client = ledger.usage_stream_client()
    legacy_counts = f"{keyspace.LEGACY_REFUSALS_PREFIX}{MINUTE}"
    client.hincrby(legacy_counts, Refusal(key.pk, 403, "ip_not_allowed", "models").field(), 3)
    client.sadd(keyspace.LEGACY_REFUSAL_MINUTES, MINUTE)
    count_in_redis(Refusal(key.pk, 402, "insufficient_quota", "messages"), MINUTE, 4)

    assert collect_refusal_counts() == 2
    assert collect_refusal_counts() == 0

    assert rows() == [
        (key.pk, key.team_id, at(MINUTE), 402, "insufficient_quota", "messages", 4),
        (key.pk, key.team_id, at(MINUTE), 403, "ip_not_allowed", "models", 3),
    ]
    assert client.exists(legacy_counts) == client.exists(keyspace.LEGACY_REFUSAL_MINUTES) == 0


@needs_redis
def test_the_current_minute_is_written_and_kept_until_it_ends(issued):
    key = issued.key
    rate = Refusal(key.pk, 429, "rate_limit_exceeded", "responses")
    minute = current_minute()
    if time.time() % 60 > 55:
        time.sleep(6)  # Not across a minute's end: this test is about one minute.
        minute = current_minute()
    count_in_redis(rate, minute, 2)

    assert collect_refusal_counts() == 1
    count_in_redis(rate, minute, 3)
    assert collect_refusal_counts() == 1

    assert rows() == [(key.pk, key.team_id, at(minute), 429, "rate_limit_exceeded", "responses", 5)]
    assert redis_minutes() == {minute}


@needs_redis
def test_a_collector_killed_after_its_commit_does_not_count_twice(issued, monkeypatch):
    """Killed between writing the rows and removing the minute from Redis: the next run writes
    the same counts again, which changes nothing."""
    key = issued.key
    count_in_redis(Refusal(key.pk, 403, "key_expired", "messages"), MINUTE, 4)

    class Killed(BaseException):
        """As a SIGKILL would: nothing after it runs."""

    def killed(self):
        raise Killed

    # The class of the client's pipelines: redis-py's, or its Cluster client's.
    pipeline_class = type(ledger.usage_stream_client().pipeline(transaction=True))
    monkeypatch.setattr(pipeline_class, "execute", killed)
    with pytest.raises(Killed):
        collect_refusal_counts()
    monkeypatch.undo()
    assert rows() == [(key.pk, key.team_id, at(MINUTE), 403, "key_expired", "messages", 4)]
    assert redis_minutes() == {MINUTE}

    assert collect_refusal_counts() == 1

    assert rows() == [(key.pk, key.team_id, at(MINUTE), 403, "key_expired", "messages", 4)]
    assert redis_minutes() == set()


@needs_redis
def test_a_count_that_does_not_parse_is_skipped(issued):
    key = issued.key
    client = ledger.usage_stream_client()
    client.hincrby(keyspace.refusals(MINUTE), "not a refusal", 1)
    count_in_redis(Refusal(key.pk, 413, "request_too_large", "messages"), MINUTE, 1)

    assert collect_refusal_counts() == 1

    assert [row[4] for row in rows()] == ["request_too_large"]
    assert redis_minutes() == set()


def test_without_redis_the_collector_has_nothing_to_do(settings, issued):
    settings.REDIS = None
    assert collect_refusal_counts() == 0
