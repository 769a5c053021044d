"""Where the relay's cached key state lives, and how the services drop it.

The relay reads a key's state from the shared cache (one read per request); every service that
changes a key drops that entry after its transaction commits, so the very next request, in any
worker process, loads the new state from the database.

Dropping alone is not enough: a relay that read the database just before a change commits
would write its (now stale) snapshot back just after the drop. So each digest also has a
generation, which every drop bumps before deleting the snapshot; the relay reads the generation
before it reads the database and stores its snapshot only if the generation is still the same
(`put_key_state_if_current` here; a Lua script in Redis, proxy.store). A stale snapshot can
therefore never be written over a newer change. Both names are in core.keyspace.

A drop that cannot reach the cache (an outage at that moment) is retried in the background
until it lands or is no longer needed: the relay rebuilds a snapshot older than a few seconds
(proxy.keystate.KEY_STATE_REFRESH_SECONDS), which bounds how stale a missed drop leaves one.
"""

import logging
import threading
import time
from collections.abc import Iterable

from django.core.cache import cache
from django.db import transaction

from core import keyspace
from core.cache import cache_redis_client

logger = logging.getLogger(__name__)

# A generation outlives any snapshot by far; it only has to outlast a relay's database read.
GENERATION_SECONDS = 24 * 3600
# How long a failed drop is retried, and the first pause between tries (doubled each time).
# Past RETRY_SECONDS the relay has long rebuilt every snapshot from the database anyway.
RETRY_SECONDS = 60.0
RETRY_FIRST_PAUSE = 0.1

# The local-memory cache (one process) has no atomic compare-and-set: bumping a generation and
# the relay's conditional store take this lock. With Redis the script is atomic on its own.
_local_lock = threading.Lock()


def invalidate_key_state(digests: Iterable[str]) -> None:
    """Drop these keys' relay snapshots once the current transaction commits."""
    digests = list(digests)
    if digests:
        transaction.on_commit(lambda: drop_or_retry(digests))


def drop_or_retry(digests: list[str]) -> None:
    """Drop now; if the cache cannot be reached, retry in a background thread. Never raises:
    the change is already committed and must not turn into a 500."""
    try:
        drop_key_state(digests)
    except Exception as error:
        logger.warning(
            "Could not drop the relay's snapshots of %d key(s) (%s: %s); retrying",
            len(digests),
            type(error).__name__,
            error,
        )
        threading.Thread(
            target=_retry_drop, args=(digests,), name="keystate-drop-retry", daemon=True
        ).start()


def _retry_drop(digests: list[str]) -> None:
    pause = RETRY_FIRST_PAUSE
    last: Exception | None = None
    deadline = time.monotonic() + RETRY_SECONDS
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 5.0)
        try:
            drop_key_state(digests)
        except Exception as error:
            last = error
            continue
        logger.info("Dropped the relay's snapshots of %d key(s) on retry", len(digests))
        return
    logger.error(
        "Gave up dropping the relay's snapshots of %d key(s) (%s); they expire on their own",
        len(digests),
        last,
    )


def drop_key_state(digests: list[str]) -> None:
    """Bump each digest's generation, then delete its snapshot (in that order: a relay that
    stores between the two has the old generation and is refused)."""
    client = cache_redis_client()
    if client is not None:
        # One digest's names at a time, in order (a snapshot and its generation share a hash
        # tag; different digests' need not share a Redis Cluster slot), sent together. Also the
        # names before the hash tags (core.keyspace), which a relay of the previous release
        # still running during a deploy reads: it must not serve a changed key either.
        with client.pipeline(transaction=False) as pipe:
            for digest in digests:
                for generation, snapshot in (
                    (keyspace.generation(digest), keyspace.snapshot(digest)),
                    (keyspace.legacy_generation(digest), keyspace.legacy_snapshot(digest)),
                ):
                    pipe.incr(generation)
                    pipe.expire(generation, GENERATION_SECONDS)
                    pipe.delete(snapshot)
            pipe.execute()
        return
    with _local_lock:
        for digest in digests:
            generation = keyspace.generation_cache_key(digest)
            cache.set(generation, cache.get(generation, 0) + 1, timeout=GENERATION_SECONDS)
        cache.delete_many([keyspace.snapshot_cache_key(digest) for digest in digests])


def key_state_generation(digest: str) -> int:
    """The local-memory cache's generation of a digest (0 when it has none)."""
    return cache.get(keyspace.generation_cache_key(digest), 0)


def put_key_state_if_current(digest: str, raw: bytes, seconds: int, generation: int) -> bool:
    """Store a snapshot in the local-memory cache unless the key changed since `generation`
    was read. The Redis equivalent is a script in proxy.store."""
    with _local_lock:
        if key_state_generation(digest) != generation:
            return False
        cache.set(keyspace.snapshot_cache_key(digest), raw, timeout=seconds)
        return True
