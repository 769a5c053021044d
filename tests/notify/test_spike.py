"""notify.spikes: the spend-spike guard, at settlement, disables a key once, as the system."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from keys import services as keys_services
from keys.models import ApiKey, AuditEvent
from notify.detectors import detect_due
from notify.models import Event, EventType, NotificationSettings

from ..factories import make_key
from .usage import charge

NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def guarded(team):
    return NotificationSettings.objects.create(team=team, spike_limit_usd=Decimal("5"))


def spike_rows(key: ApiKey) -> list[tuple]:
    return list(
        AuditEvent.objects.filter(key=key, action=AuditEvent.Action.KEY_SPEND_SPIKE).values_list(
            "actor", "changes"
        )
    )


def test_a_key_that_spends_more_than_the_limit_in_ten_minutes_is_disabled_once(
    guarded, issued, team, member, group, settle
):
    key = issued.key
    bystander = make_key(team=team, owner=member, group=group, name="bystander").key

    settle(charge(key, "3", NOON), charge(bystander, "4", NOON))
    settle(charge(key, "2", NOON + timedelta(minutes=5)))
    assert ApiKey.objects.get(pk=key.pk).status == ApiKey.Status.ENABLED  # $5: not more
    settle(charge(key, "0.01", NOON + timedelta(minutes=9)))
    # Usage the relay admitted before the key was turned off is still written: nothing again.
    settle(charge(key, "4", NOON + timedelta(minutes=9, seconds=30)))

    key.refresh_from_db()
    assert (key.status, key.disabled_by) == (ApiKey.Status.DISABLED, ApiKey.DisabledBy.SYSTEM)
    assert spike_rows(key) == [(None, {"status": ["enabled", "disabled"]})]
    assert not AuditEvent.objects.filter(key=key, action=AuditEvent.Action.KEY_DISABLED).exists()
    assert ApiKey.objects.get(pk=bystander.pk).status == ApiKey.Status.ENABLED

    detect_due(now=timezone.now())
    detect_due(now=timezone.now())
    disabled = Event.objects.get(type=EventType.KEY_DISABLED)
    assert disabled.key_id == key.pk
    assert {field: disabled.payload[field] for field in ("actor", "by", "reason")} == {
        "actor": None,
        "by": "system",
        "reason": "spend spike",
    }


def test_spend_spread_over_more_than_ten_minutes_is_no_spike(guarded, issued, settle):
    key = issued.key
    for minute in (0, 6, 12, 18, 24):
        settle(charge(key, "2.5", NOON + timedelta(minutes=minute)))

    assert ApiKey.objects.get(pk=key.pk).status == ApiKey.Status.ENABLED
    assert spike_rows(key) == []


def test_the_guard_is_off_by_default(issued, settle):
    settle(charge(issued.key, "500", NOON))

    assert ApiKey.objects.get(pk=issued.key.pk).status == ApiKey.Status.ENABLED


def test_a_key_already_disabled_is_left_alone(guarded, issued, lead, settle):
    key = keys_services.api_key_disable(key=issued.key, actor=lead)

    settle(charge(key, "50", NOON))

    key.refresh_from_db()
    assert key.disabled_by == ApiKey.DisabledBy.LEAD
    assert spike_rows(key) == []


def test_only_a_lead_may_enable_a_key_the_guard_disabled(guarded, issued, member, lead, settle):
    key = issued.key
    settle(charge(key, "6", NOON))
    key.refresh_from_db()

    with pytest.raises(ValidationError) as refused:
        keys_services.api_key_enable(key=key, actor=member)

    assert refused.value.message_dict == {
        "status": [
            "Status: disabled automatically after a spend spike. Only your team lead can enable it."
        ]
    }
    assert keys_services.api_key_enable(key=key, actor=lead).status == ApiKey.Status.ENABLED
