from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from billing.models import UsageDaily, UsageEvent
from billing.selectors import (
    DaySpend,
    KeySpend,
    ModelSpend,
    daily_spend,
    spend_by_key,
    spend_by_model,
    usage_daily_list_for,
    usage_daily_totals_for,
    usage_event_list_for,
)
from billing.services import settle_usage
from billing.status_filter import StatusFilter, status_filter
from keys.services import api_key_delete

from ..factories import MembershipFactory, make_key
from .factories import UsageEventFactory

ZERO = Decimal("0")


def at(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(12)))


@pytest.fixture
def today():
    return timezone.localdate()


@pytest.fixture
def keys(team, member, group):
    return (
        make_key(team=team, owner=member, group=group, name="alpha").key,
        make_key(team=team, owner=member, group=group, name="beta").key,
    )


@pytest.fixture
def settled_usage(keys, today, other_team, outsider, group):
    alpha, beta = keys
    stranger = make_key(team=other_team, owner=outsider, group=group, name="theirs").key
    for key, model, days_ago, charged in [
        (alpha, "claude-sonnet-4-5", 0, "0.5"),
        (alpha, "claude-sonnet-4-5", 0, "0.25"),
        (alpha, "gpt-4o", 2, "1"),
        (beta, "claude-sonnet-4-5", 2, "0.125"),
        (beta, "claude-sonnet-4-5", 40, "7"),
        (stranger, "claude-sonnet-4-5", 0, "100"),
    ]:
        UsageEventFactory(
            key=key,
            model=model,
            created_at=at(today - timedelta(days=days_ago)),
            input_tokens=10,
            output_tokens=1,
            cost_usd=Decimal(charged) * 2,
            charged_usd=Decimal(charged),
        )
    settle_usage()


def test_daily_spend_zero_fills_the_days_without_use(team, settled_usage, today):
    assert daily_spend(team=team, days=4) == [
        DaySpend(day=today - timedelta(days=3), requests=0, cost_usd=ZERO, charged_usd=ZERO),
        DaySpend(
            day=today - timedelta(days=2),
            requests=2,
            cost_usd=Decimal("2.25"),
            charged_usd=Decimal("1.125"),
        ),
        DaySpend(day=today - timedelta(days=1), requests=0, cost_usd=ZERO, charged_usd=ZERO),
        DaySpend(day=today, requests=2, cost_usd=Decimal("1.5"), charged_usd=Decimal("0.75")),
    ]


def test_daily_spend_of_one_key(team, keys, settled_usage, today):
    _, beta = keys
    spend = daily_spend(team=team, key=beta, days=3)
    assert [(row.day, row.requests, row.charged_usd) for row in spend] == [
        (today - timedelta(days=2), 1, Decimal("0.125")),
        (today - timedelta(days=1), 0, ZERO),
        (today, 0, ZERO),
    ]


def test_daily_spend_never_shows_another_teams_key(team, other_team, settled_usage):
    theirs = other_team.api_keys.get()
    assert {row.requests for row in daily_spend(team=team, key=theirs, days=3)} == {0}
    assert sum(row.charged_usd for row in daily_spend(team=other_team, days=3)) == Decimal(100)


def test_daily_spend_needs_at_least_one_day(team):
    with pytest.raises(ValueError, match=r"days must be at least 1, not 0\."):
        daily_spend(team=team, days=0)


def test_spend_by_key_since_a_day(team, keys, settled_usage, today):
    alpha, beta = keys
    assert spend_by_key(team=team, since=today - timedelta(days=30)) == [
        KeySpend(
            key_id=alpha.pk,
            key_name="alpha",
            key_prefix=alpha.prefix,
            requests=3,
            input_tokens=30,
            output_tokens=3,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("3.5"),
            charged_usd=Decimal("1.75"),
        ),
        KeySpend(
            key_id=beta.pk,
            key_name="beta",
            key_prefix=beta.prefix,
            requests=1,
            input_tokens=10,
            output_tokens=1,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("0.25"),
            charged_usd=Decimal("0.125"),
        ),
    ]
    # The 40-day-old event counts once `since` reaches back to it, and beta then leads.
    assert [row.key_name for row in spend_by_key(team=team, since=today - timedelta(days=40))] == [
        "beta",
        "alpha",
    ]


def test_a_deleted_keys_spend_stays_in_the_team_totals(team, keys, member, settled_usage, today):
    alpha, beta = keys
    api_key_delete(key=alpha, actor=member)

    rows = spend_by_key(team=team, since=today - timedelta(days=30))

    assert [(row.key_id, row.key_name, row.charged_usd) for row in rows] == [
        (None, "", Decimal("1.75")),
        (beta.pk, "beta", Decimal("0.125")),
    ]


def test_spend_by_model(team, settled_usage, today):
    assert spend_by_model(team=team, since=today - timedelta(days=2)) == [
        ModelSpend(
            model="gpt-4o",
            requests=1,
            input_tokens=10,
            output_tokens=1,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("2"),
            charged_usd=Decimal("1"),
        ),
        ModelSpend(
            model="claude-sonnet-4-5",
            requests=3,
            input_tokens=30,
            output_tokens=3,
            cache_creation_tokens=0,
            cache_read_tokens=0,
            cost_usd=Decimal("1.75"),
            charged_usd=Decimal("0.875"),
        ),
    ]


def test_views_read_rollups_not_events(team, settled_usage, today):
    # Raw events gone: the totals do not change, because they never came from there.
    UsageEvent.objects.all().delete()
    assert spend_by_model(team=team, since=today)[0].charged_usd == Decimal("0.75")
    UsageDaily.objects.all().delete()
    assert spend_by_model(team=team, since=today) == []


def test_an_empty_team_has_no_spend(other_team, today):
    assert spend_by_key(team=other_team, since=today) == []
    assert spend_by_model(team=other_team, since=today) == []
    assert daily_spend(team=other_team, days=1) == [
        DaySpend(day=today, requests=0, cost_usd=ZERO, charged_usd=ZERO)
    ]


def test_usage_visible_to_lead_member_and_outsider(team, lead, member, group, outsider):
    own = UsageEventFactory(key=make_key(team=team, owner=member, group=group).key)
    leads = UsageEventFactory(key=make_key(team=team, owner=lead, group=group).key)
    settle_usage()

    assert set(usage_event_list_for(actor=lead)) == {own, leads}
    assert set(usage_event_list_for(actor=member)) == {own}
    assert list(usage_event_list_for(actor=outsider)) == []
    assert set(usage_daily_list_for(actor=lead).values_list("key_id", flat=True)) == {
        own.key_id,
        leads.key_id,
    }
    assert list(usage_daily_list_for(actor=member).values_list("key_id", flat=True)) == [own.key_id]
    assert not usage_daily_list_for(actor=outsider).exists()


# --- the usage lists of the API: scope, filters, totals ---------------------------------------


@pytest.fixture
def usage_in_two_teams(team, other_team, lead, member, outsider, group, today):
    """The lead leads Acme and is a plain member of Globex, where the outsider leads. Events:
    two of the member's in Acme (today, yesterday), one of the lead's in Globex (today), and
    one of the outsider's in Globex (today), which is out of the lead's reach."""
    MembershipFactory(team=other_team, user=lead)
    events = {
        "member-today": (make_key(team=team, owner=member, group=group, name="m").key, 0, "1"),
        "member-yesterday": (team.api_keys.get(name="m"), 1, "2"),
        "lead-globex": (
            make_key(team=other_team, owner=lead, group=group, name="lg").key,
            0,
            "4",
        ),
        "theirs": (make_key(team=other_team, owner=outsider, group=group, name="t").key, 0, "8"),
    }
    created = {}
    for name, (key, days_ago, charged) in events.items():
        created[name] = UsageEventFactory(
            key=key,
            model="gpt-4o" if name == "member-yesterday" else "claude-sonnet-4-5",
            created_at=at(today - timedelta(days=days_ago)),
            cost_usd=Decimal(charged),
            charged_usd=Decimal(charged),
        )
    settle_usage()
    return created


def event_names(events, usage) -> set[str]:
    by_pk = {event.pk: name for name, event in usage.items()}
    return {by_pk[event.pk] for event in events}


def test_usage_event_list_for_an_actor_in_two_teams_is_one_query(
    usage_in_two_teams, lead, django_assert_num_queries
):
    with django_assert_num_queries(1):
        events = list(usage_event_list_for(actor=lead))
        # The API prints each event's key, team and group: they come with the same query.
        shown = [(e.key.name, e.team.slug, e.group.name) for e in events]
    assert event_names(events, usage_in_two_teams) == {
        "member-today",
        "member-yesterday",
        "lead-globex",
    }
    assert ("lg", "globex", "CC Official Channel") in shown
    assert UsageEvent.objects.filter(pk=usage_in_two_teams["theirs"].pk).exists()


@pytest.mark.parametrize(
    ("filters", "visible"),
    [
        ({"team": "globex"}, {"lead-globex"}),  # not the outsider's event in Globex
        ({"team": "nowhere"}, set()),
        ({"model": "gpt-4o"}, {"member-yesterday"}),
        ({"team": "acme", "model": "claude-sonnet-4-5"}, {"member-today"}),
    ],
)
def test_usage_event_list_for_filters_within_the_scope(
    usage_in_two_teams, lead, filters, visible, django_assert_num_queries
):
    with django_assert_num_queries(1):
        assert event_names(
            usage_event_list_for(actor=lead, filters=filters), usage_in_two_teams
        ) == (visible)


def test_usage_event_list_for_by_key_and_time(usage_in_two_teams, lead, member, today):
    theirs = usage_in_two_teams["theirs"]
    assert not usage_event_list_for(actor=lead, filters={"key": theirs.key_id}).exists()
    assert not usage_event_list_for(actor=member, filters={"team": "globex"}).exists()
    since = at(today - timedelta(days=1))  # the moment member-yesterday happened: inclusive
    assert event_names(
        usage_event_list_for(actor=lead, filters={"since": since, "until": at(today)}),
        usage_in_two_teams,
    ) == {"member-yesterday"}  # until is exclusive: today's events happened exactly then


def test_usage_daily_totals_for_sums_per_day_within_the_scope(
    usage_in_two_teams, lead, today, django_assert_num_queries
):
    with django_assert_num_queries(1):
        rows = [
            (row["day"], row["total_requests"], row["total_charged_usd"])
            for row in usage_daily_totals_for(actor=lead)
        ]
    # Today: the member's 1 and the lead's own 4 in Globex, never the outsider's 8.
    assert rows == [
        (today, 2, Decimal("5")),
        (today - timedelta(days=1), 1, Decimal("2")),
    ]
    assert {
        row["total_requests"]
        for row in usage_daily_totals_for(actor=lead, filters={"team": "globex"})
    } == {1}


@pytest.mark.parametrize(
    ("since_days_ago", "until_days_ago", "days"),
    [(1, 1, [1]), (0, 0, [0]), (1, 0, [0, 1]), (3, 2, [])],
)
def test_usage_daily_totals_for_since_and_until_are_inclusive_days(
    usage_in_two_teams, lead, today, since_days_ago, until_days_ago, days
):
    filters = {
        "since": today - timedelta(days=since_days_ago),
        "until": today - timedelta(days=until_days_ago),
    }
    rows = usage_daily_totals_for(actor=lead, filters=filters)
    assert [row["day"] for row in rows] == [today - timedelta(days=n) for n in days]


@pytest.mark.parametrize("selector", [usage_event_list_for, usage_daily_totals_for])
def test_usage_lists_refuse_an_unknown_filter(lead, selector):
    with pytest.raises(ValueError) as error:
        selector(actor=lead, filters={"day": "2024-01-01", "team": "acme"})
    assert str(error.value) == "Unknown usage filters: day."


# --- status filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("402", StatusFilter(402, 403)),
        (" 200 ", StatusFilter(200, 201)),
        ("4xx", StatusFilter(400, 500)),
        ("5XX", StatusFilter(500, 600)),
        ("refused", StatusFilter(refused_only=True)),
        ("Refused", StatusFilter(refused_only=True)),
    ],
)
def test_status_filter_reads(text, expected):
    assert status_filter(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "600", "099", "40", "4000", "4x", "xx", "6xx", "ok"])
def test_status_filter_refuses(text):
    with pytest.raises(ValidationError) as raised:
        status_filter(text)
    assert raised.value.messages == [
        "Enter a status code such as 402, a class such as 4xx, or “refused”."
    ]


def test_daily_totals_have_no_status(lead):
    with pytest.raises(ValueError, match=r"^Daily totals have no status to filter by\.$"):
        usage_daily_list_for(actor=lead, filters={"status": status_filter("4xx")})
