"""Delivering what is due: each pending Delivery whose time has come is tried once per run.

One loop serves both channels; a channel (notify.outcome) only says who hears of an event
(`deliveries_for`) and how one try went (`send`). A failed try is logged as an
Attempt and retried with exponential backoff, the first retry within a minute, until 24 hours
after the delivery was created; then it is marked failed. Rows are claimed with
SELECT ... FOR UPDATE SKIP LOCKED, so two runs at once (beat and an operator's `notify_due`)
never send the same try twice.
"""

import logging
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from .models import Attempt, Delivery
from .outcome import EXCERPT_CHARS, Channel, Outcome

logger = logging.getLogger(__name__)

FIRST_RETRY = timedelta(seconds=30)
LONGEST_WAIT = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)


def channels() -> dict[str, Channel]:
    from . import emails, webhooks

    return {Delivery.Channel.EMAIL: emails, Delivery.Channel.WEBHOOK: webhooks}


def next_attempt_at(delivery: Delivery, *, now: datetime) -> datetime | None:
    """When to try again after `delivery.attempts` failed tries; None once 24 hours are up."""
    wait = min(FIRST_RETRY * 2 ** max(delivery.attempts - 1, 0), LONGEST_WAIT)
    at = now + wait
    if at > delivery.created_at + GIVE_UP_AFTER:
        return None
    return at


def deliver_due(*, now: datetime | None = None, limit: int = 200) -> int:
    """Try every pending delivery whose time has come, once; return how many were tried."""
    now = now or timezone.now()
    tried = 0
    while tried < limit:
        with transaction.atomic():
            delivery = (
                Delivery.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("event", "webhook")
                .filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
                .order_by("next_attempt_at", "id")
                .first()
            )
            if delivery is None:
                break
            _try(delivery, now=now)
        tried += 1
    return tried


def _try(delivery: Delivery, *, now: datetime) -> None:
    started = time.monotonic()
    try:
        outcome = channels()[delivery.channel].send(delivery)
    except Exception as error:  # a bug in a channel must not stop the other deliveries
        logger.exception("Delivery %s failed in its channel", delivery.uuid)
        outcome = Outcome(delivered=False, error=f"{type(error).__name__}"[:200])
    Attempt.objects.create(
        delivery=delivery,
        status_code=outcome.status_code,
        error=outcome.error[:200],
        response_excerpt=outcome.response_excerpt[:EXCERPT_CHARS],
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    delivery.attempts += 1
    if outcome.delivered:
        delivery.status = Delivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.next_attempt_at = None
    else:
        delivery.next_attempt_at = next_attempt_at(delivery, now=now)
        if delivery.next_attempt_at is None:
            delivery.status = Delivery.Status.FAILED
    delivery.save(update_fields=["attempts", "status", "delivered_at", "next_attempt_at"])
