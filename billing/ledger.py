"""Usage recording and each key's running spend total, the two things the relay writes.

Recording. The relay must not add a database round trip to a request, so an event goes:
  - with Redis (production): onto a Redis stream, in the same atomic script that raises the
    key's running total; `ingest_usage_stream` (the `ingest_usage` Celery task) bulk-inserts
    the stream into `UsageEvent` and only then deletes the entries. A worker killed after the
    script ran loses nothing; an ingest killed after its commit re-reads entries it already
    wrote, and `write_usage_events` skips those (same request id and timestamp).
  - on the embedded default (one process, no Redis): straight into the database from a thread
    after the response has been sent.

Running total. The gate must see spend that settlement has not folded into `ApiKey.spent_usd`
yet, so each key has a total in the shared cache: settled spend plus every recorded charge.
It is an integer number of SPEND_UNITS (10^-8 USD, the precision of the money columns) so that
Redis can raise it with an exact, atomic INCRBY (INCRBYFLOAT would drift). Recording raises it
only if it exists; when it is missing (evicted, flushed, never built) the relay calls
`spend_total_rebuild`, which recomputes it from the database plus the recorded events not yet
in it. It is never reset to zero. Settlement moves a charge from "unsettled event" to
`spent_usd`, which leaves the total unchanged; it then reconciles the totals of the keys it
settled (`spend_total_reconcile`), raising any that fell behind the database.
"""

import json
import logging
import threading
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache as memoize

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import DecimalField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from psycopg import sql

from keys.models import ApiKey
from keys.services import api_key_mark_used

from .models import UsageEvent

logger = logging.getLogger(__name__)

# One unit is 10^-8 USD: UsageEvent.charged_usd and ApiKey.spent_usd have 8 decimal places.
SPEND_UNITS_PER_USD = 10**8
# Long enough that a busy key is rebuilt about once a day; short enough that a deleted key's
# total does not linger in the cache for ever.
SPEND_TOTAL_SECONDS = 24 * 3600
# `last_used_at` may be this stale; refreshing it at most this often keeps writes to the key
# row rare however busy the key is.
LAST_USED_PRECISION = timedelta(minutes=1)

_MONEY = DecimalField(max_digits=18, decimal_places=8)

USAGE_STREAM = "usage:stream"
_INGEST_LOCK = "usage:ingest-lock"
_INGEST_LOCK_SECONDS = 120


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
        data = asdict(self)
        data["cost_usd"] = str(self.cost_usd)
        data["charged_usd"] = str(self.charged_usd)
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data, separators=(",", ":"))

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

    def to_event(self) -> UsageEvent:
        return UsageEvent(**self.event_fields())


@memoize
def _max_length(field: str) -> int:
    return UsageEvent._meta.get_field(field).max_length


# --- writing events -------------------------------------------------------------------------


def write_usage_events(records: Iterable[UsageRecord]) -> int:
    """Insert the records not already in the database; refresh `last_used_at`. Returns how many
    rows were written."""
    records = list(records)
    if not records:
        return 0
    with transaction.atomic():
        seen = _identities_in_db(records)
        fresh = []
        for record in records:
            if record.identity not in seen:
                seen.add(record.identity)
                fresh.append(record)
        _insert(fresh)
    _refresh_last_used(records)
    return len(fresh)


def _insert(records: list[UsageRecord]) -> None:
    if not records:
        return
    if connection.vendor != "postgresql":
        # ignore_conflicts: a writer racing this one may have written some of them since.
        UsageEvent.objects.bulk_create(
            [record.to_event() for record in records], ignore_conflicts=True
        )
        return
    # COPY: ingest writes about a thousand rows a second per busy worker, and building an INSERT
    # through the ORM cost several times the CPU of the rows themselves (measured in bench/). The
    # ingest lock and the duplicate check above keep conflicts out; a racing writer would fail
    # the whole batch, which the next ingest then writes without the rows already there.
    columns = list(records[0].event_fields())
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(UsageEvent._meta.db_table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for record in records:
            copy.write_row(tuple(record.event_fields().values()))


def _identities_in_db(records: list[UsageRecord]) -> set[tuple[str, datetime]]:
    found = UsageEvent.objects.filter(
        request_id__in={record.request_id for record in records}
    ).values_list("request_id", "created_at")
    return set(found)


# Per process: when this process last refreshed each key's `last_used_at`, so a busy key costs
# one UPDATE a minute, not one per request.
_last_used_refreshed: dict[int, datetime] = {}


def _refresh_last_used(records: list[UsageRecord]) -> None:
    latest: dict[int, datetime] = {}
    for record in records:
        if record.key_id not in latest or record.created_at > latest[record.key_id]:
            latest[record.key_id] = record.created_at
    for key_id, used_at in latest.items():
        refreshed = _last_used_refreshed.get(key_id)
        if refreshed is not None and used_at - refreshed < LAST_USED_PRECISION:
            continue
        api_key_mark_used(key_id=key_id, used_at=used_at, precision=LAST_USED_PRECISION)
        _last_used_refreshed[key_id] = used_at


# --- the Redis stream (production) ----------------------------------------------------------


@memoize
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def usage_stream_name() -> str:
    return cache.make_key(USAGE_STREAM)


def ingest_usage_stream(*, batch_size: int = 1000) -> int:
    """Move recorded usage from the Redis stream into `UsageEvent`; returns rows written.

    One ingest at a time (a Redis lock): two would read the same entries. Entries are deleted
    only after their rows are committed, so a crash in between re-reads them, and the
    duplicate check in `write_usage_events` skips them.
    """
    if not settings.REDIS_URL:
        return 0
    client = _redis()
    lock = client.lock(cache.make_key(_INGEST_LOCK), timeout=_INGEST_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return 0
    written = 0
    try:
        stream = usage_stream_name()
        while entries := client.xrange(stream, "-", "+", count=batch_size):
            records = [UsageRecord.from_json(fields[b"e"]) for _, fields in entries]
            written += write_usage_events(records)
            client.xdel(stream, *[entry_id for entry_id, _ in entries])
    finally:
        lock.release()
    if written:
        logger.info("Ingested %d usage events", written)
    return written


def _stream_records(key_id: int) -> list[UsageRecord]:
    """Recorded but not yet ingested events of one key. The stream holds seconds of traffic
    (it is ingested every few seconds), and this runs only when a total is rebuilt."""
    records = []
    for _, fields in _redis().xrange(usage_stream_name(), "-", "+"):
        record = UsageRecord.from_json(fields[b"e"])
        if record.key_id == key_id:
            records.append(record)
    return records


# --- the embedded default: counted in memory, written from a thread -------------------------

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


def write_locally(record: UsageRecord) -> None:
    """Write one event to the database (the embedded default's recording; run in a thread)."""
    try:
        write_usage_events([record])
    finally:
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
        in_db = _identities_in_db(pending)
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
    alone. Settlement calls this for the keys it settled.
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
    so a settlement batch committing meanwhile is counted exactly once (read as settled or as
    unsettled, never both or neither)."""
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
