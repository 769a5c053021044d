"""The usage explorer (/t/<slug>/usage/), its session page, its reading of query parameters and
its chart's axis. Expectations are worked out by hand from the three requests below."""

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from django.urls import reverse
from django.utils import timezone

from billing import selectors
from billing.charts import nice_ticks, tick_label
from billing.models import UsageDaily, UsageEvent
from billing.usage_query import STATUS_MESSAGE, read_usage_query

from ..factories import MembershipFactory, make_key
from .factories import UsageEventFactory

D = Decimal


@pytest.fixture
def keys(team, lead, member, outsider, other_team, group):
    return {
        "member": make_key(team=team, owner=member, group=group, name="member-key").key,
        "lead": make_key(team=team, owner=lead, group=group, name="lead-key").key,
        "outsider": make_key(team=other_team, owner=outsider, group=group, name="o-key").key,
    }


@pytest.fixture
def day_1():
    """Yesterday's midnight (UTC, the tests' zone and the team's)."""
    return datetime.combine(timezone.localdate() - timedelta(days=1), time(), tzinfo=UTC)


@pytest.fixture
def events(keys, day_1):
    """Three requests of the team over two days and two sessions, one of another team."""
    made = {
        "e1": UsageEventFactory(
            key=keys["member"],
            model="claude-sonnet-4-5",
            created_at=day_1 + timedelta(hours=10),
            input_tokens=1000,
            output_tokens=200,
            cache_creation_tokens=300,
            cache_creation_1h_tokens=100,
            cache_read_tokens=600,
            cost_usd=D("0.010"),
            charged_usd=D("0.015"),
            session_id="s-a",
            request_id="req-1",
            endpoint="messages",
        ),
        "e2": UsageEventFactory(
            key=keys["member"],
            model="claude-opus-4-1",
            created_at=day_1 + timedelta(hours=11),
            input_tokens=2000,
            output_tokens=100,
            cost_usd=D("0.050"),
            charged_usd=D("0.075"),
            status_code=529,
            session_id="s-a",
            request_id="req-2",
            endpoint="messages",
        ),
        "e3": UsageEventFactory(
            key=keys["lead"],
            model="claude-sonnet-4-5",
            created_at=day_1 - timedelta(hours=15),
            input_tokens=500,
            output_tokens=50,
            cache_creation_tokens=100,
            cache_creation_1h_tokens=100,
            cache_read_tokens=400,
            cost_usd=D("0.004"),
            charged_usd=D("0.004"),
            session_id="s-b",
            request_id="req-3",
            endpoint="chat_completions",
        ),
        "elsewhere": UsageEventFactory(
            key=keys["outsider"], created_at=day_1 + timedelta(hours=9), session_id="s-a"
        ),
    }
    roll_up(made.values())
    return made


def roll_up(events):
    """The daily rollups of `events`, as settlement folds them (per key, model and day)."""
    for event in events:
        row, _ = UsageDaily.objects.get_or_create(
            team=event.team, key=event.key, model=event.model, day=event.created_at.date()
        )
        row.requests += 1
        for name in TOTALS:
            setattr(row, name, getattr(row, name) + getattr(event, name))
        row.save()
        UsageEvent.objects.filter(pk=event.pk).update(settled_at=timezone.now())


TOTALS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "cost_usd",
    "charged_usd",
)


def usage_url(team, **params):
    return reverse("billing:team_usage", args=[team.slug]), params


def rows_of(report):
    return [
        (
            row.label,
            row.requests,
            row.input_tokens,
            row.output_tokens,
            row.cache_creation_5m_tokens,
            row.cache_creation_1h_tokens,
            row.cache_read_tokens,
            row.cost_usd,
            row.charged_usd,
        )
        for row in report.rows
    ]


def explore(actor, team, **params):
    reading = read_usage_query(
        {"range": "7d", **params}, actor=actor, team=team, today=timezone.localdate()
    )
    assert reading.errors == {}
    return selectors.usage_explorer(actor=actor, team=team, query=reading.query)


MEMBER_ROW = ("member", 2, 3000, 300, 200, 100, 600, D("0.06"), D("0.09"))
LEAD_ROW = ("lead", 1, 500, 50, 0, 100, 400, D("0.004"), D("0.004"))


# --- the groupings, by hand ----------------------------------------------------------------


def test_by_member_from_the_rollups(team, lead, events):
    report = explore(lead, team, group_by="member")
    assert report.source == "daily"
    assert rows_of(report) == [MEMBER_ROW, LEAD_ROW]
    assert report.rows[0].cache_hit_ratio == D(600) / D(3900)
    assert report.rows[1].cache_hit_ratio == D("0.4")
    assert report.total.requests == 3
    assert report.total.charged_usd == D("0.094")


def test_the_events_give_the_rollups_figures(team, lead, events):
    """The same grouping read from the events (a status filter that keeps every row)."""
    report = explore(lead, team, group_by="member", status="1xx")
    assert report.rows == []
    report = explore(lead, team, group_by="member", status="success")
    assert report.source == "events"
    assert [row[0] for row in rows_of(report)] == ["member", "lead"]
    assert rows_of(report)[1] == LEAD_ROW
    every = [explore(lead, team, group_by="member", status=s) for s in ("success", "error")]
    assert sum(report.total.requests for report in every) == 3


def test_by_key_and_model(team, lead, keys, events):
    by_key = explore(lead, team, group_by="key")
    assert [(row.value, row.label, row.requests) for row in by_key.rows] == [
        (keys["member"].pk, "member-key", 2),
        (keys["lead"].pk, "lead-key", 1),
    ]
    by_model = explore(lead, team, group_by="model")
    assert rows_of(by_model) == [
        ("claude-opus-4-1", 1, 2000, 100, 0, 0, 0, D("0.05"), D("0.075")),
        ("claude-sonnet-4-5", 2, 1500, 250, 200, 200, 1000, D("0.014"), D("0.019")),
    ]


def test_by_day_oldest_first(team, lead, events, day_1):
    report = explore(lead, team, group_by="day")
    assert [(row.value, row.requests, row.charged_usd) for row in report.rows] == [
        (day_1.date() - timedelta(days=1), 1, D("0.004")),
        (day_1.date(), 2, D("0.09")),
    ]


def test_by_session_with_first_last_and_model_mix(team, lead, events, day_1):
    report = explore(lead, team, group_by="session")
    assert report.source == "events"
    first, second = report.rows
    assert (first.value, first.requests, first.cost_usd) == ("s-a", 2, D("0.06"))
    assert first.first_at == day_1 + timedelta(hours=10)
    assert first.last_at == day_1 + timedelta(hours=11)
    assert first.models == ("claude-opus-4-1", "claude-sonnet-4-5")
    assert (second.value, second.models) == ("s-b", ("claude-sonnet-4-5",))


def test_filters(team, lead, member, keys, events):
    assert rows_of(explore(lead, team, status="error")) == [
        ("member", 1, 2000, 100, 0, 0, 0, D("0.05"), D("0.075"))
    ]
    endpoint = explore(lead, team, endpoint="chat_completions", group_by="key")
    assert [row.label for row in endpoint.rows] == ["lead-key"]
    assert [row.label for row in explore(lead, team, member=str(member.pk)).rows] == ["member"]
    by_key = explore(lead, team, key=str(keys["lead"].pk), group_by="model")
    assert [row.label for row in by_key.rows] == ["claude-sonnet-4-5"]
    model = explore(lead, team, model="claude-opus-4-1", group_by="day")
    assert model.total.requests == 1


def test_a_range_before_the_usage_is_empty(team, lead, events):
    report = explore(
        lead, team, range="custom", since="2020-01-01", until="2020-01-31", group_by="key"
    )
    assert report.rows == []
    assert report.total.requests == 0


def test_today_is_charted_per_hour(team, lead, keys):
    now = timezone.now()
    roll_up([UsageEventFactory(key=keys["lead"], created_at=now, charged_usd=D("0.5"))])
    report = explore(lead, team, range="today", group_by="key")
    assert report.source == "events"
    assert len(report.buckets) == 24
    hour = now.replace(minute=0, second=0, microsecond=0)
    assert report.cells[(hour, keys["lead"].pk)].charged_usd == D("0.5")


# --- who sees what ---------------------------------------------------------------------------


def test_a_member_sees_only_their_own_keys(team, member, keys, events):
    report = explore(member, team, group_by="key")
    assert [row.label for row in report.rows] == ["member-key"]
    sessions = explore(member, team, group_by="session")
    assert [row.value for row in sessions.rows] == ["s-a"]
    assert sessions.rows[0].requests == 2  # Not the other team's request in "s-a".


def test_a_member_asking_for_another_members_key_gets_none_of_it(client, team, member, keys):
    roll_up([UsageEventFactory(key=keys["lead"], model="secret-model")])
    client.force_login(member)
    url, _ = usage_url(team)
    response = client.get(url, {"key": keys["lead"].pk, "group_by": "member"})
    assert response.status_code == 200
    assert response.context["errors"] == {
        "key": "No such key in this team.",
        "group_by": "Group by one of: key, model, day, session.",
    }
    page = response.content.decode()
    assert "secret-model" not in page
    assert "lead-key" not in page
    assert response.context["report"].rows == []


def test_another_team_is_404(client, team, outsider, events):
    client.force_login(outsider)
    assert client.get(reverse("billing:team_usage", args=[team.slug])).status_code == 404


# --- the page ------------------------------------------------------------------------------


def test_the_page_links_rows_through(client, team, lead, member, keys, events):
    client.force_login(lead)
    url, _ = usage_url(team)
    page = client.get(url).content.decode()
    assert f'href="/t/acme/keys/?owner={member.pk}">member</a>' in page
    assert "<td>15.4%</td>" in page  # 600 / 3,900 cache hits.
    page = client.get(url, {"group_by": "key"}).content.decode()
    assert f'href="/t/acme/keys/{keys["member"].pk}/">member-key</a>' in page
    page = client.get(url, {"group_by": "session"}).content.decode()
    assert 'href="/t/acme/usage/sessions/s-a/"' in page
    assert "claude-opus-4-1, claude-sonnet-4-5" in page
    assert "Download CSV" in page


def test_an_empty_range_has_no_axis(client, team, lead):
    client.force_login(lead)
    url, _ = usage_url(team)
    page = client.get(url).content.decode()
    assert "No usage in this range." in page
    assert "<svg" not in page


def test_the_chart_stacks_the_top_entries_and_has_a_table(client, team, lead, events):
    client.force_login(lead)
    url, _ = usage_url(team)
    response = client.get(url, {"range": "7d", "metric": "charge"})
    chart = response.context["chart"]
    assert [(item.label, item.total) for item in chart["series"]] == [
        ("member", D("0.09")),
        ("lead", D("0.004")),
    ]
    assert [tick.label for tick in chart["ticks"]] == [
        "$0.00",
        "$0.02",
        "$0.04",
        "$0.06",
        "$0.08",
        "$0.10",
    ]
    assert chart["table"][-2][1] == ["$0.09", "$0.00"]
    assert "Show as table" in response.content.decode()


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"since": "2026-13-01", "until": "2026-12-01"}, {"since": "Enter a date as YYYY-MM-DD."}),
        (
            {"range": "custom", "since": "2026-12-01"},
            {"until": "Enter both days of a custom range."},
        ),
        (
            {"since": "2026-12-05", "until": "2026-12-01"},
            {"until": "The range ends before it starts."},
        ),
        (
            {"since": "2024-01-01", "until": "2026-01-01"},
            {"since": "A range spans at most 366 days."},
        ),
        ({"range": "year"}, {"range": "Choose a range among: today, 7d, 30d, month, custom."}),
        ({"group_by": "team"}, {"group_by": "Group by one of: member, key, model, day, session."}),
        ({"metric": "latency"}, {"metric": "Chart one of: cost, charge, requests, tokens."}),
        ({"member": "999"}, {"member": "No such member in this team."}),
        ({"key": "abc"}, {"key": "No such key in this team."}),
        ({"model": "a b"}, {"model": "Enter a model name such as claude-sonnet-4-5."}),
        (
            {"status": "ok"},
            {"status": STATUS_MESSAGE},
        ),
        (
            {"endpoint": "x"},
            {
                "endpoint": "Choose an endpoint among: messages, count_tokens, "
                "chat_completions, responses, models, billing_subscription, billing_usage, key."
            },
        ),
    ],
)
def test_bad_parameters_are_named_and_the_default_shown(client, team, lead, params, errors):
    client.force_login(lead)
    url, _ = usage_url(team)
    response = client.get(url, params)
    assert response.status_code == 200
    assert response.context["errors"] == errors
    query = response.context["query"]
    for name in errors:
        if name in ("since", "until", "range"):
            assert (query.range, query.until) == ("30d", timezone.localdate())
    page = response.content.decode()
    for name, message in errors.items():
        assert f"<li><strong>{name}</strong>: {message}</li>" in page.replace("&#x27;", "'")


# --- the session page ------------------------------------------------------------------------


def session_url(team, session_id):
    return reverse("billing:session_usage", args=[team.slug, session_id])


def test_session_page_lists_its_requests(client, team, lead, events):
    client.force_login(lead)
    response = client.get(session_url(team, "s-a"))
    assert response.status_code == 200
    assert [event.request_id for event in response.context["page"]] == ["req-1", "req-2"]
    summary = response.context["summary"]
    assert (summary.requests, summary.cost_usd, summary.charged_usd) == (2, D("0.06"), D("0.09"))
    page = response.content.decode()
    assert "models: claude-opus-4-1, claude-sonnet-4-5" in page
    assert "200 / 100" in page  # Cache writes: 5 minutes / 1 hour.


def test_session_page_pages(client, team, lead, keys):
    start = timezone.now() - timedelta(hours=1)
    for n in range(51):
        UsageEventFactory(
            key=keys["lead"], session_id="long", created_at=start + timedelta(seconds=n)
        )
    client.force_login(lead)
    second = client.get(session_url(team, "long"), {"page": 2})
    assert len(second.context["page"]) == 1
    assert "Page 2 of 2 · 51 requests" in second.content.decode()


@pytest.mark.parametrize(
    ("who", "session_id", "status"),
    [
        ("member", "s-a", 200),
        ("member", "s-b", 404),  # The lead's session.
        ("outsider", "s-a", 404),  # Another team: its own "s-a" is in its own team.
        ("lead", "no-such", 404),
    ],
)
def test_session_page_scope(client, request, team, events, who, session_id, status):
    client.force_login(request.getfixturevalue(who))
    assert client.get(session_url(team, session_id)).status_code == status


def test_a_second_member_sees_no_session_of_another(client, team, events):
    client.force_login(MembershipFactory(team=team, user__username="second").user)
    assert client.get(session_url(team, "s-a")).status_code == 404


# --- the chart's axis ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("high", "whole", "ticks"),
    [
        (0, False, []),
        (D("-1"), False, []),
        (D("4.00"), False, ["0", "1", "2", "3", "4"]),
        (D("0.094"), False, ["0", "0.02", "0.04", "0.06", "0.08", "0.10"]),
        (D("0.003"), False, ["0", "0.001", "0.002", "0.003"]),
        (D("7.3"), False, ["0", "2", "4", "6", "8"]),
        (3, True, ["0", "1", "2", "3"]),
        (1, True, ["0", "1"]),
        (1234567, True, ["0", "500000", "1000000", "1500000"]),
        (42, True, ["0", "10", "20", "30", "40", "50"]),
    ],
)
def test_nice_ticks(high, whole, ticks):
    assert [str(tick) for tick in nice_ticks(high, whole=whole)] == ticks


def test_ticks_step_by_one_two_or_five():
    for high in (D("0.0007"), D("0.13"), D("1.9"), D("27"), D("640"), D("99999")):
        ticks = nice_ticks(high)
        steps = {b - a for a, b in pairwise(ticks)}
        assert len(steps) == 1
        (step,) = steps
        assert step.normalize().as_tuple().digits in ((1,), (2,), (5,))
        assert ticks[-1] >= high > ticks[-2]


@pytest.mark.parametrize(
    ("value", "metric", "step", "label"),
    [
        (D("0"), "cost", D("0.5"), "$0.00"),
        (D("1.5"), "cost", D("0.5"), "$1.50"),
        (D("0.005"), "charge", D("0.005"), "$0.005"),
        (D("2E+3"), "cost", D("1E+3"), "$2,000"),
        (D("1.5E+6"), "tokens", D("5E+5"), "1.5M"),
        (D("2E+4"), "tokens", D("1E+4"), "20k"),
        (D("5000"), "requests", D("1000"), "5,000"),
    ],
)
def test_tick_labels(value, metric, step, label):
    assert tick_label(value, metric=metric, step=step) == label
