"""Refused requests as the key's page shows them: the RefusalCount rows, once they are written."""

import time

from django.conf import settings

from billing.models import RefusalCount
from billing.services import collect_refusal_counts


def refusal_rows(*, count: int, timeout: float = 5.0, **filters) -> list[RefusalCount]:
    """Wait until the refusals counted so far add up to `count` in RefusalCount rows (with
    Redis: running the collector, as Celery beat does; embedded: the relay's writer writes
    them after the responses). Returns the rows, ordered."""
    deadline = time.monotonic() + timeout
    while True:
        if settings.REDIS is not None:
            collect_refusal_counts()
        rows = list(
            RefusalCount.objects.filter(**filters).order_by("minute", "status_code", "code", "id")
        )
        if sum(row.count for row in rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)
