"""Every write of notifications. `event_emit` is the one door for every detector."""

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from keys.models import ApiKey, Team

from ..delivery import channels
from ..models import Delivery, Event, EventType


def event_emit(
    *,
    team: Team,
    type: EventType,
    dedupe_key: str,
    payload: dict[str, Any],
    key: ApiKey | None = None,
) -> Event | None:
    """Write the Event named by `dedupe_key` once and fan it out; None when it was already written.

    Safe to call from concurrent detectors: the unique `dedupe_key` lets exactly one insert win.
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            event = Event.objects.create(
                team=team, type=type, dedupe_key=dedupe_key, payload=payload, key=key
            )
            deliveries = [
                delivery
                for channel in channels().values()
                for delivery in channel.deliveries_for(event)
            ]
            for delivery in deliveries:
                delivery.event = event
                delivery.next_attempt_at = now
            Delivery.objects.bulk_create(deliveries)
    except IntegrityError:
        return None
    return event
