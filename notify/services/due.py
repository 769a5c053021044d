from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from .. import delivery, detectors


@dataclass(frozen=True, slots=True)
class Due:
    events: int
    tried: int


def notify_due(*, now: datetime | None = None) -> Due:
    """Find what is due and deliver it, once: new deliveries and retries whose time has come.

    Running it twice in a row sends nothing twice: an event is written once (its dedupe key)
    and a delivery is tried only when its `next_attempt_at` has come.
    """
    now = now or timezone.now()
    events = detectors.detect_due(now=now)
    # The new events' deliveries are due from when they were written, after `now`: this run
    # sends them too, not the next one.
    return Due(events=events, tried=delivery.deliver_due(now=max(now, timezone.now())))
