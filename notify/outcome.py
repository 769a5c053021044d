"""What a notification channel is: who hears of an event and how one try went.

A channel (notify.emails, notify.webhooks) is a module with `deliveries_for` and `send`; the
delivery loop (notify.delivery.channels) reaches them. They import their Outcome from here, not
from the loop, so nothing imports back into it.
"""

from dataclasses import dataclass
from typing import Protocol

from .models import Delivery, Event

# The longest part of a far side's answer kept with an attempt.
EXCERPT_CHARS = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one try went: `delivered`, or why not (an HTTP status, an error text)."""

    delivered: bool
    status_code: int | None = None
    error: str = ""
    response_excerpt: str = ""


class Channel(Protocol):
    def deliveries_for(self, event: Event) -> list[Delivery]:
        """The unsaved deliveries `event` fans out to on this channel (none is fine)."""

    def send(self, delivery: Delivery) -> Outcome:
        """Try once; never raise for the far side's failures, report them in the Outcome."""
