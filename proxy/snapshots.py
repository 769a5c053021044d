"""A key's snapshot as the gate needs it: read from the cache, built from the database on a
miss, kept fresh in the background (proxy.keystate has the snapshot itself, keys.cache the
generation that keeps a stale one from being stored over a newer change).

Per process:
  - one build per digest at a time: when a busy key's snapshot is missing, its concurrent
    requests wait for one database read instead of making one each;
  - a snapshot older than keystate.KEY_STATE_REFRESH_SECONDS is rebuilt in the background by
    the request that finds it so, which goes on with it meanwhile (a snapshot still in the cache
    was dropped by no change); while the database is down, warm keys go on with theirs;
  - digests that belong to no key are remembered here, not in the shared cache, so a flood of
    made-up keys costs bounded memory and no Redis keys (safe: a new or rotated key has a
    digest never seen before).
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from . import errors
from .keystate import (
    KEY_STATE_SECONDS,
    UNKNOWN_KEY_SECONDS,
    UNKNOWN_MARKER,
    KeyState,
    build_key_state,
    parse_key_state,
)
from .metrics import relay_metrics
from .store import Store, run_db

logger = logging.getLogger(__name__)

# A key changed while its snapshot was built is built again, at most this many times in all.
_BUILD_ATTEMPTS = 3
# After a background refresh failed (the database down), the next try is this much later.
REFRESH_RETRY_SECONDS = 5.0
# Unknown digests remembered per process; past this the memory is simply started afresh.
UNKNOWN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Loaded:
    """A snapshot built from the database, and the key's generation read before it was."""

    raw: bytes
    generation: bytes | int


async def load_key_state(store: Store, digest: str) -> Loaded:
    """Build a key's snapshot from the database (in a thread) and store it, unless the key
    changed meanwhile (keys.cache): then build it again, since the change has committed by the
    time its generation moves. An unknown digest is not stored: Snapshots remembers it in memory."""
    for _ in range(_BUILD_ATTEMPTS):
        generation = await store.key_state_generation(digest)
        raw = await run_db(build_key_state, digest)
        if raw == UNKNOWN_MARKER:
            break
        if await store.put_key_state(digest, raw, KEY_STATE_SECONDS, generation):
            break
    return Loaded(raw, generation)


class Snapshots:
    def __init__(self) -> None:
        # Snapshots being built, one per digest (see _load).
        self._loading: dict[str, asyncio.Task[Loaded]] = {}
        # Digests nobody holds, with when to forget them.
        self._unknown: dict[str, float] = {}
        # When a background refresh last failed, per digest (retried every few seconds, not
        # by every request, while the database is down).
        self._refresh_failed: dict[str, float] = {}

    @property
    def building(self) -> bool:
        """Whether any snapshot is being built (for tests that wait for a refresh)."""
        return bool(self._loading)

    async def state(self, store: Store, digest: str, raw: bytes | None) -> KeyState:
        """The key's snapshot from what the cache held (`raw`), built on a miss, and rebuilt in
        the background once it is due (keystate.KEY_STATE_REFRESH_SECONDS).

        Looked up by the SHA-256 digest, so timing can tell an attacker at most something
        about a digest, never about a key."""
        relay_metrics.key_state_lookup(raw is not None)
        if raw is None:
            forget_at = self._unknown.get(digest)
            if forget_at is not None and forget_at > time.monotonic():
                raise errors.invalid_key()
            raw = await self._load(store, digest)
            if raw == UNKNOWN_MARKER:
                if len(self._unknown) >= UNKNOWN_LIMIT:
                    self._unknown.clear()
                self._unknown[digest] = time.monotonic() + UNKNOWN_KEY_SECONDS
        state = parse_key_state(raw)
        if state is None:
            raise errors.invalid_key()
        if state.refresh_at <= time.time() and self._may_refresh(digest):
            self._start(store, digest, background=True)
        return state

    async def _load(self, store: Store, digest: str) -> bytes:
        """One build per digest at a time in this process: when a busy key's snapshot expires,
        its concurrent requests wait for one database read instead of making one each.

        A request that joins a build already under way uses it only if the key's generation
        has not moved since that build began; otherwise the key changed in between (perhaps
        before this request started) and it builds its own."""
        loading = self._loading.get(digest)
        if loading is not None:
            loaded = await asyncio.shield(loading)
            if await store.key_state_generation(digest) == loaded.generation:
                return loaded.raw
            return (await load_key_state(store, digest)).raw
        # Shielded: a request cancelled while it waits must not cancel the others' build.
        return (await asyncio.shield(self._start(store, digest, background=False))).raw

    def _may_refresh(self, digest: str) -> bool:
        """Not already being built, and no refresh failed in the last few seconds."""
        failed_at = self._refresh_failed.get(digest)
        return digest not in self._loading and (
            failed_at is None or failed_at < time.monotonic() - REFRESH_RETRY_SECONDS
        )

    def _start(self, store: Store, digest: str, *, background: bool) -> asyncio.Task[Loaded]:
        loading = asyncio.ensure_future(load_key_state(store, digest))
        self._loading[digest] = loading
        loading.add_done_callback(lambda task: self._done(digest, task, background=background))
        return loading

    def _done(self, digest: str, task: asyncio.Task[Loaded], *, background: bool) -> None:
        del self._loading[digest]
        if task.cancelled():
            return
        error = task.exception()  # Also marks it seen when no request waited for it.
        if error is None:
            self._refresh_failed.pop(digest, None)
        elif background:
            self._refresh_failed[digest] = time.monotonic()
            # A background refresh: the requests go on with the snapshot they have (in the
            # cache, so not dropped by any change), which is the point during an outage.
            logger.warning(
                "Could not refresh a key's snapshot (%s: %s); using the cached one",
                type(error).__name__,
                error,
            )
