"""Finding what is due to be told, by the periodic job (notify.services.notify_due): keys about
to expire, keys that expired, and key changes read from keys' audit trail (keys never import
notify). Thresholds and spend spikes are found where usage is settled (notify.thresholds).

Each writes Events through event_emit, named by a dedupe key, so the job may run every few
seconds, twice at once, or after an outage, and tells each thing once. What is looked at is
bounded: keys expiring within the longest warning, keys and audit rows of the last LOOKBACK
(a job down longer than that skips what it missed rather than telling stale news).
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q

from keys.models import ApiKey, AuditEvent, Membership
from keys.selectors import staff_may

from .models import Event, EventType, NotificationSettings
from .selectors import notification_settings_for
from .services.events import event_emit

LOOKBACK = timedelta(days=2)

# The audit actions told, as which event, with which reason.
_AUDITED = {
    AuditEvent.Action.KEY_CREATED: (EventType.KEY_CREATED, None),
    AuditEvent.Action.KEY_ROTATED: (EventType.KEY_ROTATED, None),
    AuditEvent.Action.KEY_DISABLED: (EventType.KEY_DISABLED, None),
    AuditEvent.Action.KEY_EXPIRED: (EventType.KEY_DISABLED, "expired"),
    AuditEvent.Action.KEY_SPEND_SPIKE: (EventType.KEY_DISABLED, "spend spike"),
}
_DISABLING = (
    AuditEvent.Action.KEY_DISABLED,
    AuditEvent.Action.KEY_EXPIRED,
    AuditEvent.Action.KEY_SPEND_SPIKE,
)


def detect_due(*, now: datetime) -> int:
    """Emit every event that is due at `now`; return how many new events were written."""
    candidates = [*_expiring(now), *_expired(now), *_audited(now)]
    return _emit_new(candidates)


# An event to write unless its dedupe key is: (team, type, dedupe key, payload, key).
_Candidate = tuple[Any, EventType, str, dict[str, Any], ApiKey | None]


def _emit_new(candidates: list[_Candidate]) -> int:
    if not candidates:
        return 0
    # Nearly every candidate was told on an earlier run: one query instead of a failed insert
    # for each, every few seconds.
    told = set(
        Event.objects.filter(
            dedupe_key__in=[dedupe_key for _, _, dedupe_key, _, _ in candidates]
        ).values_list("dedupe_key", flat=True)
    )
    emitted = 0
    for team, type, dedupe_key, payload, key in candidates:
        if dedupe_key in told:
            continue
        if event_emit(team=team, type=type, dedupe_key=dedupe_key, payload=payload, key=key):
            emitted += 1
    return emitted


def _key_fields(key: ApiKey) -> dict[str, Any]:
    return {"key_id": key.pk, "key_name": key.name, "key_prefix": key.prefix}


def _expiring(now: datetime) -> list[_Candidate]:
    """`key.expiring` at each of the team's warning marks (days before expiry), each once per
    key and expiry date (a new date warns again). Only the nearest mark that applies is told:
    a key 2 days from expiry hears of the 3-day mark, not of the 7-day one the job missed."""
    longest = max(
        [
            *NotificationSettings.DEFAULT_EXPIRY_WARNING_DAYS,
            *(
                day
                for days in NotificationSettings.objects.values_list(
                    "expiry_warning_days", flat=True
                )
                for day in days
            ),
        ]
    )
    keys = (
        ApiKey.objects.filter(
            status=ApiKey.Status.ENABLED,
            expires_at__gt=now,
            expires_at__lte=now + timedelta(days=longest),
        )
        .select_related("team")
        .order_by("pk")
    )
    candidates = []
    marks_by_team: dict[int, list[int]] = {}
    for key in keys:
        if key.team_id not in marks_by_team:
            marks = notification_settings_for(key.team).expiry_warning_days
            marks_by_team[key.team_id] = sorted(set(marks))
        left = key.expires_at - now
        mark = next(
            (days for days in marks_by_team[key.team_id] if left <= timedelta(days=days)), None
        )
        if mark is None:
            continue
        expires = key.expires_at.isoformat()
        candidates.append(
            (
                key.team,
                EventType.KEY_EXPIRING,
                f"key.expiring:{key.pk}:{expires}:{mark}",
                {**_key_fields(key), "expires_at": expires, "days": mark},
                key,
            )
        )
    return candidates


def _expired(now: datetime) -> list[_Candidate]:
    """`key.expired`, once per key and expiry date, for keys that expired in the last LOOKBACK
    while in use: enabled, or turned off by the system (the expiry task), not by a person."""
    keys = (
        ApiKey.objects.filter(expires_at__lte=now, expires_at__gt=now - LOOKBACK)
        .filter(Q(status=ApiKey.Status.ENABLED) | Q(disabled_by=ApiKey.DisabledBy.SYSTEM))
        .select_related("team")
        .order_by("pk")
    )
    return [
        (
            key.team,
            EventType.KEY_EXPIRED,
            f"key.expired:{key.pk}:{key.expires_at.isoformat()}",
            {**_key_fields(key), "expires_at": key.expires_at.isoformat()},
            key,
        )
        for key in keys
    ]


def _audited(now: datetime) -> list[_Candidate]:
    """`key.created`, `key.rotated`, `key.disabled` from keys' audit rows of the last LOOKBACK,
    once per row, naming who acted and why."""
    rows = list(
        AuditEvent.objects.filter(
            action__in=list(_AUDITED),
            created_at__gt=now - LOOKBACK,
            created_at__lte=now,
            team__isnull=False,
        )
        .select_related("actor", "team", "key")
        .order_by("id")
    )
    latest_disabling = _latest_disabling(row.key_id for row in rows if row.action in _DISABLING)
    candidates = []
    for row in rows:
        type, reason = _AUDITED[row.action]
        payload: dict[str, Any] = {
            "key_id": row.subject_id,
            "key_name": row.subject_label,
            "key_prefix": row.subject_prefix,
            "actor": row.actor.get_username() if row.actor else None,
            "at": row.created_at.isoformat(),
        }
        if type == EventType.KEY_DISABLED:
            payload["by"] = _disabled_by(row, latest_disabling)
            payload["reason"] = reason
        if type == EventType.KEY_ROTATED:
            payload["old_prefix"] = row.changes.get("prefix", [None])[0]
        candidates.append((row.team, type, f"audit:{row.pk}", payload, row.key))
    return candidates


def _latest_disabling(key_ids: Iterable[int | None]) -> dict[int, int]:
    """The id of each key's latest disabling audit row."""
    ids = {key_id for key_id in key_ids if key_id is not None}
    latest: dict[int, int] = {}
    rows = (
        AuditEvent.objects.filter(key_id__in=ids, action__in=_DISABLING)
        .order_by("key_id", "id")
        .values_list("key_id", "id")
    )
    for key_id, row_id in rows:
        latest[key_id] = row_id
    return latest


def _disabled_by(row: AuditEvent, latest_disabling: dict[int, int]) -> str:
    """Who turned the key off, by role, as ApiKey.disabled_by says: the key's own column while
    this row is its latest disabling and the key is still off; else the actor's role now."""
    if row.actor is None:
        return ApiKey.DisabledBy.SYSTEM.value
    key = row.key
    if (
        key is not None
        and key.status == ApiKey.Status.DISABLED
        and key.disabled_by
        and latest_disabling.get(key.pk) == row.pk
    ):
        return key.disabled_by
    if staff_may(actor=row.actor, permission="keys.change_apikey"):
        return ApiKey.DisabledBy.STAFF.value
    if Membership.objects.filter(
        team_id=row.team_id, user=row.actor, role=Membership.Role.LEAD
    ).exists():
        return ApiKey.DisabledBy.LEAD.value
    return ApiKey.DisabledBy.OWNER.value
