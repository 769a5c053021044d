"""The usage CSV exports: /api/v1/usage/export.csv and /api/v1/usage/daily/export.csv, the
portal's Download CSV and the admin's action, all one streaming function (billing.export)."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from billing.export import CHUNK_ROWS
from billing.models import UsageDaily, UsageEvent
from billing.usage_query import STATUS_MESSAGE

from ...factories import make_key
from ..factories import UsageEventFactory

EXPORT = "/api/v1/usage/export.csv"
DAILY_EXPORT = "/api/v1/usage/daily/export.csv"
HEADER = (
    "time,team,member,key_name,key_prefix,model,endpoint,status,input_tokens,output_tokens,"
    "cache_creation_tokens,cache_creation_1h_tokens,cache_read_tokens,cost_usd,charged_usd,"
    "session_id,request_id"
)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite has no server-side cursor: it reads a query's rows as they are fetched, "
    "and the embedded mode is not where a million-row export runs",
)


@pytest.fixture
def keys(team, other_team, lead, member, outsider, group):
    return {
        "lead": make_key(team=team, owner=lead, group=group, name="lead-key").key,
        "member": make_key(team=team, owner=member, group=group, name="member-key").key,
        "outsider": make_key(team=other_team, owner=outsider, group=group, name="o-key").key,
    }


@pytest.fixture
def day():
    return timezone.localdate() - timedelta(days=1)


@pytest.fixture
def events(keys, day):
    at = datetime(day.year, day.month, day.day, 10, 0, tzinfo=UTC)
    return [
        UsageEventFactory(
            key=keys["member"],
            created_at=at,
            input_tokens=1000,
            output_tokens=200,
            cache_creation_tokens=300,
            cache_creation_1h_tokens=100,
            cache_read_tokens=600,
            cost_usd=Decimal("0.01"),
            charged_usd=Decimal("0.015"),
            endpoint="messages",
            session_id="s-a",
            request_id="req-1",
        ),
        UsageEventFactory(
            key=keys["lead"],
            created_at=at + timedelta(minutes=5, microseconds=250),
            model="claude-opus-4-1",
            status_code=529,
            cost_usd=Decimal("0"),
            charged_usd=Decimal("0"),
            endpoint="chat_completions",
            request_id="req-2",
        ),
        UsageEventFactory(key=keys["outsider"], created_at=at, request_id="req-3"),
    ]


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_lead_exports_the_teams_requests_oldest_first(api, lead, keys, events, day):
    response = api(lead).get(EXPORT, {"team": "acme"})
    assert response["Content-Disposition"] == (
        f'attachment; filename="usage-acme-2000-01-01-{timezone.localdate()}.csv"'
    )
    rows = read_csv(response)
    assert ",".join(rows[0]) == HEADER
    member_prefix, lead_prefix = keys["member"].prefix, keys["lead"].prefix
    assert rows[1:] == [
        [
            f"{day}T10:00:00.000000Z",
            "acme",
            "member",
            "member-key",
            member_prefix,
            "claude-sonnet-4-5",
            "messages",
            "200",
            "1000",
            "200",
            "300",
            "100",
            "600",
            "0.01000000",
            "0.01500000",
            "s-a",
            "req-1",
        ],
        [
            f"{day}T10:05:00.000250Z",
            "acme",
            "lead",
            "lead-key",
            lead_prefix,
            "claude-opus-4-1",
            "chat_completions",
            "529",
            "1000",
            "200",
            "0",
            "0",
            "0",
            "0.00000000",
            "0.00000000",
            "",
            "req-2",
        ],
    ]


def test_a_members_token_exports_their_own_keys_only(api, member, events):
    rows = read_csv(api(member).get(EXPORT, {"team": "acme"}))
    assert [row[-1] for row in rows[1:]] == ["req-1"]


def test_the_explorers_filters(api, lead, member, keys, events, day):
    client = api(lead)

    def request_ids(**params):
        return [row[-1] for row in read_csv(client.get(EXPORT, {"team": "acme", **params}))[1:]]

    assert request_ids(status="error") == ["req-2"]
    assert request_ids(status="2xx") == ["req-1"]
    assert request_ids(endpoint="messages") == ["req-1"]
    assert request_ids(member=str(member.pk)) == ["req-1"]
    assert request_ids(key=str(keys["lead"].pk)) == ["req-2"]
    assert request_ids(model="claude-opus-4-1") == ["req-2"]
    assert request_ids(since=str(day), until=str(day)) == ["req-1", "req-2"]
    assert request_ids(since=str(day + timedelta(days=1))) == []


def test_staff_export_any_team(api, staff, events):
    rows = read_csv(api(staff).get(EXPORT, {"team": "globex"}))
    assert [row[-1] for row in rows[1:]] == ["req-3"]


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({}, {"team": ["This field is required."]}),
        ({"team": ""}, {"team": ["This field may not be blank."]}),
        ({"team": "globex"}, {"team": ["No team with this slug."]}),
        ({"team": "no-such"}, {"team": ["No team with this slug."]}),
        ({"team": "acme", "since": "yesterday"}, {"since": ["Enter a date as YYYY-MM-DD."]}),
        ({"team": "acme", "until": "2026-02-30"}, {"until": ["Enter a date as YYYY-MM-DD."]}),
        (
            {"team": "acme", "since": "2026-03-02", "until": "2026-03-01"},
            {"until": ["The range ends before it starts."]},
        ),
        ({"team": "acme", "status": "ok"}, {"status": [STATUS_MESSAGE]}),
        ({"team": "acme", "endpoint": "x"}, {"endpoint": ['"x" is not a valid choice.']}),
        ({"team": "acme", "member": "abc"}, {"member": ["A valid integer is required."]}),
        ({"team": "acme", "member": "999"}, {"member": ["No such member in this team."]}),
    ],
)
def test_bad_parameters_are_a_400_naming_them(api, lead, events, params, body):
    response = api(lead).get(EXPORT, params, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == body


def test_a_member_asking_for_another_members_key_gets_a_400(api, member, keys, events):
    response = api(member).get(EXPORT, {"team": "acme", "key": keys["lead"].pk})
    assert response.status_code == 400
    assert response.json() == {"key": ["No such key in this team."]}


def test_no_token_no_export(api, events):
    assert api(None).get(EXPORT, {"team": "acme"}).status_code == 401


def test_daily_export(api, lead, member, keys, day):
    UsageDaily.objects.create(
        team=keys["member"].team,
        key=keys["member"],
        model="claude-sonnet-4-5",
        day=day,
        requests=3,
        input_tokens=30,
        output_tokens=20,
        cache_creation_tokens=10,
        cache_creation_1h_tokens=4,
        cache_read_tokens=5,
        cost_usd=Decimal("1.5"),
        charged_usd=Decimal("2"),
    )
    UsageDaily.objects.create(
        team=keys["lead"].team, key=keys["lead"], model="m", day=day, requests=1
    )
    UsageDaily.objects.create(
        team=keys["outsider"].team, key=keys["outsider"], model="m", day=day, requests=1
    )
    rows = read_csv(api(member).get(DAILY_EXPORT, {"team": "acme", "since": str(day)}))
    assert ",".join(rows[0]) == (
        "day,team,member,key_name,key_prefix,model,requests,input_tokens,output_tokens,"
        "cache_creation_tokens,cache_creation_1h_tokens,cache_read_tokens,cost_usd,charged_usd"
    )
    assert rows[1:] == [
        [
            str(day),
            "acme",
            "member",
            "member-key",
            keys["member"].prefix,
            "claude-sonnet-4-5",
            "3",
            "30",
            "20",
            "10",
            "4",
            "5",
            "1.50000000",
            "2.00000000",
        ]
    ]
    assert len(read_csv(api(lead).get(DAILY_EXPORT, {"team": "acme"}))) == 3
    bad = api(lead).get(DAILY_EXPORT, {"team": "acme", "since": "2026/01/01"})
    assert bad.status_code == 400
    assert bad.json() == {"since": ["Enter a date as YYYY-MM-DD."]}


def test_the_portals_download_is_the_same_csv(client, api, lead, member, events):
    client.force_login(member)
    url = reverse("billing:team_usage_export", args=["acme"])
    assert read_csv(client.get(url)) == read_csv(api(member).get(EXPORT, {"team": "acme"}))
    bad = client.get(url, {"since": "x"})
    assert bad.status_code == 400
    assert bad.content.decode() == "since: Enter a date as YYYY-MM-DD."


def test_the_portals_download_of_another_team_is_404(client, outsider, events):
    client.force_login(outsider)
    assert client.get(reverse("billing:team_usage_export", args=["acme"])).status_code == 404


def test_staff_export_across_teams_in_the_admin(client, staff, events):
    client.force_login(staff)
    response = client.post(
        reverse("admin:billing_usageevent_changelist"),
        {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": "x"},
    )
    rows = read_csv(response)
    assert sorted(row[-1] for row in rows[1:]) == ["req-1", "req-2", "req-3"]


def test_the_schema_documents_the_exports_as_csv(api, staff):
    schema = api(staff).get("/api/schema/", {"format": "json"}).json()
    for path in (EXPORT, DAILY_EXPORT):
        operation = schema["paths"][path]["get"]
        assert list(operation["responses"]["200"]["content"]) == ["text/csv"]
        assert {param["name"] for param in operation["parameters"]} >= {"team", "since", "until"}


# --- streaming -------------------------------------------------------------------------------

ROWS = 100_000


def _insert_events(key, count: int) -> None:
    """`count` events of `key` in one statement (a factory would take minutes)."""
    assert UsageEvent._meta.db_table == "billing_usageevent"
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO billing_usageevent (key_id, team_id, group_id, model, input_tokens,
                output_tokens,
                cache_creation_tokens, cache_creation_1h_tokens, cache_read_tokens, cost_usd,
                charged_usd, status_code, latency_ms, session_id, request_id, endpoint,
                created_at, settled_at)
            SELECT %s, %s, %s, 'claude-sonnet-4-5', 10, 2, 0, 0, 0, 0.001, 0.001, 200, 5,
                'bulk', 'bulk-' || n, 'messages', %s - n * interval '1 millisecond', %s
            FROM generate_series(1, %s) AS n
            """,
            [key.pk, key.team_id, key.group_id, timezone.now(), timezone.now(), count],
        )


def _open_cursors() -> int:
    """Server-side cursors open in this session (Django names them _django_curs_...)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors WHERE name LIKE '_django_curs_%%'")
        return cursor.fetchone()[0]


@postgres_only
def test_an_export_of_100000_rows_streams_before_the_query_ends(api, lead, keys):
    _insert_events(keys["member"], ROWS)
    response = api(lead).get(EXPORT, {"team": "acme"})
    assert response.streaming
    chunks = iter(response.streaming_content)

    first = next(chunks)

    # The first chunk is one fetch's rows, and the cursor is still open on the rest.
    assert first.decode().count("\n") == CHUNK_ROWS + 1  # With the header.
    assert _open_cursors() == 1
    rest = b"".join(chunks)
    assert (first + rest).decode().count("\n") == ROWS + 1
    assert _open_cursors() == 0


@postgres_only
def test_under_asgi_the_chunks_are_pulled_one_at_a_time(api, lead, keys):
    """Django reads a synchronous iterator whole before serving it under ASGI; the response
    pulls chunk by chunk instead, on the thread that holds the connection (here the test's)."""
    _insert_events(keys["member"], 3 * CHUNK_ROWS)
    response = api(lead).get(EXPORT, {"team": "acme"})
    seen = []

    async def consume():
        async for chunk in response:
            seen.append((chunk.decode().count("\n"), await sync_to_async(_open_cursors)()))

    async_to_sync(consume)()
    # Each chunk arrived while the cursor was still open on the rows after it.
    assert seen == [(CHUNK_ROWS + 1, 1), (CHUNK_ROWS, 1), (CHUNK_ROWS, 1)]
    assert _open_cursors() == 0


def test_under_asgi_the_csv_is_the_same(api, lead, events):
    response = api(lead).get(EXPORT, {"team": "acme"})
    chunks = []

    async def consume():
        async for chunk in response:
            chunks.append(chunk)

    async_to_sync(consume)()
    expected = read_csv(api(lead).get(EXPORT, {"team": "acme"}))
    assert list(csv.reader(io.StringIO(b"".join(chunks).decode()))) == expected
