"""Usage as the relay records it, and each key's running spend total.

Recording. The relay must not add a database round trip to a request, so a `UsageRecord` is
written to `UsageEvent` later, in batches, by `billing.services.write_and_settle_usage`:
  - with Redis (production): the relay appends it, as JSON, to the usage stream
    (core.keyspace) in the same atomic script that raises the key's running total; the
    `ingest_usage` Celery task (`billing.services.ingest_usage_stream`) writes the stream into
    `UsageEvent` and only then deletes the entries. A worker killed after the script ran loses
    nothing; an ingest killed after its commit re-reads entries it already wrote, and the write
    skips those (same request id and timestamp).
  - on the embedded default (one process, no Redis): the relay's store raises the total and
    queues the record in this process (`LocalTotals.count`); its one writer task drains the
    queue in batches (`billing.services.write_queued_usage`), off the request.
Either way the row is written settled: the transaction that inserts it also adds its charge
to `ApiKey.spent_usd` and the daily rollups (`billing.services`; `settle_usage` remains for
rows written unsettled by any other path).

Running total. The gate must see spend that is not in `ApiKey.spent_usd` yet (waiting in the
stream or the queue, or in a row still unsettled), so each key has a running total: settled
spend plus every recorded charge, in Redis or, embedded, in the local-memory cache
(`spend_totals()` is the one object that holds them). It is an integer number of SPEND_UNITS
(10^-8 USD, the precision of the money columns) so that Redis can raise it with an exact,
atomic INCRBY (INCRBYFLOAT would drift). Recording raises it only if it exists; when it is
missing (evicted, flushed, never built) the relay calls `spend_total_rebuild`, which
recomputes it from the database plus the recorded events not yet in it. It is never reset to
zero. Writing a row settled moves its charge from "recorded, not written" into `spent_usd`,
and settlement moves one from "unsettled row" into `spent_usd`: neither changes the total.
Both then reconcile the totals of the keys they folded (`spend_total_reconcile`), raising any
that fell behind the database.

Window totals (billing.windows: a key's day, week or month, a member's or a team's month) are
kept the same way, by name: recording raises each that exists, and a missing one is rebuilt by
`counter_rebuild` from the events of its window plus those not written yet. They are not
reconciled: a window's total is created by the first admission that needs it, before any
request it admits is recorded; only a request admitted before its limit was set, recorded in
the milliseconds a rebuild takes, can be missed, once.
"""

import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache as memoize
from operator import attrgetter

import redis
from django.conf import settings
from django.core.cache import cache
from django.db.models import DecimalField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from core import keyspace
from core.cache import cache_redis_client
from keys.models import ApiKey

from .models import UsageEvent
from .windows import Counter, Scope

logger = logging.getLogger(__name__)

# One unit is 10^-8 USD: UsageEvent.charged_usd and ApiKey.spent_usd have 8 decimal places.
SPEND_UNITS_PER_USD = 10**8
# Long enough that a busy key is rebuilt about once a day; short enough that a deleted key's
# total does not linger in the cache for ever.
SPEND_TOTAL_SECONDS = 24 * 3600

_MONEY = DecimalField(max_digits=18, decimal_places=8)

# Stream entries read per XRANGE when a running total is rebuilt.
_REBUILD_CHUNK = 500


def usd_to_units(amount: Decimal) -> int:
    return int(amount * SPEND_UNITS_PER_USD)


def units_to_usd(units: int) -> Decimal:
    return Decimal(units) / SPEND_UNITS_PER_USD


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request's usage, as it travels from the relay to a `UsageEvent` row. Its fields are
    the row's columns, by name (the rest of this module derives the JSON and the row from
    them)."""

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
    # The relay endpoint (billing.refusals.ENDPOINT_LABELS). Not in the JSON (see to_json);
    # empty when it was not sent beside it (an earlier release's entry, a spooled record).
    endpoint: str = ""
    # The part of cache_creation_tokens kept for an hour (billing.pricing). Not in the JSON
    # either: sent beside it (the stream entry's "h", a checkpoint's "o", a spooled line's
    # "o"); 0 in an earlier release's entry, written before the split was read.
    cache_creation_1h_tokens: int = 0

    @property
    def charge_units(self) -> int:
        return usd_to_units(self.charged_usd)

    @property
    def identity(self) -> tuple[str, datetime]:
        """Request ids come from clients and may repeat; with the relay's timestamp they don't."""
        return (self.request_id, self.created_at)

    def to_json(self) -> str:
        """One object keyed by field name, in field order, as `from_json` (this and earlier
        releases) reads it. Not `dataclasses.asdict`: it deep-copies every value and cost
        about 5% of the relay's CPU. Without the fields added since the JSON's first release
        (_BESIDE_JSON: the endpoint, the 1-hour cache writes): an earlier release's `from_json`
        refuses a field it does not know, and its ingest would set this release's entries
        aside during a deploy; the relay sends them beside the JSON (the stream entry's "p"
        and "h")."""
        data = dict(zip(_WIRE_NAMES, _wire_values(self), strict=True))
        for name, (write, _) in _JSON_CONVERSIONS.items():
            data[name] = write(data[name])
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(
        cls, raw: str | bytes, *, endpoint: str = "", cache_creation_1h_tokens: int = 0
    ) -> "UsageRecord":
        """The record `to_json` wrote, with the fields sent beside it. Names this release does
        not know are left out, so a later release may add fields to the JSON itself."""
        data = json.loads(raw)
        for name, (_, read) in _JSON_CONVERSIONS.items():
            data[name] = read(data[name])
        data.setdefault("endpoint", endpoint)
        data.setdefault("cache_creation_1h_tokens", cache_creation_1h_tokens)
        if not _FIELD_NAME_SET.issuperset(data):
            data = {name: value for name, value in data.items() if name in _FIELD_NAME_SET}
        return cls(**data)

    def event_fields(self) -> dict:
        """The UsageEvent column values, text cut to the columns' lengths."""
        row = dict(zip(_FIELD_NAMES, _field_values(self), strict=True))
        for name, length in _text_column_lengths().items():
            row[name] = row[name][:length]
        return row


_FIELD_NAMES = tuple(field.name for field in fields(UsageRecord))
_field_values = attrgetter(*_FIELD_NAMES)
_FIELD_NAME_SET = frozenset(_FIELD_NAMES)
# Fields an earlier release's from_json does not know: sent beside the JSON (see to_json).
_BESIDE_JSON = frozenset({"endpoint", "cache_creation_1h_tokens"})
_WIRE_NAMES = tuple(name for name in _FIELD_NAMES if name not in _BESIDE_JSON)
_wire_values = attrgetter(*_WIRE_NAMES)
# The types JSON has no form for: how a value is written, and read back.
_JSON_FORMS = {Decimal: (str, Decimal), datetime: (datetime.isoformat, datetime.fromisoformat)}
_JSON_CONVERSIONS = {
    field.name: _JSON_FORMS[field.type]
    for field in fields(UsageRecord)
    if field.type in _JSON_FORMS
}


@memoize
def _text_column_lengths() -> dict[str, int]:
    """The record's text fields and their columns' lengths (a request id or session id comes
    from the client and may be longer)."""
    lengths = {}
    for name in _FIELD_NAMES:
        column = UsageEvent._meta.get_field(name)
        if column.get_internal_type() == "CharField":
            lengths[name] = column.max_length
    return lengths


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
    """This process's (synchronous) Redis client for the usage stream: ingest and the reaper."""
    return settings.REDIS.sync_client()


# --- usage in progress: the checkpoints of long streams ------------------------------------
#
# A relay worker serving a long stream writes, every second or so, the usage record it would
# write if it stopped now, into its team's shard's hash (core.keyspace; field: the request's
# hold id; value: JSON with the worker's id, the key, the charge and the record); recording the
# final usage removes it. Each worker keeps a key of its own alive in every shard while it
# runs. A checkpoint whose worker's key has expired belongs to a worker that died (SIGKILL, an
# out-of-memory kill): `reap_checkpoints` turns it into usage as the record script would
# (stream, running total, reservation released), so the request is billed up to its last
# checkpoint and its reservation freed within seconds.

# How long a worker's key outlives its last renewal (renewed every RELAY_ALIVE_SECONDS / 5).
RELAY_ALIVE_SECONDS = 10

# KEYS: a shard's checkpoints and stream. ARGV: the prefix of the workers' liveness keys in
# the shard; the prefixes of the totals and reservations before the hash tags (a checkpoint of
# the release that named only its key's); PREFIX and SHARDS when the hash is the one before the
# hash tags, whose totals are raised under this release's names (keyspace.retagged), else
# empty. Every key it touches is in the shard's slot (the liveness keys and the checkpoint's
# totals and reservations carry its hash tag), but for the hash before the tags, which only a
# Redis that ran an earlier release has (never a Cluster).
_REAP = (
    keyspace.HOLDS_LUA
    + """
local prefix, shards = ARGV[4], tonumber(ARGV[5])
local function retagged(name, team)
  if not shards or string.sub(name, 1, #prefix) ~= prefix
      or string.sub(name, #prefix + 1, #prefix + 1) == '{' then
    return name
  end
  local tag = '{t' .. string.format('%d', team % shards) .. '}:'
  return prefix .. tag .. string.sub(name, #prefix + 1)
end
local reaped = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local hold = entries[i]
  local ok, checkpoint = pcall(cjson.decode, entries[i + 1])
  if not ok then
    redis.call('HDEL', KEYS[1], hold)
  elseif redis.call('EXISTS', ARGV[1] .. checkpoint.w) == 0 then
    -- "o": the 1-hour cache writes, beside the JSON (UsageRecord.to_json); not in an
    -- earlier release's checkpoint.
    redis.call('XADD', KEYS[2], '*', 'e', checkpoint.e, 'h', checkpoint.o or 0)
    -- Its totals and reservations (billing.windows.Targets); an earlier release's checkpoint
    -- names only its key's.
    local totals = checkpoint.n or {ARGV[2] .. checkpoint.k}
    local team = shards and cjson.decode(checkpoint.e).team_id
    for _, total in ipairs(totals) do
      total = retagged(total, team)
      if redis.call('EXISTS', total) == 1 then redis.call('INCRBY', total, checkpoint.c) end
    end
    for _, held in ipairs(checkpoint.h or {ARGV[3] .. checkpoint.k}) do unhold(held, hold) end
    redis.call('HDEL', KEYS[1], hold)
    reaped = reaped + 1
  end
end
return reaped
"""
)


def usage_backlog() -> int | None:
    """Usage entries in the streams not yet written to the database (None without Redis)."""
    if settings.REDIS is None:
        return None
    with usage_stream_client().pipeline(transaction=False) as pipe:
        for stream in keyspace.INGESTED_STREAMS:
            pipe.xlen(stream)
        return sum(pipe.execute())


def usage_ingest_lag_seconds() -> float | None:
    """How long the oldest usage entry not yet written has waited (0 when none waits; None
    without Redis). Ingest trims what it wrote, so each stream's first entry is its oldest
    waiting; its id is its time in Redis's clock, in milliseconds."""
    if settings.REDIS is None:
        return None
    client = usage_stream_client()
    with client.pipeline(transaction=False) as pipe:
        for stream in keyspace.INGESTED_STREAMS:
            pipe.xrange(stream, "-", "+", count=1)
        firsts = pipe.execute()
    appended = [int(first[0][0].split(b"-")[0]) for first in firsts if first]
    if not appended:
        return 0.0
    seconds, microseconds = client.time()
    return max(0.0, seconds + microseconds / 1e6 - min(appended) / 1000)


def reap_checkpoints() -> int:
    """Bill the streams of dead relay workers up to their last checkpoint; returns how many.
    One script per shard that holds checkpoints (each touches one slot; which shards do is
    asked in one pipeline of EXISTS, which a Cluster client splits by node, as it does not
    scripts); then the hash before the hash tags, only if a release before them left one."""
    if settings.REDIS is None:
        return 0
    client = usage_stream_client()
    reap = _reap_script(client)
    legacy = (keyspace.LEGACY_SPEND_TOTAL_PREFIX, keyspace.LEGACY_RESERVATIONS_PREFIX)
    with client.pipeline(transaction=False) as pipe:
        for number in range(keyspace.SHARDS):
            pipe.exists(keyspace.checkpoints(number))
        held = [number for number, found in enumerate(pipe.execute()) if found]
    reaped = 0
    for number in held:
        reaped += reap(
            keys=[keyspace.checkpoints(number), keyspace.usage_stream(number)],
            args=[keyspace.relay_alive_prefix(number), *legacy, "", ""],
        )
    if client.exists(keyspace.LEGACY_CHECKPOINTS):
        reaped += reap(
            keys=[keyspace.LEGACY_CHECKPOINTS, keyspace.LEGACY_USAGE_STREAM],
            args=[keyspace.LEGACY_RELAY_ALIVE_PREFIX, *legacy, keyspace.PREFIX, keyspace.SHARDS],
        )
    if reaped:
        logger.warning(
            "Billed %d stream(s) of ended relay workers up to their last checkpoint", reaped
        )
    return reaped


@memoize
def _reap_script(client: redis.Redis):
    return client.register_script(_REAP)


# --- the running totals ---------------------------------------------------------------------

# KEYS: total. ARGV: amount. Raises a total only if it exists (a missing one is rebuilt).
_RAISE_IF_PRESENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 1
"""


class RedisTotals:
    """The running totals in Redis (core.keyspace), shared by every process: the relay's
    scripts raise them. Raw Redis commands only, so every reader and writer sees the integer
    Redis itself stores. Addressed by name (billing.windows.Counter.name)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._raise_if_present = client.register_script(_RAISE_IF_PRESENT)

    def get(self, name: str) -> int | None:
        value = self.client.get(name)
        return None if value is None else int(value)

    def add(self, name: str, units: int, seconds: int) -> bool:
        """Store a rebuilt total, unless one exists (it may count more than the database)."""
        return bool(self.client.set(name, units, nx=True, ex=seconds))

    def raise_by(self, name: str, units: int) -> bool:
        return self._raise_if_present(keys=[name], args=[units]) == 1

    def forget(self, names: Iterable[str]) -> None:
        # One DEL each: the names may be in different hash tags (Redis Cluster slots).
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.delete(name)
            pipe.execute()

    def unwritten(self, counter: Counter) -> list[UsageRecord]:
        """Recorded but not yet ingested events that count in `counter`. The stream holds
        seconds of traffic (it is ingested every few seconds), and this runs only when a total
        is rebuilt; but after an ingest outage it can hold a long backlog, so it is read in
        chunks (a long XRANGE holds Redis, and every relay request with it) and, for a key's
        total, only that key's entries are parsed: to_json writes the key id first. The stream is
        the counter's team's shard's, and the one before the hash tags (core.keyspace)."""
        mine = b'{"key_id":%d,' % counter.key_id if counter.key_id is not None else b""
        counts = _counts_in(counter)
        records = []
        shard_stream = keyspace.usage_stream(keyspace.shard(counter.team_id))
        for stream in (shard_stream, keyspace.LEGACY_USAGE_STREAM):
            start = "-"
            while entries := self.client.xrange(stream, start, "+", count=_REBUILD_CHUNK):
                for _, entry in entries:
                    raw = entry[b"e"]
                    if raw.startswith(mine) or not raw.startswith(b'{"key_id":'):
                        record = UsageRecord.from_json(raw)
                        if counts(record):
                            records.append(record)
                start = b"(" + entries[-1][0]
        return records


class LocalTotals:
    """The embedded default's running totals, in this process's local-memory cache, and the
    records counted in them whose rows are not committed yet: the relay's store counts each
    record here (`count`) as it queues it, and the writer (`services.write_queued_usage`) says
    when its batch is done (`written`). A rebuild in between still counts them, so a limit
    holds while records wait. One per process (`local_totals`): the relay's store, its writer
    and the rebuilds share it.
    """

    def __init__(self) -> None:
        self._unwritten: dict[tuple[str, datetime], UsageRecord] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> int | None:
        return cache.get(name)

    def add(self, name: str, units: int, seconds: int) -> bool:
        return cache.add(name, units, timeout=seconds)

    def raise_by(self, name: str, units: int) -> bool:
        try:
            cache.incr(name, units)
        except ValueError:  # No total: the next request rebuilds it.
            return False
        return True

    def forget(self, names: Iterable[str]) -> None:
        cache.delete_many(list(names))

    def unwritten(self, counter: Counter) -> list[UsageRecord]:
        counts = _counts_in(counter)
        with self._lock:
            return [record for record in self._unwritten.values() if counts(record)]

    def count(self, record: UsageRecord, names: Iterable[str]) -> None:
        """A record the relay queued: raise the totals it counts in, `names` (no I/O: safe on
        the event loop)."""
        with self._lock:
            self._unwritten[record.identity] = record
        for name in names:
            self.raise_by(name, record.charge_units)

    def written(self, records: Iterable[UsageRecord]) -> None:
        """These records' rows are committed (a rebuild now reads them from the database) or
        failed (logged; lost either way)."""
        with self._lock:
            for record in records:
                self._unwritten.pop(record.identity, None)


@memoize
def local_totals() -> LocalTotals:
    return LocalTotals()


@memoize
def spend_totals() -> RedisTotals | LocalTotals:
    """Where this process's running totals are: Redis when the cache is Redis, else here. In
    Redis through the cache's own client, for its short timeouts (a rebuild or reconcile
    fails in seconds rather than hanging while Redis does not answer)."""
    client = cache_redis_client()
    return local_totals() if client is None else RedisTotals(client)


def spend_total_rebuild(key_id: int) -> int:
    """Make sure the key's lifetime running total exists; return it in SPEND_UNITS."""
    return counter_rebuild(_lifetime(key_id))


def _lifetime(key_id: int) -> Counter:
    """A key's lifetime total, named in its team's hash tag (a deleted key's in team 0's)."""
    team = ApiKey.objects.filter(pk=key_id).values_list("team_id", flat=True).first()
    return Counter(Scope.KEY, team or 0, key_id)


def counter_rebuild(counter: Counter) -> int:
    """Make sure the running total exists; return it in SPEND_UNITS.

    What the database holds (a key's lifetime: settled spend + unsettled events; a window: the
    events in it) + recorded events not written yet. The unwritten events are read before the
    database, and any that are in both are counted once, so a write committing at the same
    moment neither hides nor doubles an event. The result is stored only if no total exists
    (an `add`), so a total that another process built, and that has been raised since, is
    never overwritten.
    """
    totals = spend_totals()
    unwritten = totals.unwritten(counter)
    if counter.period is None:
        total = _database_totals([counter.key_id]).get(counter.key_id, (0, 0))[1]
        seconds = SPEND_TOTAL_SECONDS
    else:
        total = _window_total(counter)
        # Kept an hour past its window, for the records of requests that started in it.
        seconds = max(60, int((counter.end - datetime.now(UTC)).total_seconds()) + 3600)
    if unwritten:
        in_db = identities_in_db([record.identity for record in unwritten])
        total += sum(record.charge_units for record in unwritten if record.identity not in in_db)
    if totals.add(counter.name, total, seconds):
        return total
    current = totals.get(counter.name)
    return total if current is None else current


def counter_spend(counter: Counter) -> int:
    """The running total in SPEND_UNITS, rebuilt first if it is not in the cache: what the
    relay's admission sees (the portal shows it)."""
    current = spend_totals().get(counter.name)
    return counter_rebuild(counter) if current is None else current


def _counts_in(counter: Counter) -> Callable[[UsageRecord], bool]:
    """Whether a record's charge counts in the counter (its scope and window)."""
    if counter.scope is Scope.KEY:

        def in_scope(record: UsageRecord) -> bool:
            return record.key_id == counter.key_id

    elif counter.scope is Scope.TEAM:

        def in_scope(record: UsageRecord) -> bool:
            return record.team_id == counter.team_id

    else:
        member_keys = set(
            ApiKey.objects.filter(team_id=counter.team_id, owner_id=counter.user_id).values_list(
                "pk", flat=True
            )
        )

        def in_scope(record: UsageRecord) -> bool:
            return record.key_id in member_keys and record.team_id == counter.team_id

    if counter.period is None:
        return in_scope
    return lambda record: in_scope(record) and counter.start <= record.created_at < counter.end


def _window_total(counter: Counter) -> int:
    events = UsageEvent.objects.filter(
        team_id=counter.team_id, created_at__gte=counter.start, created_at__lt=counter.end
    )
    if counter.scope is Scope.KEY:
        events = events.filter(key_id=counter.key_id)
    elif counter.scope is Scope.MEMBER:
        events = events.filter(key__owner_id=counter.user_id)
    total = events.aggregate(total=Sum("charged_usd"))["total"]
    return usd_to_units(total or Decimal(0))


def spend_total_reconcile(key_ids: Iterable[int]) -> int:
    """Raise cached totals that fell behind the database; return how many were raised.

    The database holds a subset of every recorded charge (the rest waits in the stream), so
    settled + unsettled spend is a floor under the true total: a cached total below it missed
    an event (recorded while the total was being rebuilt) and is raised by the difference.
    Never lowered, so a total that already counts charges not yet in the database is left
    alone. The fold (`billing.services`, at ingest and settlement) calls this once committed,
    for the keys it folded.
    """
    totals = spend_totals()
    raised = 0
    for key_id, (team_id, floor) in _database_totals(key_ids).items():
        name = keyspace.spend_total(team_id, key_id)
        cached = totals.get(name)
        # Expired in between (not raised): the next request rebuilds it from the database.
        if cached is not None and cached < floor and totals.raise_by(name, floor - cached):
            raised += 1
    if raised:
        logger.warning("Raised %d running spend totals that had fallen behind", raised)
    return raised


def _database_totals(key_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """Each key's team and settled + unsettled spend, in SPEND_UNITS, read in one statement: one
    snapshot, so a batch committing meanwhile is counted exactly once (a settlement batch read
    as settled or as unsettled, an ingest batch as written and settled or as not written; never
    both or neither)."""
    unsettled = (
        UsageEvent.objects.filter(key_id=OuterRef("pk"), settled_at__isnull=True)
        .values("key_id")
        .annotate(total=Sum("charged_usd"))
        .values("total")
    )
    rows = ApiKey.objects.filter(pk__in=list(key_ids)).values_list(
        "pk",
        "team_id",
        "spent_usd",
        Coalesce(Subquery(unsettled), Value(Decimal(0)), output_field=_MONEY),
    )
    return {
        pk: (team_id, usd_to_units(settled) + usd_to_units(pending))
        for pk, team_id, settled, pending in rows
    }


def spend_total(key_id: int) -> int | None:
    """The key's running total in SPEND_UNITS, or None if it is not in the cache."""
    return spend_totals().get(_lifetime(key_id).name)


def spend_total_forget(key_ids: Iterable[int]) -> None:
    """Drop totals so the next request rebuilds them from the database (e.g. after a repair)."""
    teams = ApiKey.objects.filter(pk__in=list(key_ids)).values_list("team_id", "pk")
    spend_totals().forget(keyspace.spend_total(team_id, key_id) for team_id, key_id in teams)
