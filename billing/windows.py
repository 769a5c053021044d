"""Spend windows and the running totals that count them.

A key may have a lifetime quota and daily, weekly and monthly limits; a member a monthly cap
across their keys in a team; a team a monthly budget. Each is checked against a running total
(a `Counter`) kept like the key's lifetime total (billing.ledger): an integer of SPEND_UNITS in
Redis (or, embedded, the local-memory cache), raised by every recorded charge and rebuilt from
the database when missing. A window's counter is named by the window's start, so a new day
starts a new counter and nothing needs resetting; an old one expires soon after its window ends.

Windows keep the team's clock (Team.time_zone): days start at local midnight, weeks on Monday,
months on the 1st. A charge belongs to the window its request started in (UsageEvent.created_at).
"""

import enum
import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from core import keyspace


class Period(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def letter(self) -> str:
        return self.value[0]


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _first_day(period: Period, day: date) -> date:
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_first_day(period: Period, first: date) -> date:
    if period is Period.DAY:
        return first + timedelta(days=1)
    if period is Period.WEEK:
        return first + timedelta(days=7)
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # Where midnight does not exist (a DST jump at 00:00), zoneinfo's fold=0 gives the instant
    # the clocks jump from: still one instant, the same for every caller.
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


# The window each (period, time zone) was last asked for: nearly every call falls in it, and
# this is on the relay's path (a few lookups instead of calendar arithmetic per request).
_latest: dict[tuple[Period, str], tuple[datetime, datetime]] = {}


def window(period: Period, time_zone: str, at: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the `period` containing `at`, in the time zone's calendar (UTC)."""
    latest = _latest.get((period, time_zone))
    if latest is not None and latest[0] <= at < latest[1]:
        return latest
    tz = zone(time_zone)
    first = _first_day(period, at.astimezone(tz).date())
    found = (_local_midnight(first, tz), _local_midnight(_next_first_day(period, first), tz))
    _latest[period, time_zone] = found
    return found


class LimitKind(enum.StrEnum):
    """The money limits a request may be held to, in the order refusals and bars name them."""

    QUOTA = "quota"  # the key's lifetime
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    MEMBER_MONTHLY = "member_monthly"  # the key's owner's cap in the team
    TEAM_MONTHLY = "team_monthly"  # the team's budget


_KEY_PERIODS = {
    LimitKind.DAILY: Period.DAY,
    LimitKind.WEEKLY: Period.WEEK,
    LimitKind.MONTHLY: Period.MONTH,
}


class Scope(enum.StrEnum):
    KEY = "key"
    MEMBER = "member"
    TEAM = "team"


@dataclass(frozen=True, slots=True)
class Counter:
    """One running spend total: a key's lifetime (no window) or one window of a key, a member
    in a team, or a team. `start`/`end` bound the window; None for the lifetime total."""

    scope: Scope
    team_id: int
    key_id: int | None = None
    user_id: int | None = None
    period: Period | None = None
    start: datetime | None = None
    end: datetime | None = None
    # Its name in Redis (core.keyspace), and that of the reservations counted against it (one
    # hash per key, member, team), worked out once.
    name: str = field(init=False, compare=False)
    holds: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self._name())
        object.__setattr__(self, "holds", self._holds())

    def _name(self) -> str:
        team = self.team_id
        if self.period is None:
            return keyspace.spend_total(team, self.key_id)
        start = int(self.start.timestamp())
        if self.scope is Scope.KEY:
            return keyspace.spend_window(team, "key", self.key_id, self.period.letter, start)
        if self.scope is Scope.MEMBER:
            owner = f"{team}:{self.user_id}"
            return keyspace.spend_window(team, "member", owner, self.period.letter, start)
        return keyspace.spend_window(team, "team", team, self.period.letter, start)

    def _holds(self) -> str:
        if self.scope is Scope.KEY:
            return keyspace.reservations(self.team_id, self.key_id)
        if self.scope is Scope.MEMBER:
            return keyspace.member_reservations(self.team_id, self.user_id)
        return keyspace.team_reservations(self.team_id)


@dataclass(frozen=True, slots=True)
class Account:
    """Who a request's charge is counted against: its key, the key's owner in its team, the
    team, and the team's clock."""

    key_id: int
    team_id: int
    user_id: int
    time_zone: str

    def key_window(self, period: Period, at: datetime) -> Counter:
        start, end = window(period, self.time_zone, at)
        return Counter(Scope.KEY, self.team_id, self.key_id, None, period, start, end)

    def member_month(self, at: datetime) -> Counter:
        start, end = window(Period.MONTH, self.time_zone, at)
        return Counter(Scope.MEMBER, self.team_id, None, self.user_id, Period.MONTH, start, end)

    def team_month(self, at: datetime) -> Counter:
        start, end = window(Period.MONTH, self.time_zone, at)
        return Counter(Scope.TEAM, self.team_id, None, None, Period.MONTH, start, end)

    def lifetime(self) -> Counter:
        return Counter(Scope.KEY, self.team_id, self.key_id)

    def counter(self, kind: LimitKind, at: datetime) -> Counter:
        """The running total a limit of this kind is held to at `at`."""
        if kind is LimitKind.QUOTA:
            return self.lifetime()
        if kind is LimitKind.MEMBER_MONTHLY:
            return self.member_month(at)
        if kind is LimitKind.TEAM_MONTHLY:
            return self.team_month(at)
        return self.key_window(_KEY_PERIODS[kind], at)

    def counters(self, at: datetime) -> tuple[Counter, ...]:
        """Every total a charge made at `at` raises (each only if it exists: a missing one is
        rebuilt from the database, which then holds the charge)."""
        return tuple(self.counter(kind, at) for kind in LimitKind)

    def targets(self, at: datetime) -> "Targets":
        """What recording a charge made at `at` touches."""
        zone_name = self.time_zone
        return _targets(
            self,
            window(Period.DAY, zone_name, at)[0],
            window(Period.WEEK, zone_name, at)[0],
            window(Period.MONTH, zone_name, at)[0],
        )


@functools.lru_cache(maxsize=4096)
def _targets(account: Account, *window_starts: datetime) -> "Targets":
    """An account's targets while these windows are current (one per window, not per request)."""
    return Targets(
        tuple(counter.name for counter in account.counters(window_starts[0])),
        (
            keyspace.reservations(account.team_id, account.key_id),
            keyspace.member_reservations(account.team_id, account.user_id),
            keyspace.team_reservations(account.team_id),
        ),
    )


@dataclass(frozen=True, slots=True)
class Targets:
    """The Redis names one recorded charge touches: the running totals it raises (each only if
    it exists) and the reservation hashes its request's hold is released from. All in the
    team's hash tag (core.keyspace), as are its usage stream and checkpoints."""

    counters: tuple[str, ...]
    holds: tuple[str, ...]

    @classmethod
    def of_key(cls, team_id: int, key_id: int) -> "Targets":
        """A record known only by its key (a spool entry of an earlier release): its lifetime
        total and its key's reservations."""
        return cls(
            (keyspace.spend_total(team_id, key_id),), (keyspace.reservations(team_id, key_id),)
        )
