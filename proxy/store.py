"""The relay's shared state: key snapshots, quota admission and usage recording.

One protocol (Store), two backends:
  - RedisStore (REDIS_URL set, production): async Redis over one multiplexed connection per
    process (proxy.redis_client), so no thread hop on the hot path, and every worker process
    shares snapshots, reservations and running totals. Compound steps are Lua scripts, so they
    are atomic across processes.
  - LocalStore (the embedded default): Django's local-memory cache in this one process, which
    is also where the services delete snapshots; no I/O, so it is called on the event loop.
    Usage records wait in a queue of this process, and one writer task writes them in batches
    through the database writer that ingests the Redis stream (billing.services), off the
    request.
Both address their keys by the names in core.keyspace.

Quota admission reserves an estimate of the request's charge next to the key's running total
(see billing.ledger) and refuses while total + reservations >= limit. Recording the actual
charge releases the reservation in the same step. So concurrent requests cannot all slip in
under the limit: the overshoot is at most what the last admitted request costs beyond the
estimate the others reserved. A reservation lives at most `hold_seconds` (the longest the
request may take), so a worker killed mid-request cannot block its key for ever.
"""

import asyncio
import functools
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections

from billing import ledger, services
from billing.refusals import Refusal
from core import keyspace
from keys.cache import key_state_generation, put_key_state_if_current

from .quota import Admission, Plan
from .redis_client import RedisClient, RedisError, RedisReplyError
from .spool import Spool

logger = logging.getLogger(__name__)


# KEYS: total, reservations. ARGV: hold id, estimate, limit, now, deadline, hold seconds,
# minimum. Returns {-1} when the total is missing (the caller rebuilds it), else {admitted,
# spent, reserved, held}: the estimate is held if the limit leaves room for it, else what is
# left if that is at least the minimum. Expired reservations (a killed worker's) are dropped
# on the way.
_ADMIT = """
local spent = redis.call('GET', KEYS[1])
if not spent then return {-1, 0, 0, 0} end
spent = tonumber(spent)
local now = tonumber(ARGV[4])
local reserved = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local amount, deadline = string.match(entries[i + 1], '^(%d+):(%d+)$')
  if tonumber(deadline) < now then
    redis.call('HDEL', KEYS[2], entries[i])
  else
    reserved = reserved + tonumber(amount)
  end
end
local left = tonumber(ARGV[3]) - spent - reserved
local held = math.min(tonumber(ARGV[2]), left)
if left <= 0 or held < tonumber(ARGV[7]) then return {0, spent, reserved, 0} end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', held) .. ':' .. ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, spent, reserved, held}
"""

# KEYS: snapshot, generation. ARGV: snapshot, seconds, the generation read before the database
# was (empty when there was none). Stores the snapshot only if no change has bumped the
# generation since (keys.cache): a snapshot built before a change can never overwrite it.
_PUT_IF_CURRENT = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS: stream, total, reservations, checkpoints. ARGV: event JSON, charge, hold id, whether
# the request wrote a checkpoint, the endpoint (beside the JSON: see UsageRecord.to_json; an
# earlier release's ingest reads "e" only). One atomic step: the event is durable in the
# stream exactly when its charge is in the total. A request whose checkpoint is gone although
# it wrote one was taken for dead and billed from it (billing.ledger.reap_checkpoints): not
# billed twice.
_RECORD = """
if redis.call('HDEL', KEYS[4], ARGV[3]) == 0 and ARGV[4] == '1' then return 0 end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[1], 'p', ARGV[5])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCRBY', KEYS[2], ARGV[2]) end
redis.call('HDEL', KEYS[3], ARGV[3])
return 1
"""


# KEYS: the minutes' index. ARGV: the prefix of the minutes' counts, the refusal's field, the
# counts' lifetime. Adds 1 to the refusal's count for the current minute by Redis's clock, the
# one the collector (billing.services.refusals) tells closed minutes by: relay hosts whose
# clocks differ cannot add to a minute already collected. The minute's name is made here from
# that clock, so it is not in KEYS (this Redis is not a cluster).
_COUNT_REFUSAL = """
local now = tonumber(redis.call('TIME')[1])
local minute = now - now % 60
local counts = ARGV[1] .. minute
redis.call('HINCRBY', counts, ARGV[2], 1)
redis.call('EXPIRE', counts, ARGV[3])
redis.call('SADD', KEYS[1], minute)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return minute
"""


class RedisStore:
    def __init__(self, url: str) -> None:
        self.redis = RedisClient(url)
        self._admit = self.redis.script(_ADMIT)
        self._put_if_current = self.redis.script(_PUT_IF_CURRENT)
        self._record = self.redis.script(_RECORD)
        self._count_refusal = self.redis.script(_COUNT_REFUSAL)
        self.spool = Spool(Path(settings.RELAY_SPOOL_DIR), self._send_spooled)
        # This worker's id for its checkpoints, and the task keeping its key alive.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._alive: asyncio.Task | None = None

    async def get_key_state(self, digest: str) -> bytes | None:
        return await self.redis.execute("GET", keyspace.snapshot(digest))

    async def key_state_generation(self, digest: str) -> bytes:
        """Read before the database is (see keys.cache); pass it to put_key_state."""
        return await self.redis.execute("GET", keyspace.generation(digest)) or b""

    async def put_key_state(self, digest: str, raw: bytes, seconds: int, generation: bytes) -> bool:
        """Store the snapshot unless the key changed since `generation` was read."""
        stored = await self._put_if_current(
            keys=[keyspace.snapshot(digest), keyspace.generation(digest)],
            args=[raw, seconds, generation],
        )
        return stored == 1

    async def admit(self, plan: Plan, hold_id: str) -> Admission | None:
        """None when the key's running total is not in the cache (the caller rebuilds it)."""
        keys, args = _admission_call(plan, hold_id)
        return _admission(await self._admit(keys=keys, args=args))

    async def get_key_state_and_admit(
        self, digest: str, plan: Plan, hold_id: str
    ) -> tuple[bytes | None, Admission | None]:
        """The snapshot read and the admission, sent together: one round trip."""
        keys, args = _admission_call(plan, hold_id)
        raw, reply = await self.redis.execute_together(
            ("GET", keyspace.snapshot(digest)), self._admit.command(keys=keys, args=args)
        )
        if isinstance(raw, RedisReplyError):
            raise raw
        return raw, _admission(await self._admit.result(reply, keys=keys, args=args))

    async def release(self, *, key_id: int, hold_id: str) -> None:
        await self.redis.execute("HDEL", keyspace.reservations(key_id), hold_id)

    async def record(
        self, record: ledger.UsageRecord, *, hold_id: str, checkpointed: bool = False
    ) -> None:
        """Append the usage, raise the running total and release the request's hold, in one
        script; if Redis cannot take it, the record waits in the spool (proxy.spool)."""
        record_json = record.to_json()
        try:
            recorded = await self._send_record(record, record_json, hold_id, checkpointed)
        except RedisError as error:
            logger.warning(
                "Could not record usage of key %s in Redis (%s); spooled on disk",
                record.key_id,
                error,
            )
            await self.spool.keep(record_json, hold_id)
            return
        if not recorded:
            logger.warning(
                "Usage of request %s was billed from its last checkpoint: this worker was "
                "taken for dead",
                record.request_id,
            )

    async def count_refusal(self, refusal: Refusal) -> None:
        """Add 1 to the refusal's count for this minute: one script, one round trip, however
        often the key is refused (billing.refusals). Not spooled: a count lost while Redis is
        down is not worth the disk."""
        await self._count_refusal(
            keys=[keyspace.REFUSAL_MINUTES],
            args=[keyspace.REFUSALS_PREFIX, refusal.field(), keyspace.REFUSAL_COUNT_SECONDS],
        )

    async def checkpoint(self, record: ledger.UsageRecord, *, hold_id: str) -> None:
        """Keep what a stream has used so far, to be billed if this worker dies before it
        records the whole (billing.ledger.reap_checkpoints)."""
        if self._alive is None:
            await self._renew_alive()  # Alive before its first checkpoint can be seen.
            self._alive = asyncio.get_running_loop().create_task(self._keep_alive())
        checkpoint = {
            "w": self.worker_id,
            "k": record.key_id,
            "c": record.charge_units,
            "e": record.to_json(),
        }
        await self.redis.execute(
            "HSET", keyspace.CHECKPOINTS, hold_id, json.dumps(checkpoint, separators=(",", ":"))
        )

    async def _renew_alive(self) -> None:
        await self.redis.execute(
            "SET", keyspace.relay_alive(self.worker_id), 1, "EX", ledger.RELAY_ALIVE_SECONDS
        )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(ledger.RELAY_ALIVE_SECONDS / 5)
            try:
                await self._renew_alive()
            except RedisError as error:
                logger.warning("Could not renew this relay worker's liveness (%s)", error)

    async def _send_record(
        self,
        record: ledger.UsageRecord,
        record_json: str,
        hold_id: str,
        checkpointed: bool = False,
    ) -> bool:
        recorded = await self._record(
            keys=[
                keyspace.USAGE_STREAM,
                keyspace.spend_total(record.key_id),
                keyspace.reservations(record.key_id),
                keyspace.CHECKPOINTS,
            ],
            args=[record_json, record.charge_units, hold_id, int(checkpointed), record.endpoint],
        )
        return recorded == 1

    async def _send_spooled(self, record_json: str, hold_id: str) -> None:
        await self._send_record(ledger.UsageRecord.from_json(record_json), record_json, hold_id)

    async def close(self) -> None:
        if self._alive is not None:
            self._alive.cancel()
        await self.redis.close()


def _admission_call(plan: Plan, hold_id: str) -> tuple[list[str], list[str | int]]:
    now = int(time.time())
    keys = [keyspace.spend_total(plan.key_id), keyspace.reservations(plan.key_id)]
    args = [
        hold_id,
        plan.estimate_units,
        plan.limit_units,
        now,
        now + plan.hold_seconds,
        plan.hold_seconds,
        plan.minimum_units,
    ]
    return keys, args


def _admission(reply: list) -> Admission | None:
    if reply[0] == -1:
        return None
    return Admission(bool(reply[0]), int(reply[1]), int(reply[2]), int(reply[3]))


# The most records the embedded writer writes in one transaction (as ingest's batches).
WRITE_BATCH = 1000


class LocalStore:
    """One process: snapshots and totals in Django's local-memory cache, reservations here, and
    usage records queued here until this store's one writer task writes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key id -> request id -> (estimate, deadline)
        self._reservations: dict[int, dict[str, tuple[int, float]]] = {}
        self._totals = ledger.local_totals()
        self._queue: list[ledger.UsageRecord] = []
        # (minute, refusal) -> count: each minute's refusals counted in this process, which is
        # the whole count (one process), written by the writer; a minute is forgotten once it
        # has ended and its count is written.
        self._refusals: dict[tuple[int, Refusal], int] = {}
        self._refusals_changed = False
        self._writer: asyncio.Task | None = None

    async def get_key_state(self, digest: str) -> bytes | None:
        return cache.get(keyspace.snapshot_cache_key(digest))

    async def key_state_generation(self, digest: str) -> int:
        return key_state_generation(digest)

    async def put_key_state(self, digest: str, raw: bytes, seconds: int, generation: int) -> bool:
        return put_key_state_if_current(digest, raw, seconds, generation)

    async def admit(self, plan: Plan, hold_id: str) -> Admission | None:
        key_id = plan.key_id
        spent = ledger.spend_total(key_id)
        if spent is None:
            return None
        now = time.monotonic()
        with self._lock:
            held = self._reservations.setdefault(key_id, {})
            for held_id, (_, deadline) in list(held.items()):
                if deadline < now:
                    del held[held_id]
            reserved = sum(amount for amount, _ in held.values())
            left = plan.limit_units - spent - reserved
            amount = min(plan.estimate_units, left)
            if left <= 0 or amount < plan.minimum_units:
                return Admission(False, spent, reserved)
            held[hold_id] = (amount, now + plan.hold_seconds)
        return Admission(True, spent, reserved, amount)

    async def get_key_state_and_admit(
        self, digest: str, plan: Plan, hold_id: str
    ) -> tuple[bytes | None, Admission | None]:
        return await self.get_key_state(digest), await self.admit(plan, hold_id)

    async def release(self, *, key_id: int, hold_id: str) -> None:
        with self._lock:
            self._reservations.get(key_id, {}).pop(hold_id, None)

    async def record(
        self, record: ledger.UsageRecord, *, hold_id: str, checkpointed: bool = False
    ) -> None:
        # Counted in the total before it waits (the ledger counts it until it is written).
        self._totals.count(record, [keyspace.spend_total(record.key_id)])
        await self.release(key_id=record.key_id, hold_id=hold_id)
        # The response has been sent; the row is written by the writer task, off the event
        # loop, and the request does not wait for it.
        self._queue.append(record)
        self._start_writer()

    async def count_refusal(self, refusal: Refusal) -> None:
        minute = int(time.time()) // 60 * 60
        self._refusals[minute, refusal] = self._refusals.get((minute, refusal), 0) + 1
        self._refusals_changed = True
        self._start_writer()

    async def checkpoint(self, record: ledger.UsageRecord, *, hold_id: str) -> None:
        """Nothing to keep: one process, and reservations die with it."""

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())

    async def _write_queued(self) -> None:
        """Write the queue until it is empty, a batch at a time: whatever arrived while the
        last batch was being written goes in the next one, so a busy relay writes few, large
        transactions and an idle one writes each record at once. Refusal counts likewise: all
        that changed while the last write ran go in one statement (a key refused in a loop
        costs one write per round, not one per refusal)."""
        try:
            while self._queue or self._refusals_changed:
                if self._queue:
                    batch = self._queue[:WRITE_BATCH]
                    del self._queue[:WRITE_BATCH]
                    try:
                        await run_db(functools.partial(services.write_queued_usage, records=batch))
                    except Exception:
                        logger.exception("Could not write %d usage event(s)", len(batch))
                if self._refusals_changed:
                    await self._write_refusals()
        finally:
            self._writer = None

    async def _write_refusals(self) -> None:
        self._refusals_changed = False
        counts = dict(self._refusals)
        tallies = [
            services.RefusalTally(refusal, minute, count)
            for (minute, refusal), count in counts.items()
        ]
        try:
            await run_db(functools.partial(services.write_refusal_counts, tallies=tallies))
        except Exception:
            # Kept: the whole count is written again with the next refusal.
            logger.exception("Could not write %d refusal count(s)", len(tallies))
            return
        current = int(time.time()) // 60 * 60
        for (minute, refusal), count in counts.items():
            if minute < current and self._refusals.get((minute, refusal)) == count:
                del self._refusals[minute, refusal]

    async def close(self) -> None:
        """Returns once every record queued so far is written (or its failure logged)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)


class Store(Protocol):
    """What the relay asks of its shared state (RedisStore, LocalStore)."""

    async def get_key_state(self, digest: str) -> bytes | None:
        """The key's snapshot as the cache holds it (proxy.keystate), None on a miss."""
        ...

    async def key_state_generation(self, digest: str) -> bytes | int:
        """Read before the database is (see keys.cache); pass it to put_key_state."""
        ...

    async def put_key_state(
        self, digest: str, raw: bytes, seconds: int, generation: bytes | int
    ) -> bool:
        """Store the snapshot unless the key changed since `generation` was read."""
        ...

    async def admit(self, plan: Plan, hold_id: str) -> Admission | None:
        """Reserve the plan's estimate under `hold_id`; None when the key's running total is
        not in the cache (the caller rebuilds it)."""
        ...

    async def get_key_state_and_admit(
        self, digest: str, plan: Plan, hold_id: str
    ) -> tuple[bytes | None, Admission | None]:
        """get_key_state and admit together: one round trip where there is a round trip."""
        ...

    async def release(self, *, key_id: int, hold_id: str) -> None:
        """Give back the reservation `hold_id`, if the key holds it."""
        ...

    async def record(
        self, record: ledger.UsageRecord, *, hold_id: str, checkpointed: bool = False
    ) -> None:
        """Record the usage and release the request's reservation."""
        ...

    async def checkpoint(self, record: ledger.UsageRecord, *, hold_id: str) -> None:
        """Keep what a stream has used so far (billing.ledger.reap_checkpoints)."""
        ...

    async def count_refusal(self, refusal: Refusal) -> None:
        """Add 1 to the refusal's count for the current minute (billing.refusals)."""
        ...

    async def close(self) -> None: ...


def make_store() -> Store:
    return RedisStore(settings.REDIS_URL) if settings.REDIS_URL else LocalStore()


async def rebuild_spend_total(key_id: int) -> None:
    await run_db(ledger.spend_total_rebuild, key_id)


async def run_db(function, *args):
    """Run a database function in a worker thread (never on the event loop)."""
    return await sync_to_async(_with_fresh_connection, thread_sensitive=False)(function, *args)


def _with_fresh_connection(function, *args):
    # Threads outside Django's request cycle never see request_started or request_finished;
    # do what they would: drop connections that have aged out (CONN_MAX_AGE) or broken,
    # before and after the work.
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()
