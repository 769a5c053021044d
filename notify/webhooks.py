"""The webhook channel: which of a team's webhooks hear of an event, and one signed POST."""

from .delivery import Outcome
from .models import Delivery, Event


def deliveries_for(event: Event) -> list[Delivery]:
    return []


def send(delivery: Delivery) -> Outcome:
    raise NotImplementedError
