"""Settlement: folding usage into each key's `spent_usd` and the `UsageDaily` rollups.

`fold_usage` is the one fold. Ingestion (`recording.write_and_settle_usage`) calls it for the
rows it inserts, already stamped settled, in the transaction that inserts them; `settle_usage`
calls it for rows still unsettled (written by another path, or before ingestion settled), in
the transaction that stamps them. A row is settled exactly when its charge is in the totals.
"""

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from keys.services import api_key_add_spend

from .. import ledger
from ..models import UsageDaily, UsageEvent
from ..pricing import TOKEN_FIELDS, TokenCounts
from ..signals import usage_settled

logger = logging.getLogger(__name__)

# What fold_usage reads of an event: which key, team, model and day it counts for, and what it adds.
_EVENT_FIELDS = (
    "id",
    "key_id",
    "team_id",
    "model",
    "created_at",
    *TOKEN_FIELDS,
    "cost_usd",
    "charged_usd",
)


@dataclass
class _RollupDelta(TokenCounts):
    requests: int = 0
    cost_usd: Decimal = Decimal(0)
    charged_usd: Decimal = Decimal(0)


# (key_id or None, team_id, model, day)
_RollupKey = tuple[int | None, int, str, date]


def settle_usage(*, batch_size: int = 500) -> int:
    """Fold every unsettled UsageEvent into ApiKey.spent_usd and UsageDaily; return how many.

    The safety net: ingestion settles the rows it writes, so this usually finds nothing, in
    one query on the small partial index `usage_unsettled`. It settles rows written unsettled
    by any other path, or before ingestion settled its rows.

    Each batch is one transaction that locks its events with SKIP LOCKED, adds to the totals
    with F() expressions (never overwriting a total read earlier) and stamps `settled_at`.
    So an event is counted exactly once: a second worker running at the same moment takes
    other rows instead of waiting for these, and a worker killed mid-batch leaves its batch
    unsettled and untouched for the next run. Only events that existed when the call began
    are taken, so a busy relay cannot keep one call running forever.
    """
    high_water = UsageEvent.objects.filter(settled_at__isnull=True).aggregate(Max("id"))
    last_id = high_water["id__max"]
    if last_id is None:
        return 0
    settled = 0
    while batch := _settle_batch(last_id=last_id, batch_size=batch_size):
        settled += batch
    if settled:
        logger.info("Settled %d usage events", settled)
    return settled


@transaction.atomic
def _settle_batch(*, last_id: int, batch_size: int) -> int:
    events = list(
        UsageEvent.objects.select_for_update(skip_locked=True)
        .filter(settled_at__isnull=True, id__lte=last_id)
        .order_by("id")
        .values(*_EVENT_FIELDS)[:batch_size]
    )
    if not events:
        return 0
    fold_usage(events=events)
    UsageEvent.objects.filter(id__in=[event["id"] for event in events]).update(
        settled_at=timezone.now()
    )
    return len(events)


def fold_usage(*, events: Sequence[Mapping[str, Any]]) -> None:
    """Add events to their keys' `spent_usd` and their daily rollups; once committed, reconcile
    those keys' running totals (`ledger.spend_total_reconcile`) and send `usage_settled`
    (billing.signals: notifications find the thresholds crossed there, off the relay's path).

    `events` are mappings of UsageEvent column values: at least key_id, team_id, model,
    created_at, the four token counts, cost_usd and charged_usd, as `.values()` returns them
    or `UsageRecord.event_fields()` builds them. Call it inside the transaction that marks
    exactly these events settled, so a charge is in the totals if and only if its row says
    so. Key rows are locked in ascending id order, then rollup rows in ascending order, by
    every caller: settlement and ingestion running at once cannot deadlock each other.
    """
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "fold_usage must run in the transaction that marks its events settled"
        )
    key_ids = _add_to_key_totals(events)
    _add_to_rollups(events)
    transaction.on_commit(lambda: ledger.spend_total_reconcile(key_ids), robust=True)
    settled = _settled_arguments(events)
    transaction.on_commit(
        lambda: usage_settled.send_robust(sender=fold_usage, **settled), robust=True
    )


def _settled_arguments(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """usage_settled's arguments: the keys and teams whose spend changed, and each key's latest
    event time (the windows its spend was counted in)."""
    latest: dict[int, Any] = {}
    for event in events:
        key_id = event["key_id"]
        if key_id is not None and (key_id not in latest or event["created_at"] > latest[key_id]):
            latest[key_id] = event["created_at"]
    return {
        "key_ids": frozenset(latest),
        "team_ids": frozenset(event["team_id"] for event in events),
        "latest": latest,
    }


def _add_to_key_totals(events: Sequence[Mapping[str, Any]]) -> list[int]:
    charged_by_key: dict[int, Decimal] = defaultdict(Decimal)
    for event in events:
        if event["key_id"] is not None:
            charged_by_key[event["key_id"]] += event["charged_usd"]
    # Ascending key order: two workers folding at once lock the same rows in the same order and
    # so cannot deadlock each other.
    for key_id in sorted(charged_by_key):
        api_key_add_spend(key_id=key_id, amount=charged_by_key[key_id])
    return sorted(charged_by_key)


def _add_to_rollups(events: Sequence[Mapping[str, Any]]) -> None:
    deltas: dict[_RollupKey, _RollupDelta] = defaultdict(_RollupDelta)
    # Looked up once: localdate() looks the zone up on every call, which cost more than the
    # rest of an event's fold.
    zone = timezone.get_current_timezone()
    for event in events:
        day = timezone.localdate(event["created_at"], zone)
        delta = deltas[(event["key_id"], event["team_id"], event["model"], day)]
        delta.requests += 1
        for field in TOKEN_FIELDS:
            setattr(delta, field, getattr(delta, field) + event[field])
        delta.cost_usd += event["cost_usd"]
        delta.charged_usd += event["charged_usd"]
    for rollup_key in sorted(deltas, key=lambda item: (item[0] or 0, *item[1:])):
        _add_to_rollup(rollup_key, deltas[rollup_key])


def _add_to_rollup(rollup_key: _RollupKey, delta: _RollupDelta) -> None:
    key_id, team_id, model, day = rollup_key
    increments = {
        "requests": F("requests") + delta.requests,
        **{field: F(field) + getattr(delta, field) for field in TOKEN_FIELDS},
        "cost_usd": F("cost_usd") + delta.cost_usd,
        "charged_usd": F("charged_usd") + delta.charged_usd,
    }
    if key_id is None:
        # Rows without a key are not unique per model and day (a deleted key's rows join
        # them), so add to exactly one of them, never to every match.
        row_id = (
            UsageDaily.objects.filter(key=None, team_id=team_id, model=model, day=day)
            .order_by("id")
            .values_list("id", flat=True)
            .first()
        )
        if row_id is None:
            _create_rollup(rollup_key, delta)
        else:
            UsageDaily.objects.filter(id=row_id).update(**increments)
        return
    rows = UsageDaily.objects.filter(key_id=key_id, model=model, day=day)
    if rows.update(**increments):
        return
    try:
        # A savepoint, so losing the race to create the row does not abort the batch.
        with transaction.atomic():
            _create_rollup(rollup_key, delta)
    except IntegrityError:
        rows.update(**increments)


def _create_rollup(rollup_key: _RollupKey, delta: _RollupDelta) -> None:
    key_id, team_id, model, day = rollup_key
    UsageDaily.objects.create(
        key_id=key_id,
        team_id=team_id,
        model=model,
        day=day,
        requests=delta.requests,
        **{field: getattr(delta, field) for field in TOKEN_FIELDS},
        cost_usd=delta.cost_usd,
        charged_usd=delta.charged_usd,
    )
