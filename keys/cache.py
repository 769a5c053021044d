"""Where the relay's cached key state lives, and how the services drop it.

The relay reads a key's state from the shared cache (one read per request); every service that
changes a key drops that entry after its transaction commits, so the very next request, in any
worker process, loads the new state from the database.
"""

from collections.abc import Iterable

from django.core.cache import cache
from django.db import transaction


def key_state_cache_key(digest: str) -> str:
    return f"keystate:{digest}"


def invalidate_key_state(digests: Iterable[str]) -> None:
    cache_keys = [key_state_cache_key(digest) for digest in digests]
    if cache_keys:
        # robust: the change is already committed; a cache outage must not turn it into a 500.
        # The relay's entries also expire on their own, which bounds how stale one can get.
        transaction.on_commit(lambda: cache.delete_many(cache_keys), robust=True)
