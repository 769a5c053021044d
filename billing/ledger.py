"""Usage as the relay records it, and each key's running spend total.

Recording. The relay must not add a database round trip to a request, so an event goes:
  - with Redis (production): onto a Redis stream (`usage_stream_name`), as a `UsageRecord` in
    JSON, in the same atomic script that raises the key's running total; the `ingest_usage`
    Celery task (`billing.services.ingest_usage_stream`) writes the stream into `UsageEvent`
    and only then deletes the entries. A worker killed after the script ran loses nothing; an
    ingest killed after its commit re-reads entries it already wrote, and the write skips
    those (same request id and timestamp).
  - on the embedded default (one process, no Redis): `count_locally` raises the total in
    memory, then `billing.services.write_locally` writes the row from a thread after the
    response has been sent.
Either way the row is written settled: the transaction that inserts it also adds its charge
to `ApiKey.spent_usd` and the daily rollups (`billing.services`; `settle_usage` remains for
rows written unsettled by any other path).

Running total. The gate must see spend that is not in `ApiKey.spent_usd` yet (waiting in the
stream or for its thread, or in a row still unsettled), so each key has a total in the shared
cache: settled spend plus every recorded charge. It is an integer number of SPEND_UNITS
(10^-8 USD, the precision of the money columns) so that Redis can raise it with an exact,
atomic INCRBY (INCRBYFLOAT would drift). Recording raises it only if it exists; when it is
missing (evicted, flushed, never built) the relay calls `spend_total_rebuild`, which
recomputes it from the database plus the recorded events not yet in it. It is never reset to
zero. Writing a row settled moves its charge from "recorded, not written" into `spent_usd`,
and settlement moves one from "unsettled row" into `spent_usd`: neither changes the total.
Both then reconcile the totals of the keys they folded (`spend_total_reconcile`), raising any
that fell behind the database.
"""

import json
import logging
import threading
from collections.abc import Collection, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache as memoize

import redis
from django.conf import settings
from django.core.cache import cache
from django.db.models import DecimalField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from keys.models import ApiKey

from .models import UsageEvent

logger = logging.getLogger(__name__)

# One unit is 10^-8 USD: UsageEvent.charged_usd and ApiKey.spent_usd have 8 decimal places.
SPEND_UNITS_PER_USD = 10**8
# Long enough that a busy key is rebuilt about once a day; short enough that a deleted key's
# total does not linger in the cache for ever.
SPEND_TOTAL_SECONDS = 24 * 3600

_MONEY = DecimalField(max_digits=18, decimal_places=8)

USAGE_STREAM = "usage:stream"
# Entries of the usage stream that ingest could not write (`billing.services.recording`), with
# the reason: for staff to look at (redis-cli XRANGE), never retried on their own.
UNWRITABLE_STREAM = "usage:unwritable"
# Stream entries read per XRANGE when a running total is rebuilt.
_REBUILD_CHUNK = 500


def usd_to_units(amount: Decimal) -> int:
    return int(amount * SPEND_UNITS_PER_USD)


def units_to_usd(units: int) -> Decimal:
    return Decimal(units) / SPEND_UNITS_PER_USD


def spend_total_cache_key(key_id: int) -> str:
    return f"spend:{key_id}"


def reservations_cache_key(key_id: int) -> str:
    return f"spend-reserved:{key_id}"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request's usage, as it travels from the relay to a `UsageEvent` row."""

    key_id: int
    team_id: int
    group_id: int | None
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_usd: Decimal
    charged_usd: Decimal
    status_code: int
    latency_ms: int
    client_ip: str | None
    session_id: str
    request_id: str
    created_at: datetime

    @property
    def charge_units(self) -> int:
        return usd_to_units(self.charged_usd)

    @property
    def identity(self) -> tuple[str, datetime]:
        """Request ids come from clients and may repeat; with the relay's timestamp they don't."""
        return (self.request_id, self.created_at)

    def to_json(self) -> str:
        """One object keyed by field name, as `from_json` (this and earlier releases) reads it.
        Built field by field: `dataclasses.asdict` deep-copies every value and cost about 5%
        of the relay's CPU."""
        return json.dumps(
            {
                "key_id": self.key_id,
                "team_id": self.team_id,
                "group_id": self.group_id,
                "model": self.model,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cache_creation_tokens": self.cache_creation_tokens,
                "cache_read_tokens": self.cache_read_tokens,
                "cost_usd": str(self.cost_usd),
                "charged_usd": str(self.charged_usd),
                "status_code": self.status_code,
                "latency_ms": self.latency_ms,
                "client_ip": self.client_ip,
                "session_id": self.session_id,
                "request_id": self.request_id,
                "created_at": self.created_at.isoformat(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> "UsageRecord":
        data = json.loads(raw)
        data["cost_usd"] = Decimal(data["cost_usd"])
        data["charged_usd"] = Decimal(data["charged_usd"])
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(**data)

    def event_fields(self) -> dict:
        """The UsageEvent column values, text cut to the columns' lengths."""
        return {
            "key_id": self.key_id,
            "team_id": self.team_id,
            "group_id": self.group_id,
            "model": self.model[: _max_length("model")],
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cost_usd": self.cost_usd,
            "charged_usd": self.charged_usd,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "client_ip": self.client_ip,
            "session_id": self.session_id[: _max_length("session_id")],
            "request_id": self.request_id[: _max_length("request_id")],
            "created_at": self.created_at,
        }


@memoize
def _max_length(field: str) -> int:
    return UsageEvent._meta.get_field(field).max_length


def identities_in_db(identities: Collection[tuple[str, datetime]]) -> set[tuple[str, datetime]]:
    """Which of these (request id, timestamp) identities already have a row."""
    found = (
        UsageEvent.objects.filter(
            request_id__in={request_id for request_id, _ in identities},
            # The time span bounds the search whatever the planner knows: without it, and with
            # no statistics on the table yet (autovacuum off or behind), PostgreSQL read the
            # whole usage table for an IN list of 1,000 ids (70 ms at 250,000 rows).
            created_at__range=(
                min(created_at for _, created_at in identities),
                max(created_at for _, created_at in identities),
            ),
        )
        # Empty request ids are not unique (the unique index leaves them out): never a repeat.
        .exclude(request_id="")
        .order_by()
        .values_list("request_id", "created_at")
    )
    return set(found) & set(identities)


# --- the Redis stream (production) ----------------------------------------------------------


@memoize
def usage_stream_client() -> redis.Redis:
    """This process's (synchronous) Redis client for the usage stream: ingest and rebuilds."""
    return redis.Redis.from_url(settings.REDIS_URL)


def usage_stream_name() -> str:
    return cache.make_key(USAGE_STREAM)


# --- usage in progress: the checkpoints of long streams ------------------------------------
#
# A relay worker serving a long stream writes, every second or so, the usage record it would
# write if it stopped now, into one hash (field: the request's hold id; value: JSON with the
# worker's id, the key, the charge and the record); recording the final usage removes it. Each
# worker keeps a key of its own alive while it runs. A checkpoint whose worker's key has
# expired belongs to a worker that died (SIGKILL, an out-of-memory kill): `reap_checkpoints`
# turns it into usage as the record script would (stream, running total, reservation released),
# so the request is billed up to its last checkpoint and its reservation freed within seconds.
CHECKPOINTS = "usage:checkpoints"
RELAY_ALIVE = "relay:alive:"
# How long a worker's key outlives its last renewal (renewed every RELAY_ALIVE_SECONDS / 5).
RELAY_ALIVE_SECONDS = 10


def checkpoints_name() -> str:
    return cache.make_key(CHECKPOINTS)


def relay_alive_name(worker_id: str) -> str:
    return cache.make_key(RELAY_ALIVE + worker_id)


# KEYS: checkpoints, stream. ARGV: prefixes of the workers' keys, the totals, the reservations.
_REAP = """
local reaped = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local hold = entries[i]
  local ok, checkpoint = pcall(cjson.decode, entries[i + 1])
  if not ok then
    redis.call('HDEL', KEYS[1], hold)
  elseif redis.call('EXISTS', ARGV[1] .. checkpoint.w) == 0 then
    redis.call('XADD', KEYS[2], '*', 'e', checkpoint.e)
    local total = ARGV[2] .. checkpoint.k
    if redis.call('EXISTS', total) == 1 then redis.call('INCRBY', total, checkpoint.c) end
    redis.call('HDEL', ARGV[3] .. checkpoint.k, hold)
    redis.call('HDEL', KEYS[1], hold)
    reaped = reaped + 1
  end
end
return reaped
"""


def reap_checkpoints() -> int:
    """Bill the streams of dead relay workers up to their last checkpoint; returns how many."""
    if not settings.REDIS_URL:
        return 0
    reaped = usage_stream_client().eval(
        _REAP,
        2,
        checkpoints_name(),
        usage_stream_name(),
        cache.make_key(RELAY_ALIVE),
        cache.make_key(spend_total_cache_key("")),
        cache.make_key(reservations_cache_key("")),
    )
    if reaped:
        logger.warning(
            "Billed %d stream(s) of ended relay workers up to their last checkpoint", reaped
        )
    return reaped


def unwritable_stream_name() -> str:
    return cache.make_key(UNWRITABLE_STREAM)


def _stream_records(key_id: int) -> list[UsageRecord]:
    """Recorded but not yet ingested events of one key. The stream holds seconds of traffic
    (it is ingested every few seconds), and this runs only when a total is rebuilt; but after
    an ingest outage it can hold a long backlog, so it is read in chunks (a long XRANGE holds
    Redis, and every relay request with it) and only this key's entries are parsed: to_json
    writes the key id first."""
    client = usage_stream_client()
    stream = usage_stream_name()
    mine = b'{"key_id":%d,' % key_id
    records = []
    start = "-"
    while entries := client.xrange(stream, start, "+", count=_REBUILD_CHUNK):
        for _, fields in entries:
            raw = fields[b"e"]
            if raw.startswith(mine) or not raw.startswith(b'{"key_id":'):
                record = UsageRecord.from_json(raw)
                if record.key_id == key_id:
                    records.append(record)
        start = b"(" + entries[-1][0]
    return records


# --- the embedded default: counted in memory here, written from a thread by services --------

# Events already added to a running total but not yet committed, by identity: a rebuild in
# that gap must still count them.
_unwritten: dict[tuple[str, datetime], UsageRecord] = {}
_unwritten_lock = threading.Lock()


def count_locally(record: UsageRecord) -> None:
    """Raise the key's total in the local-memory cache (no I/O: safe on the event loop)."""
    with _unwritten_lock:
        _unwritten[record.identity] = record
    # No total yet (ValueError): the next request rebuilds it, this event included.
    with suppress(ValueError):
        cache.incr(spend_total_cache_key(record.key_id), record.charge_units)


def local_write_finished(record: UsageRecord) -> None:
    """`billing.services.write_locally` has committed the record's row (a rebuild now reads it
    from the database) or failed (logged; the record is lost either way)."""
    with _unwritten_lock:
        _unwritten.pop(record.identity, None)


def _local_records(key_id: int) -> list[UsageRecord]:
    with _unwritten_lock:
        return [record for record in _unwritten.values() if record.key_id == key_id]


# --- the running total ----------------------------------------------------------------------


def spend_total_rebuild(key_id: int) -> int:
    """Make sure the key's running total exists; return it in SPEND_UNITS.

    Settled spend + unsettled events in the database + recorded events not written yet.
    The pending events are read before the database, and any that are in both are counted
    once, so an ingest running at the same moment neither hides nor doubles an event. The
    result is stored only if no total exists (an `add`), so a total that another process
    built, and that has been raised since, is never overwritten.
    """
    pending = _stream_records(key_id) if settings.REDIS_URL else _local_records(key_id)
    total = _database_totals([key_id]).get(key_id, 0)
    if pending:
        in_db = identities_in_db([record.identity for record in pending])
        total += sum(record.charge_units for record in pending if record.identity not in in_db)
    name = spend_total_cache_key(key_id)
    if cache.add(name, total, timeout=SPEND_TOTAL_SECONDS):
        return total
    current = cache.get(name)
    return total if current is None else int(current)


def spend_total_reconcile(key_ids: Iterable[int]) -> int:
    """Raise cached totals that fell behind the database; return how many were raised.

    The database holds a subset of every recorded charge (the rest waits in the stream), so
    settled + unsettled spend is a floor under the true total: a cached total below it missed
    an event (recorded while the total was being rebuilt) and is raised by the difference.
    Never lowered, so a total that already counts charges not yet in the database is left
    alone. The fold (`billing.services`, at ingest and settlement) calls this once committed,
    for the keys it folded.
    """
    raised = 0
    for key_id, floor in _database_totals(key_ids).items():
        name = spend_total_cache_key(key_id)
        cached = cache.get(name)
        if cached is None or int(cached) >= floor:
            continue
        # Expired in between: the next request rebuilds it from the database.
        with suppress(ValueError):
            cache.incr(name, floor - int(cached))
            raised += 1
    if raised:
        logger.warning("Raised %d running spend totals that had fallen behind", raised)
    return raised


def _database_totals(key_ids: Iterable[int]) -> dict[int, int]:
    """Settled + unsettled spend per key, in SPEND_UNITS, read in one statement: one snapshot,
    so a batch committing meanwhile is counted exactly once (a settlement batch read as settled
    or as unsettled, an ingest batch as written and settled or as not written; never both or
    neither)."""
    unsettled = (
        UsageEvent.objects.filter(key_id=OuterRef("pk"), settled_at__isnull=True)
        .values("key_id")
        .annotate(total=Sum("charged_usd"))
        .values("total")
    )
    rows = ApiKey.objects.filter(pk__in=list(key_ids)).values_list(
        "pk", "spent_usd", Coalesce(Subquery(unsettled), Value(Decimal(0)), output_field=_MONEY)
    )
    return {pk: usd_to_units(settled) + usd_to_units(pending) for pk, settled, pending in rows}


def spend_total(key_id: int) -> int | None:
    """The key's running total in SPEND_UNITS, or None if it is not in the cache."""
    value = cache.get(spend_total_cache_key(key_id))
    return None if value is None else int(value)


def spend_total_forget(key_ids: Iterable[int]) -> None:
    """Drop totals so the next request rebuilds them from the database (e.g. after a repair)."""
    cache.delete_many([spend_total_cache_key(key_id) for key_id in key_ids])
