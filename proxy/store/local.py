"""The relay's store on the embedded default: one process, no Redis. Snapshots and running
totals in Django's local-memory cache, reservations and rate logs in this process, usage
records queued here and written in batches by one writer task through the database writer that
ingests the Redis stream (billing.services), off the request. See proxy.store.
"""

import asyncio
import functools
import logging
import threading
import time

from django.core.cache import cache

from billing import ledger, services
from billing.refusals import Refusal
from billing.windows import Targets
from core import keyspace
from keys.cache import key_state_generation, put_key_state_if_current

from ..quota import Admission, Plan, Refused
from .channel_health import local_channel_health
from .threads import run_db

logger = logging.getLogger("proxy.store")


# The most records the embedded writer writes in one transaction (as ingest's batches).
WRITE_BATCH = 1000


class LocalStore:
    """One process: snapshots and totals in Django's local-memory cache, reservations and rate
    logs here, and usage records queued here until this store's one writer task writes them."""

    def __init__(self) -> None:
        # One per process, not per store: the admin of this process reads it.
        self.channel_health = local_channel_health
        self._lock = threading.Lock()
        # reservation hash name -> hold id -> (amount, deadline), as Redis's hashes
        self._reservations: dict[str, dict[str, tuple[int, float]]] = {}
        # key id -> hold id -> when it was admitted (monotonic seconds): the rate's log
        self._rate_logs: dict[int, dict[str, float]] = {}
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

    async def admit(self, plan: Plan, hold_id: str) -> Admission:
        """As RedisStore's admission script, in this process (see _ADMIT)."""
        spent = [self._totals.get(limit.counter.name) for limit in plan.limits]
        missing = tuple(index for index, units in enumerate(spent) if units is None)
        if missing:
            return Admission(False, missing=missing)
        now = time.monotonic()
        with self._lock:
            reserved = {}
            for name in plan.holds:
                held = self._reservations.setdefault(name, {})
                for held_id, (_, deadline) in list(held.items()):
                    if deadline < now:
                        del held[held_id]
                reserved[name] = sum(amount for amount, _ in held.values())
            amount = plan.estimate_units
            for index, limit in enumerate(plan.limits):
                others = reserved[limit.counter.holds]
                left = limit.limit_units - spent[index] - others
                if left <= 0 or min(plan.estimate_units, left) < plan.minimum_units:
                    return Admission(
                        False, spent[index], others, refused=Refused.SPEND, limit=index
                    )
                amount = min(amount, left)
            if plan.max_concurrency:
                in_flight = len(self._reservations[plan.holds[0]])
                if in_flight >= plan.max_concurrency:
                    return Admission(False, refused=Refused.CONCURRENCY, in_flight=in_flight)
            if plan.rate is not None:
                log = self._rate_logs.setdefault(plan.key_id, {})
                period = plan.rate.period_ms / 1000
                for logged_id, at in list(log.items()):
                    if at <= now - period:
                        del log[logged_id]
                if hold_id not in log and len(log) >= plan.rate.count:
                    wait = min(log.values()) + period - now
                    return Admission(False, refused=Refused.RATE, retry_after_ms=int(wait * 1000))
                log[hold_id] = now
            for name in plan.holds:
                self._reservations[name][hold_id] = (amount, now + plan.hold_seconds)
        return Admission(True, held_units=amount)

    async def get_key_state_and_admit(
        self, digest: str, plan: Plan, hold_id: str
    ) -> tuple[bytes | None, Admission]:
        return await self.get_key_state(digest), await self.admit(plan, hold_id)

    async def release(self, plan: Plan, hold_id: str) -> None:
        with self._lock:
            self._release(plan.holds, hold_id)

    def _release(self, holds: tuple[str, ...], hold_id: str) -> None:
        for name in holds:
            self._reservations.get(name, {}).pop(hold_id, None)

    async def record(
        self,
        record: ledger.UsageRecord,
        *,
        hold_id: str,
        targets: Targets | None = None,
        checkpointed: bool = False,
    ) -> None:
        targets = targets or Targets.of_key(record.team_id, record.key_id)
        # Counted in the totals before it waits (the ledger counts it until it is written).
        self._totals.count(record, targets.counters)
        with self._lock:
            self._release(targets.holds, hold_id)
        # The response has been sent; the row is written by the writer task, off the event
        # loop, and the request does not wait for it.
        self._queue.append(record)
        self._start_writer()

    async def count_refusal(self, refusal: Refusal) -> None:
        minute = int(time.time()) // 60 * 60
        self._refusals[minute, refusal] = self._refusals.get((minute, refusal), 0) + 1
        self._refusals_changed = True
        self._start_writer()

    async def checkpoint(
        self, record: ledger.UsageRecord, *, hold_id: str, targets: Targets | None = None
    ) -> None:
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
