"""The relay's shared state: key snapshots, quota admission and usage recording.

One protocol (Store), two backends:
  - RedisStore (settings.REDIS set, production: one server, Sentinel or Cluster): async Redis
    over one multiplexed connection per process (proxy.redis_client), so no thread hop on the
    hot path, and every worker process shares snapshots, reservations and running totals.
    Compound steps are Lua scripts, so they are atomic across processes.
  - LocalStore (the embedded default): Django's local-memory cache in this one process, which
    is also where the services delete snapshots; no I/O, so it is called on the event loop.
    Usage records wait in a queue of this process, and one writer task writes them in batches
    through the database writer that ingests the Redis stream (billing.services), off the
    request.
Both address their keys by the names in core.keyspace.

Each also keeps the channels' circuit breaker state (`channel_health`: proxy.store.
channel_health; proxy.breaker decides with it).

Admission (proxy.quota's Plan) checks every limit of a request in one atomic step: it reserves
an estimate of the request's charge next to each limit's running total (billing.windows,
billing.ledger) and refuses while total + reservations >= limit; then the key's concurrency
(its live reservations) and its rate limit (a sliding-window log). Recording the actual charge
raises every total and releases the reservation in the same step. So concurrent requests
cannot all slip in under a limit: the overshoot is at most what the last admitted request
costs beyond the estimate the others reserved. A reservation lives at most `hold_seconds`
(the longest the request may take) and only while its worker is alive (its liveness key), so
a worker killed mid-request frees its key within seconds.
"""

from typing import Protocol

from django.conf import settings

from billing import ledger
from billing.refusals import Refusal
from billing.windows import Targets

from ..quota import Admission, Plan
from ..redis_connect import client_for
from .channel_health import Outcome, Trial
from .local import WRITE_BATCH, LocalStore
from .redis import RedisStore
from .threads import rebuild_counters, run_db

__all__ = [
    "WRITE_BATCH",
    "ChannelHealthState",
    "LocalStore",
    "RedisStore",
    "Store",
    "make_store",
    "rebuild_counters",
    "run_db",
]


class ChannelHealthState(Protocol):
    """The channels' circuit breaker state (RedisChannelHealth, LocalChannelHealth)."""

    async def ready(self) -> None:
        """Wait for the view's first load (once per worker; at once after)."""
        ...

    def view(self) -> dict[int, int]:
        """The unhealthy channels, from memory (no I/O): channel id -> when it opened (ms
        since the epoch), 0 for closed with failures in a row."""
        ...

    def count(self, channel_id: int, failed: bool) -> None:
        """Count a request sent to the channel (the admin's error rate), in memory."""
        ...

    async def trial(
        self, channel_id: int, *, cooldown_seconds: float, lease_seconds: float
    ) -> Trial:
        """An open channel past its cool-down: take its one half-open trial if nobody holds
        it (for `lease_seconds` at most)."""
        ...

    async def failed(
        self, channel_id: int, reason: str, *, failures_to_open: int, reopen: bool
    ) -> Outcome:
        """Record a failure: the channel opens at `failures_to_open` in a row, and an open one
        opens again (a new cool-down) if `reopen`."""
        ...

    async def succeeded(self, channel_id: int) -> Outcome:
        """Record a success of a channel in the view: it closes, its failures forgotten."""
        ...

    async def close(self) -> None: ...


class Store(Protocol):
    """What the relay asks of its shared state (RedisStore, LocalStore)."""

    channel_health: ChannelHealthState

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

    async def admit(self, plan: Plan, hold_id: str) -> Admission:
        """Admit the request against every limit of the plan in one atomic step, reserving its
        estimate under `hold_id`; Admission.missing names running totals not in the cache
        (the caller rebuilds them and asks again)."""
        ...

    async def get_key_state_and_admit(
        self, digest: str, plan: Plan, hold_id: str
    ) -> tuple[bytes | None, Admission]:
        """get_key_state and admit together: one round trip where there is a round trip."""
        ...

    async def release(self, plan: Plan, hold_id: str) -> None:
        """Give back the admission `hold_id`'s reservations (its place in the rate stays)."""
        ...

    async def record(
        self,
        record: ledger.UsageRecord,
        *,
        hold_id: str,
        targets: Targets | None = None,
        checkpointed: bool = False,
    ) -> None:
        """Record the usage, raising `targets`' totals and releasing the request's hold there
        (by default its key's lifetime total and reservations)."""
        ...

    async def checkpoint(
        self, record: ledger.UsageRecord, *, hold_id: str, targets: Targets | None = None
    ) -> None:
        """Keep what a stream has used so far (billing.ledger.reap_checkpoints)."""
        ...

    async def count_refusal(self, refusal: Refusal) -> None:
        """Add 1 to the refusal's count for the current minute (billing.refusals)."""
        ...

    async def close(self) -> None: ...


def make_store() -> Store:
    if settings.REDIS is None:
        return LocalStore()
    return RedisStore(client_for(settings.REDIS))
