"""billing.services.retention: settled usage events past the retention go; rollups stay."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from billing import services, tasks
from billing.models import UsageDaily, UsageEvent
from keys.models import ApiKey

from ...factories import make_key
from ..factories import UsageEventFactory, usage_record

pytestmark = pytest.mark.django_db


def written(key, *, days_ago: int, request_id: str) -> UsageEvent:
    """An event written and settled by ingestion, as the relay's usage arrives."""
    at = timezone.now() - timedelta(days=days_ago)
    services.write_and_settle_usage(
        records=[usage_record(key, charged="0.25", request_id=request_id, created_at=at)]
    )
    return UsageEvent.objects.get(request_id=request_id)


def test_settled_events_past_the_retention_are_deleted_and_the_totals_stay():
    key = make_key().key
    old = written(key, days_ago=401, request_id="req_old")
    recent = written(key, days_ago=399, request_id="req_recent")
    rollups = list(UsageDaily.objects.values_list("day", "requests", "charged_usd"))

    assert services.usage_prune(days=400) == 1

    assert not UsageEvent.objects.filter(pk=old.pk).exists()
    assert UsageEvent.objects.filter(pk=recent.pk).exists()
    assert list(UsageDaily.objects.values_list("day", "requests", "charged_usd")) == rollups
    assert ApiKey.objects.get(pk=key.pk).spent_usd == Decimal("0.50")


def test_an_unsettled_event_is_kept_however_old_it_is():
    """Its charge is not in the key's spend or the rollups yet: deleting it would lose it."""
    key = make_key().key
    unsettled = UsageEventFactory(key=key, created_at=timezone.now() - timedelta(days=900))

    assert services.usage_prune(days=400) == 0
    assert UsageEvent.objects.filter(pk=unsettled.pk).exists()


def test_a_backlog_is_deleted_in_batches_until_none_is_left():
    key = make_key().key
    for number in range(5):
        written(key, days_ago=500, request_id=f"req_backlog_{number}")

    assert services.usage_prune(days=400, batch_size=2) == 5
    assert not UsageEvent.objects.exists()


@override_settings(USAGE_RETENTION_DAYS=30)
def test_the_setting_is_the_default_and_zero_keeps_everything():
    key = make_key().key
    written(key, days_ago=31, request_id="req_31_days")

    assert services.usage_prune(days=0) == 0
    assert UsageEvent.objects.count() == 1
    assert services.usage_prune() == 1


def test_a_negative_retention_is_refused():
    with pytest.raises(
        ValueError, match=r"^Retention must be 0 \(keep everything\) or more days, not -1\.$"
    ):
        services.usage_prune(days=-1)


def test_the_command_prunes_and_says_how_many(capsys):
    key = make_key().key
    written(key, days_ago=20, request_id="req_20_days")

    call_command("prune_usage", "--days", "10")

    assert capsys.readouterr().out == "Deleted 1 usage events older than 10 days.\n"
    assert not UsageEvent.objects.exists()


def test_the_command_with_zero_days_keeps_everything(capsys):
    key = make_key().key
    written(key, days_ago=20, request_id="req_kept")

    call_command("prune_usage", "--days", "0")

    assert capsys.readouterr().out == "Retention is 0 days: every usage event is kept.\n"
    assert UsageEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("-1", "--days: must be 0 (keep everything) or more, not -1."),
        ("ten", "argument --days: invalid int value: 'ten'"),
    ],
)
def test_the_command_refuses_a_bad_number_of_days(argument, message):
    key = make_key().key
    written(key, days_ago=900, request_id="req_untouched")

    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("prune_usage", "--days", argument)
    assert UsageEvent.objects.count() == 1


@override_settings(USAGE_RETENTION_DAYS=10)
def test_the_hourly_task_prunes_with_the_setting():
    key = make_key().key
    written(key, days_ago=11, request_id="req_task_old")
    written(key, days_ago=9, request_id="req_task_recent")

    assert tasks.prune_usage.apply().get() == 1
    assert list(UsageEvent.objects.values_list("request_id", flat=True)) == ["req_task_recent"]
