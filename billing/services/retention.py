"""Retention: usage events older than USAGE_RETENTION_DAYS are deleted; the rollups stay.

UsageEvent is the one table that grows with traffic (a row per relayed request), while
UsageDaily keeps every day's totals per key and model for ever, which is what spend history,
charts and exports of old ranges read. Only settled events go: an unsettled one is not yet in
its key's `spent_usd` or the rollups, and deleting it would lose its charge. Each batch is its
own short transaction, so pruning a large backlog never holds a long lock or a huge undo log,
and a run killed midway leaves nothing half done.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import UsageEvent

logger = logging.getLogger(__name__)


def usage_prune(
    *, now: datetime | None = None, days: int | None = None, batch_size: int = 5000
) -> int:
    """Delete settled usage events older than `days` (default USAGE_RETENTION_DAYS; 0 keeps
    everything); return how many were deleted."""
    days = settings.USAGE_RETENTION_DAYS if days is None else days
    if days < 0:
        raise ValueError(f"Retention must be 0 (keep everything) or more days, not {days}.")
    if days == 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    old = UsageEvent.objects.filter(created_at__lt=cutoff, settled_at__isnull=False)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(old.order_by("id").values_list("id", flat=True)[:batch_size])
            if not ids:
                break
            deleted += UsageEvent.objects.filter(id__in=ids).delete()[0]
    if deleted:
        logger.info("Deleted %d usage events older than %d days", deleted, days)
    return deleted
