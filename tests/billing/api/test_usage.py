"""/api/v1/usage/ and /api/v1/usage/daily/: leads see their teams' usage, members their keys'."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageDaily
from keys import services
from keys.models import Membership

from ...factories import MembershipFactory, make_key
from ..factories import RefusalCountFactory, UsageEventFactory

USAGE = "/api/v1/usage/"
DAILY = "/api/v1/usage/daily/"
REFUSALS = "/api/v1/usage/refusals/"


@pytest.fixture
def keys(team, other_team, lead, member, outsider, group):
    return {
        "lead": make_key(team=team, owner=lead, group=group, name="lead-key").key,
        "member": make_key(team=team, owner=member, group=group, name="member-key").key,
        "outsider": make_key(team=other_team, owner=outsider, group=group, name="o-key").key,
    }


@pytest.fixture
def events(keys):
    base = timezone.now().replace(microsecond=0)
    made = {
        "lead": UsageEventFactory(key=keys["lead"], created_at=base - timedelta(hours=3)),
        "member": UsageEventFactory(
            key=keys["member"], model="claude-haiku-4", created_at=base - timedelta(hours=2)
        ),
        "outsider": UsageEventFactory(key=keys["outsider"], created_at=base - timedelta(hours=1)),
    }
    # A deleted key's usage stays with its team, visible to the team's leads only.
    gone = make_key(team=keys["member"].team, owner=keys["member"].owner, name="gone").key
    made["deleted"] = UsageEventFactory(key=gone, created_at=base)
    services.api_key_delete(key=gone, actor=None)
    return made


@pytest.mark.parametrize(
    ("actor", "visible"),
    [
        ("lead", ["deleted", "member", "lead"]),
        ("member", ["member"]),
        ("outsider", ["outsider"]),
        ("staff", ["deleted", "outsider", "member", "lead"]),
    ],
)
def test_events_are_scoped_like_keys(api, lead, member, outsider, staff, events, actor, visible):
    actors = {"lead": lead, "member": member, "outsider": outsider, "staff": staff}

    response = api(actors[actor]).get(USAGE)

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [events[n].pk for n in visible]


def test_an_event_shows_its_key_cost_and_request(api, member, keys, events):
    event = events["member"]

    row = api(member).get(USAGE).json()["results"][0]

    assert row == {
        "id": event.pk,
        "key": keys["member"].pk,
        "key_prefix": keys["member"].prefix,
        "team": "acme",
        "group": "CC Official Channel",
        "model": "claude-haiku-4",
        "input_tokens": 1000,
        "output_tokens": 200,
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
        "cost_usd": "0.00600000",
        "charged_usd": "0.00600000",
        "status_code": 200,
        "latency_ms": 0,
        "client_ip": None,
        "session_id": "",
        "request_id": "",
        "endpoint": "",
        "created_at": row["created_at"],
        "settled_at": None,
    }


def test_a_deleted_keys_event_has_no_key(api, lead, events):
    rows = api(lead).get(USAGE).json()["results"]

    assert (rows[0]["id"], rows[0]["key"], rows[0]["key_prefix"]) == (
        events["deleted"].pk,
        None,
        None,
    )


def test_events_filter_by_key_model_team_and_time(api, lead, keys, events, other_team):
    MembershipFactory(team=other_team, user=lead, role=Membership.Role.LEAD)
    client = api(lead)

    def ids(**params) -> list[int]:
        response = client.get(USAGE, params)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    member_at = events["member"].created_at
    assert ids(key=keys["member"].pk) == [events["member"].pk]
    assert ids(model="claude-haiku-4") == [events["member"].pk]
    assert ids(team="globex") == [events["outsider"].pk]
    assert ids(since=member_at.isoformat(), until=events["outsider"].created_at.isoformat()) == [
        events["member"].pk
    ]
    assert ids(key=keys["outsider"].pk, team="acme") == []


def test_a_member_cannot_read_a_teammates_key_usage(api, member, keys, events):
    assert api(member).get(USAGE, {"key": keys["lead"].pk}).json()["results"] == []


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"key": "abc"}, {"key": ["A valid integer is required."]}),
        (
            {"key": str(2**64)},
            {"key": [f"Ensure this value is less than or equal to {2**63 - 1}."]},
        ),
        ({"model": "a\x00"}, {"model": ["Null characters are not allowed."]}),
        (
            {"since": "yesterday"},
            {
                "since": [
                    "Datetime has wrong format. Use one of these formats instead: "
                    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
                ]
            },
        ),
    ],
)
def test_events_report_a_bad_filter(api, lead, params, errors):
    response = api(lead).get(USAGE, params)

    assert response.status_code == 400
    assert response.json() == errors


def test_usage_needs_credentials(api, db):
    assert api(None).get(USAGE).status_code == 401
    assert api(None).get(DAILY).status_code == 401


def _rollup(key, day: date, model: str = "claude-sonnet-4-5", *, team=None, **totals):
    defaults = {
        "requests": 1,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": Decimal("0.5"),
        "charged_usd": Decimal("1"),
    }
    return UsageDaily.objects.create(
        team=team or key.team, key=key, model=model, day=day, **(defaults | totals)
    )


def test_daily_sums_each_day_within_scope(api, lead, member, keys, team):
    today = timezone.localdate()
    _rollup(keys["lead"], today)
    _rollup(keys["member"], today, requests=2, charged_usd=Decimal("0.25"))
    _rollup(keys["member"], today, model="claude-haiku-4")
    _rollup(keys["member"], today - timedelta(days=1))
    _rollup(None, today, team=team)  # a deleted key's rows
    _rollup(keys["outsider"], today)

    lead_days = api(lead).get(DAILY).json()["results"]
    member_days = api(member).get(DAILY).json()["results"]

    assert lead_days == [
        {
            "day": today.isoformat(),
            "requests": 5,
            "input_tokens": 40,
            "output_tokens": 20,
            "cache_creation_tokens": 0,
            "cache_read_tokens": 0,
            "cost_usd": "2.00000000",
            "charged_usd": "3.25000000",
        },
        {
            "day": (today - timedelta(days=1)).isoformat(),
            "requests": 1,
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_tokens": 0,
            "cache_read_tokens": 0,
            "cost_usd": "0.50000000",
            "charged_usd": "1.00000000",
        },
    ]
    assert [(day["day"], day["requests"]) for day in member_days] == [
        (today.isoformat(), 3),
        ((today - timedelta(days=1)).isoformat(), 1),
    ]


def test_daily_filters(api, lead, keys):
    today = timezone.localdate()
    _rollup(keys["lead"], today)
    _rollup(keys["member"], today, model="claude-haiku-4")
    _rollup(keys["member"], today - timedelta(days=3))
    client = api(lead)

    def days(**params) -> list[tuple[str, int]]:
        response = client.get(DAILY, params)
        assert response.status_code == 200, response.json()
        return [(day["day"], day["requests"]) for day in response.json()["results"]]

    assert days(key=keys["member"].pk) == [
        (today.isoformat(), 1),
        ((today - timedelta(days=3)).isoformat(), 1),
    ]
    assert days(model="claude-haiku-4") == [(today.isoformat(), 1)]
    assert days(since=(today - timedelta(days=1)).isoformat()) == [(today.isoformat(), 2)]
    assert days(until=(today - timedelta(days=1)).isoformat()) == [
        ((today - timedelta(days=3)).isoformat(), 1)
    ]
    assert days(team="globex") == []


def test_daily_reports_a_bad_filter(api, lead):
    response = api(lead).get(DAILY, {"since": "2026-13-01"})

    assert response.status_code == 400
    assert response.json() == {
        "since": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]
    }


# --- status ---------------------------------------------------------------------------------


def test_events_filter_by_status(api, lead, keys):
    made = {
        status: UsageEventFactory(key=keys["member"], status_code=status)
        for status in (200, 400, 402, 529)
    }
    client = api(lead)

    def statuses(status: str) -> list[int]:
        response = client.get(USAGE, {"status": status})
        assert response.status_code == 200, response.json()
        return sorted(row["status_code"] for row in response.json()["results"])

    assert statuses("402") == [402]
    assert statuses("4xx") == [400, 402]
    assert statuses("2xx") == [200]
    assert statuses("5xx") == [529]
    assert statuses("404") == []
    assert statuses(" 529 ") == [529]
    assert made


@pytest.mark.parametrize("bad", ["abc", "600", "4XX", "40", "6xx", "", "refused"])
def test_events_report_a_bad_status(api, lead, bad):
    response = api(lead).get(USAGE, {"status": bad})

    assert response.status_code == 400
    message = (
        "This field may not be blank."
        if bad == ""
        else "Enter a status code such as 502 or a class such as 5xx. Requests the relay "
        "refused itself are listed under /api/v1/usage/refusals/."
    )
    assert response.json() == {"status": [message]}


@pytest.fixture
def refusals(keys):
    minute = timezone.now().replace(second=0, microsecond=0)
    return {
        "lead": RefusalCountFactory(key=keys["lead"], minute=minute - timedelta(minutes=3)),
        "member": RefusalCountFactory(
            key=keys["member"],
            minute=minute - timedelta(minutes=2),
            status_code=402,
            code="insufficient_quota",
            count=10_000,
        ),
        "member-rate": RefusalCountFactory(
            key=keys["member"],
            minute=minute - timedelta(minutes=1),
            status_code=429,
            code="rate_limit_exceeded",
            endpoint="chat_completions",
        ),
        "outsider": RefusalCountFactory(key=keys["outsider"], minute=minute),
    }


@pytest.mark.parametrize(
    ("actor", "visible"),
    [
        ("lead", ["member-rate", "member", "lead"]),
        ("member", ["member-rate", "member"]),
        ("outsider", ["outsider"]),
        ("staff", ["outsider", "member-rate", "member", "lead"]),
    ],
)
def test_refusals_are_scoped_like_keys(
    api, lead, member, outsider, staff, refusals, actor, visible
):
    actors = {"lead": lead, "member": member, "outsider": outsider, "staff": staff}

    response = api(actors[actor]).get(REFUSALS)

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [refusals[n].pk for n in visible]


def test_a_refusal_count_row(api, member, keys, refusals):
    row = api(member).get(REFUSALS, {"status": "402"}).json()["results"]

    assert row == [
        {
            "id": refusals["member"].pk,
            "key": keys["member"].pk,
            "key_prefix": keys["member"].prefix,
            "team": "acme",
            "minute": row[0]["minute"],
            "status_code": 402,
            "code": "insufficient_quota",
            "endpoint": "messages",
            "count": 10_000,
        }
    ]
    assert row[0]["minute"].endswith(":00Z") or row[0]["minute"].endswith(":00+00:00")


def test_refusals_filter_by_status_key_and_time(api, lead, keys, refusals):
    client = api(lead)

    def ids(**params) -> list[int]:
        response = client.get(REFUSALS, params)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids(status="refused") == [refusals[n].pk for n in ("member-rate", "member", "lead")]
    assert ids(status="4xx") == ids(status="refused")
    assert ids(status="429") == [refusals["member-rate"].pk]
    assert ids(status="2xx") == []
    assert ids(key=keys["lead"].pk) == [refusals["lead"].pk]
    since = refusals["member"].minute.isoformat()
    until = refusals["member-rate"].minute.isoformat()
    assert ids(since=since, until=until) == [refusals["member"].pk]


@pytest.mark.parametrize("bad", ["abc", "4XX", "1000", "refused!"])
def test_refusals_report_a_bad_status(api, lead, bad):
    response = api(lead).get(REFUSALS, {"status": bad})

    assert response.status_code == 400
    assert response.json() == {
        "status": ["Enter a status code such as 402, a class such as 4xx, or “refused”."]
    }
