"""Finding what is due to be told: expiring keys, key changes in the audit trail (and, from
billing's settlement, thresholds and spend spikes). Each writes Events through event_emit."""

from datetime import datetime


def detect_due(*, now: datetime) -> int:
    """Emit every event that is due at `now`; return how many new events were written."""
    return 0
