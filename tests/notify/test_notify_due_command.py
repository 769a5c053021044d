"""manage.py notify_due: the job once, synchronously, for operators and tests."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from keys.models import ApiKey
from notify.models import Attempt, Delivery, Event, EventType


def notify_due(*args) -> str:
    out = StringIO()
    call_command("notify_due", *args, stdout=out)
    return out.getvalue()


def test_it_tells_what_it_did_and_nothing_twice(issued, team, member, group):
    ApiKey.objects.filter(pk=issued.key.pk).update(expires_at=timezone.now() + timedelta(days=2))

    first = notify_due()

    # Each new event's deliveries (the channels' choice: none without recipients) were tried.
    tried = Delivery.objects.count()
    assert first == f"2 new events, {tried} deliver{'y' if tried == 1 else 'ies'} tried.\n"
    assert notify_due() == "0 new events, 0 deliveries tried.\n"
    assert sorted(Event.objects.values_list("type", flat=True)) == [
        EventType.KEY_CREATED,
        EventType.KEY_EXPIRING,
    ]


def test_it_tries_the_deliveries_whose_time_has_come(issued):
    notify_due()
    event = Event.objects.get(type=EventType.KEY_CREATED)
    due = Delivery.objects.create(
        event=event,
        channel=Delivery.Channel.EMAIL,
        email="ops-desk@example.net",
        next_attempt_at=timezone.now(),
    )
    Delivery.objects.create(
        event=event,
        channel=Delivery.Channel.EMAIL,
        email="ops-later@example.net",
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )

    assert notify_due() == "0 new events, 1 delivery tried.\n"
    assert list(
        Attempt.objects.filter(delivery__email__endswith="@example.net").values_list(
            "delivery", flat=True
        )
    ) == [due.pk]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("now",), "Error: unrecognized arguments: now"),
        (("--now", "2026-12-07"), "Error: unrecognized arguments: --now 2026-12-07"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(issued, args, error):
    with pytest.raises(CommandError) as refused:
        notify_due(*args)

    assert str(refused.value) == error
    assert not Event.objects.exists()
