"""Writing the relay's refusal counts (billing.refusals) as RefusalCount rows.

Each count written is the whole count of its key, minute and kind of refusal so far: Redis
keeps a minute's counts until the minute has ended and been written, and the embedded relay
keeps those of its one process. So each write sets a row's count rather than adding to it, and
writing the same counts twice (a collector killed between its commit and removing the minute
from Redis, then run again) changes nothing.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from core import keyspace
from keys.models import ApiKey

from .. import ledger
from ..models import RefusalCount
from ..refusals import Refusal

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefusalTally:
    """A minute's whole count of one kind of refusal."""

    refusal: Refusal
    # The minute's start, in seconds since the epoch.
    minute: int
    count: int


def write_refusal_counts(*, tallies: Iterable[RefusalTally]) -> int:
    """Set each tally's row to its count (inserted, or updated in place). Refusals of a key
    deleted since are dropped: their page is gone, and a row needs the key's team. Returns
    rows written."""
    tallies = list(tallies)
    teams = dict(
        ApiKey.objects.filter(pk__in={tally.refusal.key_id for tally in tallies}).values_list(
            "pk", "team_id"
        )
    )
    rows = [
        RefusalCount(
            key_id=tally.refusal.key_id,
            team_id=teams[tally.refusal.key_id],
            minute=datetime.fromtimestamp(tally.minute, tz=UTC),
            status_code=tally.refusal.status_code,
            code=tally.refusal.code,
            endpoint=tally.refusal.endpoint,
            count=tally.count,
        )
        for tally in tallies
        if tally.refusal.key_id in teams
    ]
    # One statement (INSERT ... ON CONFLICT DO UPDATE on PostgreSQL and SQLite).
    RefusalCount.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["key", "minute", "status_code", "code", "endpoint"],
        update_fields=["count"],
    )
    return len(rows)


# KEYS: the minutes' index. Returns the current minute by Redis's clock, the clock the relay's
# count script (proxy.store) files refusals by, then every minute in the index. A minute before
# the current one is closed: no refusal can be added to it any more.
_MINUTES = """
local now = tonumber(redis.call('TIME')[1])
local minutes = redis.call('SMEMBERS', KEYS[1])
table.insert(minutes, 1, now - now % 60)
return minutes
"""


def collect_refusal_counts() -> int:
    """Write the refusal counts Redis holds into RefusalCount rows; returns rows written.

    A minute's counts in Redis are always its whole counts so far, so each is written as it
    stands: the current minute's too (a lead sees refusals within one run, and the next run
    writes the grown count over it), and a closed minute one last time, after which it leaves
    Redis. It leaves only after its rows are committed: a collector that dies in between leaves
    it for the next run, which writes the same counts again (set, not added). The counts under
    the names before the hash tags (core.keyspace), which a relay of the earlier release may
    still add to during a deploy, are collected the same way, for one release."""
    if settings.REDIS is None:
        return 0
    client = ledger.usage_stream_client()
    written = 0
    for index, prefix in (
        (keyspace.REFUSAL_MINUTES, keyspace.REFUSALS_PREFIX),
        (keyspace.LEGACY_REFUSAL_MINUTES, keyspace.LEGACY_REFUSALS_PREFIX),
    ):
        written += _collect(client, index, prefix)
    return written


def _collect(client, index: str, prefix: str) -> int:
    """Write the counts of the minutes in `index` (each minute's under prefix + the minute)."""
    current, *minutes = client.eval(_MINUTES, 1, index)
    written = 0
    for raw_minute in sorted(minutes, key=int):
        minute = int(raw_minute)
        counts = f"{prefix}{minute}"
        tallies = []
        for field, count in client.hgetall(counts).items():
            try:
                tallies.append(RefusalTally(Refusal.from_field(field), minute, int(count)))
            except ValueError:
                logger.error("Refusal count %r in %s could not be read; skipped", field, counts)
        written += write_refusal_counts(tallies=tallies)
        if minute < int(current):
            # One slot: the minute's counts share the index's hash tag (core.keyspace).
            pipeline = client.pipeline(transaction=True)
            pipeline.delete(counts)
            pipeline.srem(index, raw_minute)
            pipeline.execute()
    return written
