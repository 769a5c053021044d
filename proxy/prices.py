"""The relay's in-process price table: prices without a database query per request.

Loaded from `billing.ModelPrice` in a worker thread and reloaded when older than
REFRESH_SECONDS, so a changed price reaches every worker within that time. A model missing
from the table triggers an early reload (at most once per MISS_RELOAD_SECONDS), so a price
added a moment ago is not refused for long, while a flood of unknown model names costs at most
one query per that interval.

If the database cannot be reached for a reload, the relay goes on with the prices it has (and
says so in the log, and tries again every RETRY_SECONDS): a database outage must not stop the
warm keys, whose snapshots are in Redis. Only a worker that never loaded its prices fails.
"""

import asyncio
import logging
import time
from datetime import datetime

from django.db import InterfaceError, OperationalError

from billing.pricing import PriceRow, load_price_table, lookup_price

from .store import run_db

REFRESH_SECONDS = 30.0
MISS_RELOAD_SECONDS = 1.0
RETRY_SECONDS = 5.0

logger = logging.getLogger(__name__)


class PriceTable:
    def __init__(self) -> None:
        self._table: dict[str, PriceRow] = {}
        self._loaded_at = float("-inf")
        self._ever_loaded = False
        self._lock: asyncio.Lock | None = None

    async def lookup(self, model: str) -> PriceRow | None:
        age = time.monotonic() - self._loaded_at
        if age > REFRESH_SECONDS:
            await self.reload()
        row = lookup_price(self._table, model)
        if row is None and age > MISS_RELOAD_SECONDS:
            await self.reload()
            row = lookup_price(self._table, model)
        return row

    async def priced_models(self) -> dict[str, datetime]:
        """Every priced model name with when its price was set (for GET /v1/models)."""
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            await self.reload()
        return {model: row.updated_at for model, row in self._table.items()}

    async def reload(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        started = time.monotonic()
        async with self._lock:
            if self._loaded_at >= started:
                return  # Another request reloaded it while this one waited.
            try:
                self._table = await run_db(load_price_table)
            except (OperationalError, InterfaceError) as error:
                if not self._ever_loaded:
                    raise
                logger.warning(
                    "Could not reload prices (%s: %s); going on with the last ones loaded",
                    type(error).__name__,
                    error,
                )
                # Tried again in RETRY_SECONDS, not by every request meanwhile.
                self._loaded_at = max(
                    self._loaded_at, time.monotonic() - REFRESH_SECONDS + RETRY_SECONDS
                )
                return
            self._loaded_at = time.monotonic()
            self._ever_loaded = True

    def forget(self) -> None:
        """Reload on the next lookup (for tests, which change prices between requests)."""
        self._loaded_at = float("-inf")
