"""Recording usage: the relay's `UsageRecord`s become `UsageEvent` rows, settled as written.

Both paths go through `write_and_settle_usage`, a batch at a time:
  - `ingest_usage_stream` (the `ingest_usage` Celery task, with Redis) moves the stream the
    relay appends to;
  - `write_queued_usage` (the embedded default) writes what the relay's store queued in its
    process, from the store's one writer, after the responses.

Each call is one transaction: the references (a key deleted while its usage waited in the
stream), the insert with `settled_at` already set (the unique constraint finds rows already
written), and the fold of exactly the inserted rows into their keys' spend and the daily
rollups (`settlement.fold_usage`, the fold settlement uses). A row is written once and never
updated: inserting rows unsettled and stamping them in a second pass wrote a new version of
every row, and every index entry again, which on a small machine took CPU from the relay.
"""

import logging
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone
from psycopg import sql
from redis.exceptions import ResponseError

from core import keyspace
from keys.models import ApiKey, Group, Team
from keys.services import api_key_mark_used

from .. import ledger
from ..ledger import UsageRecord
from ..models import UsageEvent
from .settlement import fold_usage

logger = logging.getLogger(__name__)

# `last_used_at` may be this stale; refreshing it at most this often keeps writes to the key
# row rare however busy the key is.
LAST_USED_PRECISION = timedelta(minutes=1)

# A stream entry that cannot become a row: it does not parse (ValueError, KeyError, TypeError)
# or the database refuses the row (DataError: a number out of range; IntegrityError: a check).
_BAD_DATA = (ValueError, KeyError, TypeError, DataError, IntegrityError)
# Entries read from the stream per read (see _group_read).
_READ_CHUNK = 200
# Entries set aside are kept for staff to look at, the newest this many.
_UNWRITABLE_KEPT = 10_000


def write_and_settle_usage(*, records: Iterable[UsageRecord]) -> int:
    """Insert the records not already in the database, settled, and fold them into their keys'
    spend and the daily rollups, in one transaction; then refresh `last_used_at`. Returns how
    many rows were written.

    A record already in the database (same request id and timestamp: e.g. a stream entry
    re-read after an ingest was killed between its commit and deleting the entries) is
    neither inserted nor folded again, and neither is a repeat within `records`.

    A record whose key or group was deleted after the request is written without it (the
    team's books keep the spend); one whose team was deleted is dropped, as the team's rows were.
    """
    records = list(records)
    if not records:
        return 0
    with transaction.atomic():
        rows = []
        seen = set()
        for record in records:
            if record.identity not in seen:
                seen.add(record.identity)
                rows.append(record.event_fields())
        rows = _with_existing_references(rows)
        if rows:
            settled_at = timezone.now()
            for row in rows:
                row["settled_at"] = settled_at
            rows = _insert_new(rows)
            fold_usage(events=rows)
    _refresh_last_used(records)
    return len(rows)


def _insert_new(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the rows not already in the database; return those.

    The unique constraint (request id and timestamp) checks every row anyway, so a batch is
    simply inserted, in a savepoint; only if that finds rows already there (entries re-read
    after an ingest was killed between its commit and deleting them) are they looked up and the
    rest inserted. A look-up for every batch was about a sixth of ingest's time.
    No ON CONFLICT DO NOTHING: a row skipped silently would still be folded.
    """
    try:
        with transaction.atomic():
            _insert(rows)
        return rows
    except IntegrityError:
        there = ledger.identities_in_db([(row["request_id"], row["created_at"]) for row in rows])
        if not there:
            raise
    rows = [row for row in rows if (row["request_id"], row["created_at"]) not in there]
    if rows:
        _insert(rows)
    return rows


def _with_existing_references(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose team still exists, each with its key and group emptied if those are gone.

    Usage waits in the stream for seconds (longer if the worker is down) and a key may be
    deleted meanwhile; inserting its id would fail the foreign key at commit, the batch would
    fail on every later run, and ingestion would stop for every team. The rows found here stay
    locked until commit (KEY SHARE, the lock PostgreSQL's own foreign-key check takes): a delete
    waits for this transaction, and edits to the rows go ahead.
    """
    keys = _lock_existing(ApiKey, {row["key_id"] for row in rows})
    groups = _lock_existing(Group, {row["group_id"] for row in rows})
    teams = _lock_existing(Team, {row["team_id"] for row in rows})
    kept = []
    for row in rows:
        if row["team_id"] not in teams:
            continue
        if row["key_id"] not in keys:
            row["key_id"] = None
        if row["group_id"] not in groups:
            row["group_id"] = None
        kept.append(row)
    if len(kept) < len(rows):
        logger.warning("Dropped %d usage events of deleted teams", len(rows) - len(kept))
    return kept


def _lock_existing(model, ids: set[int | None]) -> set[int]:
    """Which of `ids` exist, locked against deletion until commit (in ascending order, as the
    fold then locks keys: ingest and settlement cannot deadlock). SQLite serialises writers."""
    ids.discard(None)
    if not ids:
        return set()
    if connection.vendor != "postgresql":
        return set(model.objects.filter(pk__in=ids).values_list("pk", flat=True))
    # Django's select_for_update has no KEY SHARE.
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE",  # noqa: S608
            [sorted(ids)],
        )
        return {found for (found,) in cursor.fetchall()}


def _insert(rows: list[dict[str, Any]]) -> None:
    if connection.vendor != "postgresql":
        UsageEvent.objects.bulk_create([UsageEvent(**row) for row in rows])
        return
    # COPY: ingest writes about a thousand rows a second per busy worker, and building an INSERT
    # through the ORM cost several times the CPU of the rows themselves (measured in bench/).
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(UsageEvent._meta.db_table), sql.SQL(", ").join(map(sql.Identifier, rows[0]))
    )
    # The raw psycopg cursor: its errors are turned into Django's (IntegrityError) here.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(statement) as copy,
    ):
        for row in rows:
            copy.write_row(tuple(row.values()))


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


def ingest_usage_stream(*, batch_size: int = 1000) -> int:
    """Move recorded usage from the Redis streams into settled `UsageEvent` rows; returns rows
    written.

    The usage is in one stream per shard (core.keyspace), each read on its own (one Redis
    Cluster slot per command), and in the stream before the hash tags, drained for one release.
    Any number of workers, on any number of hosts, ingest at once: they read each stream
    through one consumer group (`keyspace.USAGE_INGEST_GROUP`), so Redis hands each entry to
    one of them. An entry is acknowledged, and later trimmed, only after its row is committed.
    A worker killed mid-batch leaves its entries pending: after USAGE_CLAIM_IDLE_SECONDS
    another takes them over (XAUTOCLAIM) and writes them, and a row committed just before the
    kill is skipped by `write_and_settle_usage` (the database's uniqueness on the request is
    the last guard). So every entry becomes exactly one row.

    Only what was in a stream when the call began is written. The relay keeps appending
    while this runs; chasing those entries turned ingest into a busy loop of tiny batches,
    each paying the whole fold and reconcile (measured in bench/: 2 ms of CPU per row instead
    of a fraction of one). The next run, seconds later, takes them in bulk.
    """
    if settings.REDIS is None:
        return 0
    ledger.reap_checkpoints()  # Dead workers' streams join the streams first.
    client = ledger.usage_stream_client()
    streams = keyspace.INGESTED_STREAMS
    # Each stream's newest entry, asked together: most shards' streams are empty.
    with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xrevrange(stream, "+", "-", count=1)
        newest = pipe.execute()
    batch = _Batch(client, batch_size)
    for stream, last in zip(streams, newest, strict=True):
        if last:
            _ingest_stream(client, stream, last[0][0], batch)
    batch.write()
    if batch.written:
        logger.info("Ingested and settled %d usage events", batch.written)
    return batch.written


Entries = list[tuple[bytes, dict[bytes, bytes]]]


class _Batch:
    """Entries read from any of the streams, written together once there are `size` of them
    (or at the end): each write pays one transaction, fold and reconcile, so the shards'
    streams are not written in a small batch each. Each stream's entries are acknowledged,
    and the stream trimmed, once the batch holding them is committed."""

    def __init__(self, client, size: int) -> None:
        self.client = client
        self.size = size
        self.written = 0
        self._entries: dict[str, Entries] = {}
        self._count = 0

    @property
    def room(self) -> int:
        return self.size - self._count

    def add(self, stream: str, entries: Entries) -> None:
        self._entries.setdefault(stream, []).extend(entries)
        self._count += len(entries)
        if self._count >= self.size:
            self.write()

    def write(self) -> None:
        if not self._count:
            return
        self.written += _write_entries(
            self.client, [entry for entries in self._entries.values() for entry in entries]
        )
        for stream, entries in self._entries.items():
            self.client.xack(stream, keyspace.USAGE_INGEST_GROUP, *[e for e, _ in entries])
            _trim_acknowledged(self.client, stream)
        self._entries.clear()
        self._count = 0


def _ingest_stream(client, stream: str, last_id: bytes, batch: _Batch) -> None:
    """Read one stream's entries up to `last_id` into the batch (see ingest_usage_stream)."""
    _ensure_group(client, stream)
    consumer = _consumer_name()
    # This consumer's own entries left pending by a failed run, then those a dead or stalled
    # consumer left: written at once (until acknowledged, a read finds them again). Then new
    # ones, which join the batch.
    for read in (_own_pending, _claimed):
        while entries := read(client, stream, consumer, batch.size):
            batch.add(stream, entries)
            batch.write()
    end = _stream_id(last_id)
    while entries := _new(client, stream, consumer, batch.room):
        # Entries appended since the call began stay pending for this consumer's next run (or,
        # should it never run again, for another to claim).
        taken = [entry for entry in entries if _stream_id(entry[0]) <= end]
        if taken:
            batch.add(stream, taken)
        if len(taken) < len(entries) or _stream_id(taken[-1][0]) == end:
            break
    _forget_idle_consumers(client, stream)


def _ensure_group(client, stream: str) -> None:
    """The stream's consumer group, made once: from the stream's start, so nothing already
    there is skipped when the first ingest after an upgrade finds no group."""
    try:
        client.xgroup_create(stream, keyspace.USAGE_INGEST_GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _own_pending(client, stream: str, consumer: str, batch_size: int) -> Entries:
    # Read from "0": this consumer's delivered but unacknowledged entries, not new ones.
    return _group_read(client, stream, consumer, batch_size, start="0", pending=True)


def _new(client, stream: str, consumer: str, batch_size: int) -> Entries:
    return _group_read(client, stream, consumer, batch_size, start=">", pending=False)


def _group_read(
    client, stream: str, consumer: str, batch_size: int, *, start: str, pending: bool
) -> Entries:
    """Up to `batch_size` entries of one stream, read in chunks: Redis serves one command at a
    time, and a read of 1,000 entries (about 450 KB) held it for 0.35 to 0.95 ms in its slow
    log, with every relay request waiting behind it."""
    entries: Entries = []
    cursor = start
    while len(entries) < batch_size:
        reply = client.xreadgroup(
            keyspace.USAGE_INGEST_GROUP,
            consumer,
            {stream: cursor},
            count=min(_READ_CHUNK, batch_size - len(entries)),
        )
        read = reply[0][1] if reply else []
        # A pending entry no longer in the stream comes back without fields: nothing to write.
        if gone := [entry_id for entry_id, fields in read if not fields]:
            client.xack(stream, keyspace.USAGE_INGEST_GROUP, *gone)
        chunk = [entry for entry in read if entry[1]]
        entries += chunk
        if len(read) < _READ_CHUNK:
            break
        if pending:
            cursor = read[-1][0].decode()  # Pending entries after the last one read.
    return entries


def _claimed(client, stream: str, consumer: str, batch_size: int) -> Entries:
    """Entries another consumer was given and has not acknowledged for
    USAGE_CLAIM_IDLE_SECONDS: it died or stalled mid-batch. Taken over, to be written here."""
    reply = client.xautoclaim(
        stream,
        keyspace.USAGE_INGEST_GROUP,
        consumer,
        min_idle_time=int(settings.USAGE_CLAIM_IDLE_SECONDS * 1000),
        start_id="0-0",
        count=min(_READ_CHUNK, batch_size),
    )
    # Entries deleted meanwhile come back empty (and are dropped from the pending list).
    return [entry for entry in reply[1] if entry[1]]


def _trim_acknowledged(client, stream: str) -> None:
    """Trim the stream below its oldest entry not yet acknowledged: in one step, where XDEL of
    1,000 ids held Redis (and every relay request waiting on it) for about a millisecond.
    Until then an entry stays readable, and the running totals' rebuild
    (`ledger.RedisTotals.unwritten`) still finds it."""
    group = keyspace.USAGE_INGEST_GROUP
    summary = client.xpending(stream, group)
    if summary["pending"]:
        below = summary["min"]
    else:
        info = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == group)
        below = _next_id(info["last-delivered-id"])
    client.xtrim(stream, minid=below, approximate=False)


def _forget_idle_consumers(client, stream: str) -> None:
    """Consumers (one per worker process) with nothing pending and idle a day are removed: a
    deployment's restarts would otherwise leave one behind per process (and per stream)."""
    group = keyspace.USAGE_INGEST_GROUP
    for consumer in client.xinfo_consumers(stream, group):
        if consumer["pending"] == 0 and consumer["idle"] > 24 * 60 * 60 * 1000:
            client.xgroup_delconsumer(stream, group, consumer["name"])


def _stream_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


def _next_id(entry_id: bytes | str) -> str:
    milliseconds, sequence = _stream_id(entry_id)
    return f"{milliseconds}-{sequence + 1}"


def _write_entries(client, entries: Entries) -> int:
    """Write a batch of stream entries. If the batch fails on its data (an entry that does not
    parse, or a row the database refuses), the entries are written one at a time, and each that
    still fails is set aside in the unwritable stream: left in place, it would fail its batch on
    every later run and stop ingestion for every team. An outage is not the data: it is raised,
    and the entries wait for the next run."""
    try:
        return write_and_settle_usage(records=[_record(fields) for _, fields in entries])
    except _BAD_DATA:
        pass
    written = 0
    for entry_id, fields in entries:
        try:
            written += write_and_settle_usage(records=[_record(fields)])
        except _BAD_DATA as error:
            reason = f"{type(error).__name__}: {error}"[:500]
            logger.error(
                "Usage entry %s could not be written (%s); set aside in %s",
                entry_id.decode(),
                reason,
                keyspace.UNWRITABLE_STREAM,
            )
            client.xadd(
                keyspace.UNWRITABLE_STREAM,
                {"id": entry_id, "e": fields.get(b"e", b""), "error": reason},
                maxlen=_UNWRITABLE_KEPT,
                approximate=True,
            )
    return written


def _record(fields: dict[bytes, bytes]) -> UsageRecord:
    """A stream entry's record: its JSON ("e") and the fields beside it, the endpoint ("p")
    and the 1-hour cache writes ("h"), each absent from entries an earlier release wrote."""
    return UsageRecord.from_json(
        fields[b"e"],
        endpoint=fields.get(b"p", b"").decode(),
        cache_creation_1h_tokens=int(fields.get(b"h", 0)),
    )


def write_queued_usage(*, records: list[UsageRecord]) -> int:
    """Write a batch the embedded relay queued (proxy.store.LocalStore's writer, in a thread),
    then take it off the records its running totals count as unwritten (`ledger.LocalTotals`):
    committed, a rebuild reads them from the database. Returns rows written.

    If the batch fails on its data, its records are written one at a time, and one that still
    fails is logged and dropped (there is no stream to set it aside in), so it does not take
    the others with it. An outage is raised, and the writer logs the batch as lost."""
    try:
        try:
            return write_and_settle_usage(records=records)
        except _BAD_DATA:
            if len(records) == 1:
                raise
        written = 0
        for record in records:
            try:
                written += write_and_settle_usage(records=[record])
            except _BAD_DATA:
                logger.exception("Usage of request %s could not be written", record.request_id)
        return written
    finally:
        ledger.local_totals().written(records)
