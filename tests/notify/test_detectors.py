"""notify.detectors: expiring and expired keys, and key changes read from the audit trail, each
told once however often the job runs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from keys import services as keys_services
from keys.models import ApiKey, AuditEvent
from notify.detectors import LOOKBACK, detect_due
from notify.models import Event, EventType, NotificationSettings
from notify.services import notify_due

from ..factories import grant, make_key


def told(type: EventType) -> list[str]:
    return list(Event.objects.filter(type=type).order_by("id").values_list("dedupe_key", flat=True))


def run(now, times: int = 5) -> int:
    """The job, `times` times at `now`: the events the first run wrote (the rest write none)."""
    written = [detect_due(now=now) for _ in range(times)]
    assert written[1:] == [0] * (times - 1)
    return written[0]


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def expiring(issued, now):
    """The member's key, expiring in 8 days; its creation already told."""
    key = issued.key
    ApiKey.objects.filter(pk=key.pk).update(expires_at=now + timedelta(days=8))
    detect_due(now=timezone.now())
    key.refresh_from_db()
    return key


# --- expiring and expired keys ------------------------------------------------------------------


def test_an_expiring_key_is_told_once_at_each_mark_however_often_the_job_runs(expiring, now):
    key = expiring
    expires = key.expires_at.isoformat()

    assert run(now) == 0
    assert run(now + timedelta(days=1)) == 1  # 7 days left
    assert run(now + timedelta(days=2)) == 0
    assert run(now + timedelta(days=5)) == 1  # 3 days left
    assert run(now + timedelta(days=6, hours=12)) == 0
    assert run(now + timedelta(days=7, hours=1)) == 1  # 23 hours left
    assert run(now + timedelta(days=7, hours=23)) == 0
    assert run(now + timedelta(days=8)) == 1  # expired

    assert told(EventType.KEY_EXPIRING) == [
        f"key.expiring:{key.pk}:{expires}:7",
        f"key.expiring:{key.pk}:{expires}:3",
        f"key.expiring:{key.pk}:{expires}:1",
    ]
    assert told(EventType.KEY_EXPIRED) == [f"key.expired:{key.pk}:{expires}"]
    warning = Event.objects.get(type=EventType.KEY_EXPIRING, payload__days=3)
    assert (warning.team_id, warning.key_id) == (key.team_id, key.pk)
    assert warning.payload == {
        "key_id": key.pk,
        "key_name": "claude-code-main",
        "key_prefix": key.prefix,
        "expires_at": expires,
        "days": 3,
    }
    assert Event.objects.get(type=EventType.KEY_EXPIRED).payload == {
        "key_id": key.pk,
        "key_name": "claude-code-main",
        "key_prefix": key.prefix,
        "expires_at": expires,
    }


def test_a_missed_mark_is_skipped_for_the_nearest_that_applies(expiring, now):
    # The job was down from 8 days to 2 days before expiry.
    assert run(now + timedelta(days=6)) == 1

    assert [
        event.payload["days"] for event in Event.objects.filter(type=EventType.KEY_EXPIRING)
    ] == [3]


def test_a_new_expiry_date_warns_again(expiring, now, lead):
    assert run(now + timedelta(days=1)) == 1
    keys_services.api_key_update(key=expiring, actor=lead, expires_at=now + timedelta(days=30))
    later = now + timedelta(days=25)
    # The change itself is audited as key.updated, which is not told.
    assert run(later) == 1

    assert told(EventType.KEY_EXPIRING) == [
        f"key.expiring:{expiring.pk}:{(now + timedelta(days=8)).isoformat()}:7",
        f"key.expiring:{expiring.pk}:{(now + timedelta(days=30)).isoformat()}:7",
    ]


def test_the_teams_own_warning_days(expiring, now):
    NotificationSettings.objects.create(team=expiring.team, expiry_warning_days=[14, 2])

    assert run(now) == 1  # 8 days left: the 14-day mark
    assert run(now + timedelta(days=5)) == 0  # 3 days left: no mark of the team's
    assert run(now + timedelta(days=6, hours=1)) == 1

    assert [
        event.payload["days"] for event in Event.objects.filter(type=EventType.KEY_EXPIRING)
    ] == [14, 2]


def test_no_warning_days_warns_of_nothing_but_the_expiry(expiring, now):
    NotificationSettings.objects.create(team=expiring.team, expiry_warning_days=[])

    assert run(now + timedelta(days=7, hours=23)) == 0
    assert run(now + timedelta(days=8, seconds=1)) == 1
    assert told(EventType.KEY_EXPIRING) == []


def test_keys_that_are_disabled_or_never_expire_are_not_warned(issued, team, member, group, now):
    make_key(team=team, owner=member, group=group, name="forever")
    ApiKey.objects.filter(pk=issued.key.pk).update(
        expires_at=now + timedelta(days=2),
        status=ApiKey.Status.DISABLED,
        disabled_by=ApiKey.DisabledBy.LEAD,
    )

    run(now)
    run(now + timedelta(days=2, seconds=1))

    assert told(EventType.KEY_EXPIRING) == []
    # Turned off by a lead before it expired: its expiry is no news.
    assert told(EventType.KEY_EXPIRED) == []


def test_a_key_the_expiry_task_turned_off_is_told_expired_once(expiring, now):
    ApiKey.objects.filter(pk=expiring.pk).update(expires_at=now - timedelta(minutes=1))
    assert keys_services.api_key_expire(key=expiring)

    assert run(timezone.now()) == 2  # key.expired and key.disabled (by the system: expired)
    assert told(EventType.KEY_EXPIRED) == [
        f"key.expired:{expiring.pk}:{(now - timedelta(minutes=1)).isoformat()}"
    ]


def test_keys_that_expired_before_the_lookback_are_not_told(issued, now):
    ApiKey.objects.filter(pk=issued.key.pk).update(expires_at=now - LOOKBACK - timedelta(hours=1))

    run(now)

    assert told(EventType.KEY_EXPIRED) == []


# --- key changes from the audit trail ------------------------------------------------------------


def audit_row(key: ApiKey, action: str) -> AuditEvent:
    return AuditEvent.objects.filter(key=key, action=action).latest("id")


def test_key_changes_are_told_once_from_the_audit_trail(team, member, lead, group, now):
    issued = make_key(team=team, owner=member, group=group, actor=lead, name="ci")
    key = issued.key
    old_prefix = key.prefix
    keys_services.api_key_rotate(key=key, actor=member)
    keys_services.api_key_disable(key=key, actor=lead)

    assert run(timezone.now()) == 3

    created = Event.objects.get(type=EventType.KEY_CREATED)
    rotated = Event.objects.get(type=EventType.KEY_ROTATED)
    disabled = Event.objects.get(type=EventType.KEY_DISABLED)
    assert created.dedupe_key == f"audit:{audit_row(key, 'key.created').pk}"
    assert (created.team_id, created.key_id) == (team.pk, key.pk)
    row = audit_row(key, "key.created")
    assert created.payload == {
        "key_id": key.pk,
        "key_name": "ci",
        "key_prefix": old_prefix,
        "actor": "lead",
        "at": row.created_at.isoformat(),
    }
    assert rotated.payload["actor"] == "member"
    assert (rotated.payload["old_prefix"], rotated.payload["key_prefix"]) == (
        old_prefix,
        key.prefix,
    )
    assert {field: disabled.payload[field] for field in ("actor", "by", "reason")} == {
        "actor": "lead",
        "by": "lead",
        "reason": None,
    }


def test_who_disabled_a_key_after_it_was_enabled_again(issued, member, lead, now):
    key = issued.key
    keys_services.api_key_disable(key=key, actor=member)
    keys_services.api_key_enable(key=key, actor=member)
    staff = grant(lead, "keys.change_apikey")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    keys_services.api_key_disable(key=key, actor=staff)

    run(timezone.now())

    assert [
        (payload["actor"], payload["by"])
        for payload in Event.objects.filter(type=EventType.KEY_DISABLED)
        .order_by("id")
        .values_list("payload", flat=True)
    ] == [("member", "owner"), ("lead", "staff")]


def test_the_expiry_task_and_the_spike_guard_are_the_system(issued, now):
    key = issued.key
    keys_services.api_key_disable_for_spend_spike(key=key)

    run(timezone.now())

    disabled = Event.objects.get(type=EventType.KEY_DISABLED)
    assert {field: disabled.payload[field] for field in ("actor", "by", "reason")} == {
        "actor": None,
        "by": "system",
        "reason": "spend spike",
    }


def test_audit_rows_older_than_the_lookback_are_not_told(issued, now):
    AuditEvent.objects.filter(key=issued.key).update(created_at=now - LOOKBACK - timedelta(1))

    assert run(now) == 0


def test_a_deleted_keys_creation_is_still_told_by_its_audit_row(issued, member, now):
    keys_services.api_key_delete(key=issued.key, actor=member)

    run(timezone.now())

    created = Event.objects.get(type=EventType.KEY_CREATED)
    assert (created.key_id, created.payload["key_name"]) == (None, "claude-code-main")


def test_notify_due_twice_in_a_row_writes_nothing_the_second_time(expiring, team, member, group):
    make_key(team=team, owner=member, group=group, name="second")
    ApiKey.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() + timedelta(days=2))

    first = notify_due()
    second = notify_due()

    assert first.events == 2  # the second key's creation, the 3-day warning
    assert (second.events, second.tried) == (0, 0)
    assert Event.objects.count() == 3
