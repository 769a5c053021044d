"""Every write to billing: recording usage (settled as it is written) and settlement.

One module per subject; callers import from here (`from billing import services`):
  - recording.py: `ingest_usage_stream` (Celery, with Redis), `write_queued_usage` (the embedded
    relay), both through `write_and_settle_usage`;
  - settlement.py: `fold_usage`, the one fold of usage into key spend and daily rollups, and
    `settle_usage`, the periodic safety net for rows written unsettled;
  - refusals.py: `write_refusal_counts` (the embedded relay) and `collect_refusal_counts`
    (Celery, with Redis), the relay's per-minute refusal counts as RefusalCount rows;
  - retention.py: `usage_prune`, deleting settled usage events past USAGE_RETENTION_DAYS.
"""

from .recording import ingest_usage_stream, write_and_settle_usage, write_queued_usage
from .refusals import RefusalTally, collect_refusal_counts, write_refusal_counts
from .retention import usage_prune
from .settlement import settle_usage

__all__ = [
    "RefusalTally",
    "collect_refusal_counts",
    "ingest_usage_stream",
    "settle_usage",
    "usage_prune",
    "write_and_settle_usage",
    "write_queued_usage",
    "write_refusal_counts",
]
