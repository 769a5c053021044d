"""Thresholds, found where usage is settled (billing.signals.usage_settled), never on the relay's
path: after each committed fold, every limit in force on each key whose spend changed is read
as the key's page shows it (billing.limits.key_limits: the running totals the relay admits
against, in the team's clock), and each of the team's thresholds it has reached is told once.

Once per limit, window, threshold and limit amount: the Event's dedupe key names all four, so
concurrent ingesters that both see a crossing write it once, a new day (week, month) tells
again, and so does a raised (or lowered) limit, whose crossings are new. Spend that jumps past
several thresholds at once tells each of them.
"""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from billing.limits import LimitKind, LimitStatus, key_limits
from billing.windows import Period, window, zone
from keys.models import ApiKey, Team

from . import spikes
from .models import Event, EventType
from .selectors import notification_settings_for
from .services.events import event_emit

logger = logging.getLogger(__name__)

_PERIODS = {
    LimitKind.DAILY: Period.DAY,
    LimitKind.WEEKLY: Period.WEEK,
    LimitKind.MONTHLY: Period.MONTH,
    LimitKind.MEMBER_MONTHLY: Period.MONTH,
    LimitKind.TEAM_MONTHLY: Period.MONTH,
}


@dataclass(frozen=True, slots=True)
class Crossing:
    """One threshold a limit has reached: the Event it becomes, if not already written."""

    team: Team
    type: EventType
    dedupe_key: str
    payload: dict[str, Any]
    key: ApiKey | None


def usage_settled_received(
    sender: object,
    *,
    key_ids: Iterable[int],
    latest: Mapping[int, datetime],
    **kwargs: Any,
) -> None:
    """billing.signals.usage_settled's receiver (connected in NotifyConfig.ready): thresholds,
    then the spend-spike guard, for the keys whose spend changed."""
    keys = list(
        ApiKey.objects.filter(pk__in=list(key_ids)).select_related("team", "owner").order_by("pk")
    )
    if not keys:
        return
    thresholds_emit(keys=keys, latest=latest)
    spikes.spike_guard(keys=keys, latest=latest)


def thresholds_emit(*, keys: Iterable[ApiKey], latest: Mapping[int, datetime]) -> int:
    """Emit every threshold the keys' limits have reached and that was not told yet; return how
    many events were written. `latest` gives each key's moment (its latest settled event): the
    windows counted are those it falls in. Keys need `team` and `owner` loaded."""
    now = timezone.now()
    crossings: dict[str, Crossing] = {}
    settings_by_team = {}
    for key in keys:
        if key.team_id not in settings_by_team:
            settings_by_team[key.team_id] = notification_settings_for(key.team)
        thresholds = sorted(set(settings_by_team[key.team_id].thresholds))
        if not thresholds:
            continue
        at = latest.get(key.pk, now)
        for status in key_limits(key, now=at):
            for threshold in thresholds:
                if status.spent_usd * 100 >= status.limit_usd * threshold:
                    crossing = _crossing(key, status, threshold, at)
                    # A team's budget, reached by two of its keys in one batch, is told once.
                    crossings.setdefault(crossing.dedupe_key, crossing)
    if not crossings:
        return 0
    # Crossings already told are most of them (a key at 85 % reaches 50 and 80 on every
    # batch): one query, rather than an insert that fails for each.
    told = set(
        Event.objects.filter(dedupe_key__in=list(crossings)).values_list("dedupe_key", flat=True)
    )
    emitted = 0
    for dedupe_key, crossing in crossings.items():
        if dedupe_key in told:
            continue
        event = event_emit(
            team=crossing.team,
            type=crossing.type,
            dedupe_key=dedupe_key,
            payload=crossing.payload,
            key=crossing.key,
        )
        if event is not None:
            emitted += 1
    if emitted:
        logger.info("Emitted %d threshold events", emitted)
    return emitted


def window_name(kind: LimitKind, time_zone: str, at: datetime) -> str | None:
    """The window of a limit of `kind` at `at`, in the team's calendar: "2026-12-07" (a day),
    "2026-W50" (an ISO week: weeks start on Monday), "2026-12" (a month); None for the quota."""
    period = _PERIODS.get(kind)
    if period is None:
        return None
    start = window(period, time_zone, at)[0]
    first = start.astimezone(zone(time_zone)).date()
    if period is Period.DAY:
        return first.isoformat()
    if period is Period.WEEK:
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{first:%Y-%m}"


def _crossing(key: ApiKey, status: LimitStatus, threshold: int, at: datetime) -> Crossing:
    window_label = window_name(status.kind, key.team.time_zone, at)
    payload: dict[str, Any] = {
        "key_id": key.pk,
        "key_name": key.name,
        "key_prefix": key.prefix,
        "limit": status.kind.value,
        "threshold": threshold,
        "spent_usd": str(status.spent_usd),
        "limit_usd": str(status.limit_usd),
        "window": window_label,
        "resets_at": status.resets_at.isoformat() if status.resets_at else None,
    }
    # The limit's amount ends each key: a raised limit's crossings are new ones.
    tail = f"{window_label or 'lifetime'}:{threshold}:{status.limit_usd}"
    if status.kind is LimitKind.TEAM_MONTHLY:
        return Crossing(
            key.team,
            EventType.TEAM_BUDGET_THRESHOLD,
            f"team.budget:{key.team_id}:{tail}",
            payload,
            # The team's budget is the team's, not the owner's of whichever key crossed it.
            None,
        )
    if status.kind is LimitKind.MEMBER_MONTHLY:
        payload["user_id"] = key.owner_id
        return Crossing(
            key.team,
            EventType.MEMBER_LIMIT_THRESHOLD,
            f"member.limit:{key.team_id}:{key.owner_id}:{tail}",
            payload,
            key,
        )
    return Crossing(
        key.team,
        EventType.KEY_LIMIT_THRESHOLD,
        f"key.limit:{key.pk}:{status.kind.value}:{tail}",
        payload,
        key,
    )
