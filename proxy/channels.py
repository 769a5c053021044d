"""A channel's base URL and credential, held in each worker's memory rather than the cache.

Key snapshots live in the shared cache (Redis in production), where a channel's credential
has no business being. A snapshot names each routed channel with its version (when it was
last saved); this table holds the URL and credential, loaded from the database in a worker
thread. Saving a channel drops the snapshots of its groups (proxy.services), so the next
request rebuilds its snapshot with the new version, finds the table older, and reloads it
first: an edited URL or credential is used from the very next request, in every worker.

The credential is decrypted here (core.credentials); one that no configured key decrypts is
logged as an error and left out. A channel the table still lacks after a reload (deactivated,
deleted or undecryptable) is skipped like a failed one; each channel version costs at most one
reload per worker, so a stale snapshot cannot turn into a query per request.
"""

import asyncio
import logging
from dataclasses import dataclass

from core.credentials import UnreadableCredential

from .keystate import ChannelState, channel_version
from .models import Channel
from .store import run_db

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChannelSecrets:
    # Never sent to a client or logged: used only to call the upstream.
    base_url: str
    credential: str
    version: int


def _load() -> dict[int, ChannelSecrets]:
    table = {}
    for channel in Channel.objects.filter(is_active=True).only(
        "name", "base_url", "encrypted_credential", "updated_at"
    ):
        try:
            credential = channel.decrypt_credential()
        except UnreadableCredential as error:
            # Left out of the table, so the relay skips it like a failed channel and tries the
            # group's next one; the message names the channel, never the stored value.
            logger.error("%s", error)
            continue
        table[channel.pk] = ChannelSecrets(channel.base_url, credential, channel_version(channel))
    return table


class ChannelTable:
    def __init__(self) -> None:
        self._table: dict[int, ChannelSecrets] = {}
        # (channel id, version) pairs already reloaded for: never again.
        self._reloaded_for: set[tuple[int, int]] = set()
        self._lock: asyncio.Lock | None = None

    async def secrets(self, channel: ChannelState) -> ChannelSecrets | None:
        found = self._table.get(channel.id)
        if found is not None and found.version >= channel.version:
            return found
        wanted = (channel.id, channel.version)
        if wanted not in self._reloaded_for:
            await self._reload(wanted)
        return self._table.get(channel.id)

    async def _reload(self, wanted: tuple[int, int]) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if wanted in self._reloaded_for:
                return  # Another request reloaded for it while this one waited.
            self._table = await run_db(_load)
            self._reloaded_for.add(wanted)
