"""Every write to billing: recording usage (settled as it is written) and settlement.

One module per subject; callers import from here (`from billing import services`):
  - recording.py: `ingest_usage_stream` (Celery, with Redis), `write_queued_usage` (the embedded
    relay), both through `write_and_settle_usage`;
  - settlement.py: `fold_usage`, the one fold of usage into key spend and daily rollups, and
    `settle_usage`, the periodic safety net for rows written unsettled.
"""

from .recording import ingest_usage_stream, write_and_settle_usage, write_queued_usage
from .settlement import settle_usage

__all__ = [
    "ingest_usage_stream",
    "settle_usage",
    "write_and_settle_usage",
    "write_queued_usage",
]
