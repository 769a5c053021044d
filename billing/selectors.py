"""A team's money, read from the daily rollups only: a portal page or API summary costs a few
rows per day however many requests the team made, and never scans raw usage events.

Callers pass a team the actor is already allowed to see (keys.selectors.team_list); every
query here is filtered by that team and by nothing the caller could widen. Totals cover
settled usage: usage is settled as it is written, so they trail the relay by at most one
ingest interval (with Redis; the embedded relay writes as each request ends). Days are dates
in settings.TIME_ZONE, like the rollups.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from keys import selectors as key_selectors
from keys.models import ApiKey, Team

from . import windows
from .models import RefusalCount, UsageDaily, UsageEvent
from .pricing import MONEY_PLACES
from .status_filter import StatusFilter

if TYPE_CHECKING:
    from .usage_query import UsageQuery


@dataclass(frozen=True)
class DaySpend:
    day: date
    requests: int
    cost_usd: Decimal
    charged_usd: Decimal


@dataclass(frozen=True)
class SpendTotals:
    requests: int
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_usd: Decimal
    charged_usd: Decimal


@dataclass(frozen=True)
class KeySpend(SpendTotals):
    """One key's totals. `key_id` is None for the sum over keys deleted since."""

    key_id: int | None
    key_name: str
    key_prefix: str


@dataclass(frozen=True)
class ModelSpend(SpendTotals):
    model: str


_TOTALS = {
    "requests": Sum("requests"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "cache_creation_tokens": Sum("cache_creation_tokens"),
    "cache_read_tokens": Sum("cache_read_tokens"),
    "cost_usd": Sum("cost_usd"),
    "charged_usd": Sum("charged_usd"),
}


def daily_spend(*, team: Team, key: ApiKey | None = None, days: int = 30) -> list[DaySpend]:
    """The last `days` days up to today, oldest first, with a zero row for a day without use."""
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}.")
    today = timezone.localdate()
    first_day = today - timedelta(days=days - 1)
    rows = _team_rollups(team).filter(day__gte=first_day, day__lte=today)
    if key is not None:
        rows = rows.filter(key=key)
    by_day = {
        row["day"]: row
        for row in rows.values("day").annotate(
            requests=Sum("requests"), cost=Sum("cost_usd"), charged=Sum("charged_usd")
        )
    }
    spend = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        row = by_day.get(day)
        spend.append(
            DaySpend(
                day=day,
                requests=row["requests"] if row else 0,
                cost_usd=_money(row["cost"] if row else 0),
                charged_usd=_money(row["charged"] if row else 0),
            )
        )
    return spend


def spend_by_key(*, team: Team, since: date) -> list[KeySpend]:
    """Per key from `since` (inclusive) on, highest charge first."""
    rows = (
        _team_rollups(team)
        .filter(day__gte=since)
        .values("key_id", "key__name", "key__prefix")
        .annotate(**_TOTALS)
        .order_by("-charged_usd", "key__name", "key_id")
    )
    return [
        KeySpend(
            key_id=row["key_id"],
            key_name=row["key__name"] or "",
            key_prefix=row["key__prefix"] or "",
            **_totals(row),
        )
        for row in rows
    ]


def spend_by_model(*, team: Team, since: date) -> list[ModelSpend]:
    """Per model from `since` (inclusive) on, highest charge first."""
    rows = (
        _team_rollups(team)
        .filter(day__gte=since)
        .values("model")
        .annotate(**_TOTALS)
        .order_by("-charged_usd", "model")
    )
    return [ModelSpend(model=row["model"], **_totals(row)) for row in rows]


@dataclass(frozen=True)
class RecentRequest:
    """One line of a list of recent requests: a usage event, or one minute's count of one kind
    of refusal of one key (billing.refusals); `time` is the event's, or the minute's start."""

    time: datetime
    event: UsageEvent | None = None
    refusal: RefusalCount | None = None


def recent_requests(
    *, team: Team, key: ApiKey | None = None, status: StatusFilter | None = None, limit: int
) -> list[RecentRequest]:
    """The team's (or one of its keys') latest `limit` requests, newest first: usage events
    and refusal counts together. The caller has already checked that the actor may see the
    team's or the key's requests."""
    events = UsageEvent.objects.filter(team_id=team.pk)
    refusals = RefusalCount.objects.filter(team_id=team.pk)
    if key is not None:
        events, refusals = events.filter(key=key), refusals.filter(key=key)
    if status is not None:
        events, refusals = status.narrow(events), status.narrow(refusals)
    lines = [
        RecentRequest(event.created_at, event=event)
        for event in events.select_related("key").order_by("-created_at", "-id")[:limit]
    ] + [
        RecentRequest(refusal.minute, refusal=refusal)
        for refusal in refusals.select_related("key").order_by("-minute", "-id")[:limit]
    ]
    lines.sort(key=lambda line: line.time, reverse=True)
    return lines[:limit]


def usage_event_list(*, key: ApiKey) -> QuerySet[UsageEvent]:
    """A key's requests, newest first, scoped by the key's team as well as the key. The caller
    has already checked that the actor may see the key."""
    return UsageEvent.objects.filter(team_id=key.team_id, key=key).order_by("-created_at", "-id")


def key_daily_charges(*, key: ApiKey, start: date, end: date) -> dict[date, dict[str, Decimal]]:
    """What `key` was charged per day and model, days `start` (inclusive) to `end` (exclusive)
    of its team's time zone, for the key's own balance (the relay's billing usage endpoint).
    Days without use are left out. One query: from the daily rollups when the team keeps the
    rollups' clock (settings.TIME_ZONE, the default), else from the key's usage events,
    grouped by their day in the team's zone (the (key, created_at) index bounds the scan)."""
    if key.team.time_zone == settings.TIME_ZONE:
        rows = UsageDaily.objects.filter(
            team_id=key.team_id, key=key, day__gte=start, day__lt=end
        ).values("day", "model")
    else:
        zone = windows.zone(key.team.time_zone)
        # Local midnights as billing.windows reads them (a midnight a DST jump skips: the
        # instant the clocks jump from).
        rows = (
            UsageEvent.objects.filter(
                team_id=key.team_id,
                key=key,
                created_at__gte=datetime.combine(start, time(), tzinfo=zone),
                created_at__lt=datetime.combine(end, time(), tzinfo=zone),
            )
            .annotate(day=TruncDate("created_at", tzinfo=zone))
            .values("day", "model")
        )
    charges: dict[date, dict[str, Decimal]] = {}
    for row in rows.annotate(charged=Sum("charged_usd")).order_by("day", "model"):
        charges.setdefault(row["day"], {})[row["model"]] = _money(row["charged"])
    return charges


# The filters of the usage lists: "team" (a slug), "key" (an id), "model", "status" (a
# StatusFilter; usage events and refusal counts only), and "since" and "until", which each
# list reads in its own way.
USAGE_FILTERS = frozenset({"team", "key", "model", "status", "since", "until"})


def usage_event_list_for(
    *, actor: User, filters: Mapping[str, Any] | None = None
) -> QuerySet[UsageEvent]:
    """Every usage event the actor may see, across their teams (see `_visible_to`), newest
    first. `filters` (USAGE_FILTERS): "since" is a time from which on (inclusive), "until" one
    before which (exclusive)."""
    events = _narrowed(
        _visible_to(actor, UsageEvent.objects.all()),
        filters or {},
        since="created_at__gte",
        until="created_at__lt",
    )
    return events.select_related("key", "team", "group").order_by("-created_at", "-id")


def refusal_count_list_for(
    *, actor: User, filters: Mapping[str, Any] | None = None
) -> QuerySet[RefusalCount]:
    """Every refusal count the actor may see (see `_visible_to`), newest minute first.
    `filters` (USAGE_FILTERS but "model": a refusal may come before any model is read):
    "since" is a time from which minute on (inclusive), "until" one before which (exclusive)."""
    filters = filters or {}
    if filters.get("model"):
        raise ValueError("Refusal counts have no model to filter by.")
    counts = _narrowed(
        _visible_to(actor, RefusalCount.objects.all()),
        filters,
        since="minute__gte",
        until="minute__lt",
    )
    return counts.select_related("key", "team").order_by("-minute", "-id")


def usage_daily_list_for(
    *, actor: User, filters: Mapping[str, Any] | None = None
) -> QuerySet[UsageDaily]:
    """Every daily rollup row the actor may see, across their teams (see `_visible_to`).
    `filters` (USAGE_FILTERS but "status": the rollups count requests of every status):
    "since" and "until" are days, both inclusive."""
    if filters and filters.get("status") is not None:
        raise ValueError("Daily totals have no status to filter by.")
    return _narrowed(
        _visible_to(actor, UsageDaily.objects.all()),
        filters or {},
        since="day__gte",
        until="day__lte",
    )


def usage_daily_totals_for(
    *, actor: User, filters: Mapping[str, Any] | None = None
) -> QuerySet[dict]:
    """usage_daily_list_for summed per day, newest day first: one dict per day with `day` and
    `total_<field>` for each total (requests, the token counts, cost_usd, charged_usd)."""
    totals = {f"total_{field}": aggregate for field, aggregate in _TOTALS.items()}
    rows = usage_daily_list_for(actor=actor, filters=filters)
    return rows.values("day").annotate(**totals).order_by("-day")


def _visible_to(actor: User, rows: QuerySet) -> QuerySet:
    """A lead sees every row of the teams they lead (a deleted key's too); a member sees the
    rows of their own keys; staff who may view these rows in the admin see them all. The
    rules come from keys.selectors, which decide the key lists."""
    opts = rows.model._meta
    if key_selectors.staff_may(actor=actor, permission=f"{opts.app_label}.view_{opts.model_name}"):
        return rows
    led_teams = key_selectors.team_list_led(actor=actor)
    own_keys = key_selectors.api_key_search_all_teams(actor=actor, staff_permission=None).values(
        "pk"
    )
    return rows.filter(Q(team__in=led_teams) | Q(key__in=own_keys))


def _narrowed(rows: QuerySet, filters: Mapping[str, Any], *, since: str, until: str) -> QuerySet:
    """Rows already scoped to the actor, narrowed by the usage filters; `since` and `until` name
    the lookups the list reads those two with (a time or a day, until exclusive or inclusive).
    A filter this does not know is a programming error: ignoring it would quietly widen the
    list."""
    unknown = set(filters) - USAGE_FILTERS
    if unknown:
        raise ValueError(f"Unknown usage filters: {', '.join(sorted(unknown))}.")
    if filters.get("team"):
        rows = rows.filter(team__slug=filters["team"])
    if filters.get("key") is not None:
        rows = rows.filter(key_id=filters["key"])
    if filters.get("model"):
        rows = rows.filter(model=filters["model"])
    if filters.get("since") is not None:
        rows = rows.filter(**{since: filters["since"]})
    if filters.get("until") is not None:
        rows = rows.filter(**{until: filters["until"]})
    if filters.get("status") is not None:
        rows = filters["status"].narrow(rows)
    return rows


def _team_rollups(team: Team) -> QuerySet[UsageDaily]:
    return UsageDaily.objects.filter(team=team).order_by()


def _totals(row: dict) -> dict:
    return {
        "requests": row["requests"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cache_creation_tokens": row["cache_creation_tokens"],
        "cache_read_tokens": row["cache_read_tokens"],
        "cost_usd": _money(row["cost_usd"]),
        "charged_usd": _money(row["charged_usd"]),
    }


def _money(amount: Decimal | int) -> Decimal:
    # PostgreSQL returns sums with the column's 8 places, SQLite with as few as needed; the
    # same fixed scale on both keeps what the API prints identical.
    return Decimal(amount).quantize(MONEY_PLACES)


# --- the usage explorer ----------------------------------------------------------------------


@dataclass
class UsageTotals:
    """Sums over some usage: a row of the explorer, one of its chart's cells, or the total."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    charged_usd: Decimal = Decimal(0)

    def add(self, row: Mapping[str, Any]) -> None:
        for name in _EXPLORER_SUMS:
            setattr(self, name, getattr(self, name) + (row[name] or 0))

    @property
    def cache_creation_5m_tokens(self) -> int:
        return self.cache_creation_tokens - self.cache_creation_1h_tokens

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )

    @property
    def cache_hit_ratio(self) -> Decimal | None:
        """Cache reads over every input token (fresh, written to the cache, read from it);
        None when there were none."""
        read_from = self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens
        return Decimal(self.cache_read_tokens) / read_from if read_from else None

    def metric(self, name: str) -> Decimal | int:
        """The explorer's chart metrics (billing.usage_query.METRICS)."""
        return {
            "cost": self.cost_usd,
            "charge": self.charged_usd,
            "requests": self.requests,
            "tokens": self.tokens,
        }[name]


@dataclass
class UsageRow(UsageTotals):
    """One row of the explorer: `value` is what the rows are grouped by (a user id, key id,
    model, day or session id; None for deleted keys, "" for requests without a session)."""

    value: Any = None
    label: str = ""
    detail: str = ""
    first_at: datetime | None = None
    last_at: datetime | None = None
    models: tuple[str, ...] = ()


@dataclass
class UsageReport:
    """The explorer's rows (ordered), their total, and the chart's cells: for each bucket (a
    day, or an hour for a one-day range) the totals of each row's `value` in it (for sessions,
    of the CHART_SERIES first rows only) and the bucket's totals. `source` is "daily" when read
    from the rollups, "events" when read from the usage events."""

    rows: list[UsageRow]
    total: UsageTotals
    buckets: list[date | datetime]
    cells: dict[tuple[date | datetime, Any], UsageTotals]
    bucket_totals: dict[date | datetime, UsageTotals]
    source: str
    truncated: bool = False


# Session rows shown at most (the costliest): a month of Claude Code use makes thousands.
EXPLORER_SESSION_ROWS = 100
# The rows the chart stacks on their own; the others are summed as one.
CHART_SERIES = 5
_EXPLORER_SUMS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "cost_usd",
    "charged_usd",
)
_GROUP_FIELDS = {
    "member": ("key__owner_id", "key__owner__username"),
    "key": ("key_id", "key__name", "key__prefix"),
    "model": ("model",),
    "day": (),
}


def usage_scope(*, actor: User, team: Team, rows: QuerySet) -> QuerySet:
    """Usage events or rollups of `team` the actor may see: all of them for its leads and for
    staff who may view them, the rows of their own keys for a member."""
    opts = rows.model._meta
    permission = f"{opts.app_label}.view_{opts.model_name}"
    rows = rows.filter(team_id=team.pk)
    if key_selectors.is_team_lead(actor=actor, team=team, staff_permission=permission):
        return rows
    own_keys = key_selectors.api_key_list(actor=actor, team=team, staff_permission=None)
    return rows.filter(key__in=own_keys.values("pk"))


def usage_explorer_reads_rollups(*, team: Team, query: "UsageQuery") -> bool:
    """Whether the daily rollups answer `query`: they are days of settings.TIME_ZONE, per key and
    model, without status or endpoint. One day is charted per hour, from the events."""
    return (
        team.time_zone == settings.TIME_ZONE
        and query.group_by in ("member", "key", "model", "day")
        and not query.per_event_filters
        and query.days > 1
    )


def usage_explorer(*, actor: User, team: Team, query: "UsageQuery") -> UsageReport:
    """The usage of `team` the actor may see over `query`'s days, narrowed by its filters and
    grouped by `query.group_by`: one aggregate query per (bucket, group), folded here into
    rows and chart cells, plus one for the model mix of the sessions shown."""
    daily = usage_explorer_reads_rollups(team=team, query=query)
    if daily:
        rows = usage_daily_rows(actor=actor, team=team, query=query).annotate(bucket=F("day"))
        sums = {name: Sum(name) for name in _EXPLORER_SUMS}
        buckets: list = [query.since + timedelta(days=n) for n in range(query.days)]
    else:
        rows = usage_explorer_events(actor=actor, team=team, query=query)
        sums = {name: Sum(name) for name in _EXPLORER_SUMS if name != "requests"}
        sums["requests"] = Count("id")
        if query.days == 1:
            rows = rows.annotate(bucket=TruncHour("created_at", tzinfo=query.zone))
            buckets = [query.start + timedelta(hours=n) for n in range(24)]
        else:
            rows = rows.annotate(bucket=TruncDate("created_at", tzinfo=query.zone))
            buckets = [query.since + timedelta(days=n) for n in range(query.days)]
    if query.group_by == "session":
        return _session_report(actor, team, rows, sums, buckets, query)
    fields = _GROUP_FIELDS[query.group_by]
    grouped = rows.order_by().values("bucket", *fields).annotate(**sums)

    by_value: dict[Any, UsageRow] = {}
    cells: dict[tuple, UsageTotals] = {}
    bucket_totals: dict = {}
    total = UsageTotals()
    for found in grouped:
        bucket = _bucket(found["bucket"], query)
        if query.group_by == "day":
            value = bucket.date() if isinstance(bucket, datetime) else bucket
        else:
            value = found[fields[0]]
        row = by_value.get(value)
        if row is None:
            row = by_value[value] = UsageRow(
                value=value, **_row_label(query.group_by, found, value)
            )
        row.add(found)
        total.add(found)
        cells.setdefault((bucket, value), UsageTotals()).add(found)
        bucket_totals.setdefault(bucket, UsageTotals()).add(found)
    if query.group_by == "day":
        ordered = sorted(by_value.values(), key=lambda row: row.value)
    else:
        ordered = sorted(by_value.values(), key=lambda row: (-row.metric(query.metric), row.label))
    return UsageReport(
        rows=ordered,
        total=total,
        buckets=buckets,
        cells=cells,
        bucket_totals=bucket_totals,
        source="daily" if daily else "events",
    )


def _session_report(
    actor: User, team: Team, events: QuerySet, sums: dict, buckets: list, query: "UsageQuery"
) -> UsageReport:
    """Sessions, from the events: their rows in one query grouped by session alone (grouped by
    day and session too, a busy team's month spilled to disk to sort), the chart's cells of the
    top sessions (the session index finds their requests), each bucket's totals (from the
    rollups when they answer the query but for its grouping), and the rows' first and last
    request and model mix."""
    by_session = events.order_by().values("session_id").annotate(**sums)
    with _memory_to_group():
        found_sessions = list(by_session)
    total = UsageTotals()
    rows = []
    for found in found_sessions:
        value = found["session_id"]
        row = UsageRow(value=value, label=value or "No session")
        row.add(found)
        total.add(found)
        rows.append(row)
    rows.sort(key=lambda row: (-row.metric(query.metric), row.label))
    truncated = len(rows) > EXPLORER_SESSION_ROWS
    rows = rows[:EXPLORER_SESSION_ROWS]
    _add_session_details(rows, events)
    top = [row.value for row in rows[:CHART_SERIES]]
    cells: dict[tuple, UsageTotals] = {}
    for found in (
        events.filter(session_id__in=top).order_by().values("bucket", "session_id").annotate(**sums)
    ):
        cell = cells.setdefault(
            (_bucket(found["bucket"], query), found["session_id"]), UsageTotals()
        )
        cell.add(found)
    bucket_totals: dict = {}
    if usage_explorer_reads_rollups(team=team, query=replace(query, group_by="day")):
        per_bucket = usage_daily_rows(actor=actor, team=team, query=query).values(bucket=F("day"))
        per_bucket = per_bucket.annotate(**{name: Sum(name) for name in _EXPLORER_SUMS})
    else:
        per_bucket = events.order_by().values("bucket").annotate(**sums)
    for found in per_bucket:
        bucket_totals.setdefault(_bucket(found["bucket"], query), UsageTotals()).add(found)
    return UsageReport(
        rows=rows,
        total=total,
        buckets=buckets,
        cells=cells,
        bucket_totals=bucket_totals,
        source="events",
        truncated=truncated,
    )


def usage_explorer_events(*, actor: User, team: Team, query: "UsageQuery") -> QuerySet:
    """The usage events `query` selects of those the actor may see in `team` (unordered): its
    days, filters and all. The explorer groups them; the CSV export streams them."""
    events = usage_scope(actor=actor, team=team, rows=UsageEvent.objects.all()).filter(
        created_at__gte=query.start, created_at__lt=query.end
    )
    if query.member is not None:
        events = events.filter(key__owner_id=query.member)
    if query.key is not None:
        events = events.filter(key_id=query.key)
    if query.model:
        events = events.filter(model=query.model)
    if query.status is not None:
        events = query.status.narrow(events)
    if query.endpoint:
        events = events.filter(endpoint=query.endpoint)
    return events.order_by()


def usage_daily_rows(*, actor: User, team: Team, query: "UsageQuery") -> QuerySet:
    """The rollup rows of `team` the actor may see for `query`'s days (dates of
    settings.TIME_ZONE), member, key and model (unordered)."""
    rows = usage_scope(actor=actor, team=team, rows=UsageDaily.objects.all()).filter(
        day__gte=query.since, day__lte=query.until
    )
    if query.member is not None:
        rows = rows.filter(key__owner_id=query.member)
    if query.key is not None:
        rows = rows.filter(key_id=query.key)
    if query.model:
        rows = rows.filter(model=query.model)
    return rows.order_by()


def usage_session_events(*, actor: User, team: Team, session_id: str) -> QuerySet[UsageEvent]:
    """One Claude Code session's requests the actor may see, oldest first."""
    events = usage_scope(actor=actor, team=team, rows=UsageEvent.objects.all())
    return events.filter(session_id=session_id).select_related("key").order_by("created_at", "id")


def usage_session_summary(*, events: QuerySet[UsageEvent]) -> UsageRow:
    """A session's totals, first and last request and model mix, from usage_session_events."""
    sums = {name: Sum(name) for name in _EXPLORER_SUMS if name != "requests"}
    found = events.order_by().aggregate(
        requests=Count("id"), first_at=Min("created_at"), last_at=Max("created_at"), **sums
    )
    row = UsageRow(first_at=found["first_at"], last_at=found["last_at"])
    row.add(found)
    row.models = tuple(
        events.order_by()
        .values("model")
        .annotate(n=Count("id"))
        .order_by("-n", "model")
        .values_list("model", flat=True)
    )
    return row


def team_model_list(*, actor: User, team: Team) -> list[str]:
    """The models the actor's usage in `team` has seen, for the explorer's filter."""
    rollups = usage_scope(actor=actor, team=team, rows=UsageDaily.objects.all())
    return list(rollups.order_by("model").values_list("model", flat=True).distinct())


def _bucket(value: date | datetime, query: "UsageQuery") -> date | datetime:
    # SQLite returns the truncated hour naive (in the zone asked for), PostgreSQL aware.
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            value = value.replace(tzinfo=query.zone)
        return value.astimezone(query.zone)
    return value


def _row_label(group_by: str, found: Mapping[str, Any], value: Any) -> dict[str, str]:
    if group_by == "member":
        name = found["key__owner__username"]
        return {"label": name or "Deleted keys"}
    if group_by == "key":
        if found["key_id"] is None:
            return {"label": "Deleted keys"}
        return {"label": found["key__name"], "detail": f"{found['key__prefix']}…"}
    if group_by == "model":
        return {"label": found["model"]}
    return {"label": f"{value:%a %Y-%m-%d}"}  # By day (sessions: _session_report).


@contextmanager
def _memory_to_group() -> Iterator[None]:
    """PostgreSQL's default work_mem (4 MB) sorts a busy team's quarter of requests on disk to
    group them by session; 16 MB, for this one query's transaction, groups them in a hash
    table, a third faster at a million events (README, "Usage explorer at 1,000,000 events")."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '16MB'")
        yield


def _add_session_details(rows: list[UsageRow], events: QuerySet) -> None:
    """Each session row's first and last request and models, the most used first: one query
    for the rows shown (the session index finds their requests), rather than parsing two
    times for each of a quarter's thousands of sessions."""
    mix: dict[str, list[tuple[int, str]]] = {}
    times: dict[str, list] = {}
    ids = [row.value for row in rows]
    for found in (
        events.filter(session_id__in=ids)
        .order_by()
        .values("session_id", "model")
        .annotate(n=Count("id"), first_at=Min("created_at"), last_at=Max("created_at"))
    ):
        mix.setdefault(found["session_id"], []).append((-found["n"], found["model"]))
        times.setdefault(found["session_id"], []).extend((found["first_at"], found["last_at"]))
    for row in rows:
        if row.value in times:
            row.first_at, row.last_at = min(times[row.value]), max(times[row.value])
        row.models = tuple(model for _, model in sorted(mix.get(row.value, [])))
