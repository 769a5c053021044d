"""billing.windows: a window's bounds in the team's calendar, and the names of its totals."""

from datetime import UTC, datetime, timedelta

import pytest

from billing.windows import Account, Counter, LimitKind, Period, Scope, window
from core import keyspace

SHANGHAI = "Asia/Shanghai"


@pytest.mark.parametrize(
    ("period", "at", "start", "end"),
    [
        # 2026-12-31 17:00 UTC is 2027-01-01 01:00 in Shanghai: January there.
        (Period.DAY, "2026-12-31T17:00", "2026-12-31T16:00", "2027-01-01T16:00"),
        (Period.MONTH, "2026-12-31T17:00", "2026-12-31T16:00", "2027-01-31T16:00"),
        (Period.MONTH, "2026-12-31T15:59", "2026-11-30T16:00", "2026-12-31T16:00"),
        # Thursday 2026-12-10 in Shanghai: the week began on Monday the 7th.
        (Period.WEEK, "2026-12-10T04:00", "2026-12-06T16:00", "2026-12-13T16:00"),
        # Monday 00:00 local exactly starts a new week.
        (Period.WEEK, "2026-12-06T16:00", "2026-12-06T16:00", "2026-12-13T16:00"),
    ],
)
def test_windows_keep_the_teams_calendar(period, at, start, end):
    def utc(text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    assert window(period, SHANGHAI, utc(at)) == (utc(start), utc(end))


def test_a_day_with_a_clock_change_is_23_hours_long():
    # Europe/Berlin moved from +01:00 to +02:00 on 2026-03-29 at 02:00.
    start, end = window(Period.DAY, "Europe/Berlin", datetime(2026, 3, 29, 12, tzinfo=UTC))

    assert start == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert end - start == timedelta(hours=23)


def test_the_remembered_window_is_left_when_time_moves_on():
    first = window(Period.DAY, "UTC", datetime(2026, 12, 7, 12, tzinfo=UTC))
    later = window(Period.DAY, "UTC", datetime(2026, 12, 8, 0, tzinfo=UTC))
    earlier = window(Period.DAY, "UTC", datetime(2026, 12, 6, 23, 59, tzinfo=UTC))

    assert first[1] == later[0] == datetime(2026, 12, 8, tzinfo=UTC)
    assert earlier[1] == first[0]


def test_a_day_week_and_month_starting_together_are_three_totals():
    """2026-06-01 is a Monday: its day, week and month start at the same instant, and must
    still be three counters (the period is in the name)."""
    account = Account(key_id=7, team_id=3, user_id=5, time_zone="UTC")
    at = datetime(2026, 6, 1, 9, tzinfo=UTC)

    names = {account.counter(kind, at).name for kind in LimitKind}

    assert len(names) == 6
    assert account.counter(LimitKind.DAILY, at).name == keyspace.spend_window(
        3, "key", 7, "d", int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
    )
    assert account.counter(LimitKind.QUOTA, at).name == keyspace.spend_total(3, 7)
    assert account.counter(LimitKind.MEMBER_MONTHLY, at).holds == (
        keyspace.member_reservations(3, 5)
    )
    assert account.counter(LimitKind.TEAM_MONTHLY, at) == Counter(
        Scope.TEAM, 3, None, None, Period.MONTH, *window(Period.MONTH, "UTC", at)
    )
