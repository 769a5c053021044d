"""Spend controls at the gate (issue 16): every limit of a request admitted in one atomic step
(proxy.quota, proxy.store) against real Redis where CI has it: the key's daily, weekly and
monthly limits, its owner's monthly cap in the team, the team's monthly budget, the key's
concurrency and its rate limit (a sliding window: never more than N in any period)."""

import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from billing.models import ModelPrice
from billing.windows import Period, window
from keys.cache import invalidate_key_state
from keys.models import ApiKey, Membership, Team
from proxy import quota
from tests.billing.factories import UsageEventFactory
from tests.factories import make_key
from tests.refusal_counts import refusal_rows
from tests.threads import join, start_thread

from .conftest import GPT, usage_events
from .fake_upstream import Usage
from .test_forwarding import MESSAGE, STREAM, open_stream, read_events

# gpt-4o writes at most 16,384 tokens; at $10 / MTok x 1.5 that is $0.24576 a request.
GPT_MAX_OUTPUT = 16_384
CHAT_STREAM = {
    "model": GPT,
    "stream": True,
    "messages": [{"role": "user", "content": "Write a lot."}],
}

KINDS = ["daily", "weekly", "monthly", "member_monthly", "team_monthly"]


def set_limit(relay, kind: str, amount: str) -> None:
    """Set one spend limit as its interface would, and drop the key's snapshot (as every
    service does on commit), so the next request obeys it."""
    key = relay.key
    if kind in ("daily", "weekly", "monthly"):
        ApiKey.objects.filter(pk=key.pk).update(**{f"{kind}_limit_usd": Decimal(amount)})
    elif kind == "member_monthly":
        Membership.objects.filter(team_id=key.team_id, user_id=key.owner_id).update(
            monthly_limit_usd=Decimal(amount)
        )
    else:
        Team.objects.filter(pk=key.team_id).update(monthly_budget_usd=Decimal(amount))
    invalidate_key_state([key.digest])


def refusal_name(relay, kind: str) -> str:
    team = relay.key.team.name
    return {
        "daily": "The daily limit of this key",
        "weekly": "The weekly limit of this key",
        "monthly": "The monthly limit of this key",
        "member_monthly": f"Your monthly cap in team {team}",
        "team_monthly": f"Team {team}'s monthly budget",
    }[kind]


def window_of(relay, kind: str, at: datetime) -> tuple[datetime, datetime]:
    period = {"daily": Period.DAY, "weekly": Period.WEEK}.get(kind, Period.MONTH)
    return window(period, relay.key.team.time_zone, at)


@pytest.fixture
def unbounded_gpt(relay):
    """The model writes everything it may: the request's limit, else its maximum."""
    ModelPrice.objects.filter(model=GPT).update(max_output_tokens=GPT_MAX_OUTPUT)
    relay.primary.usage = Usage(
        input_tokens=5, output_tokens=GPT_MAX_OUTPUT, cache_creation_tokens=0, cache_read_tokens=0
    )
    return relay


@pytest.mark.parametrize("kind", KINDS)
def test_thirty_concurrent_streams_never_pass_a_limit(unbounded_gpt, kind):
    """30 streams at once against a $0.50 limit, each able to cost $0.25: the limit is never
    passed (each request reserves what it can cost, or has its output lowered to what is
    left), and the refused ones name the limit."""
    relay = unbounded_gpt
    relay.primary.pause_seconds = 0.01
    set_limit(relay, kind, "0.50")
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def stream() -> None:
        connection, response = open_stream(relay, "/v1/chat/completions", CHAT_STREAM)
        try:
            if response.status == 200:
                events = list(read_events(response))
                assert events[-1] == b"data: [DONE]"
                results.append((200, ""))
            else:
                results.append((response.status, json.loads(response.read())["error"]["message"]))
        finally:
            connection.close()

    join([start_thread(stream, errors) for _ in range(30)], timeout=60)

    assert errors == []
    admitted = [status for status, _ in results if status == 200]
    refused = [message for status, message in results if status != 200]
    assert {status for status, _ in results} == {200, 429}  # OpenAI's insufficient_quota
    events = usage_events(key=relay.key, count=len(admitted), timeout=15)
    assert len(events) == len(admitted) >= 2
    assert sum(event.charged_usd for event in events) <= Decimal("0.50")
    name = re.escape(refusal_name(relay, kind))
    assert all(
        re.fullmatch(rf"{name} is used up: \$0\.\d\d of \$0\.50 spent.*", m) for m in refused
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_used_up_window_refuses_with_its_name_spend_and_reset(relay, kind):
    now = timezone.now()
    _, resets_at = window_of(relay, kind, now)
    UsageEventFactory(key=relay.key, charged_usd=Decimal("2.00"), created_at=now)
    set_limit(relay, kind, "2")

    refused = relay.call("POST", "/v1/messages", MESSAGE)

    local_reset = resets_at.astimezone(ZoneInfo(relay.key.team.time_zone))
    assert refused.status == 402
    error = refused.json()["error"]
    assert error["type"] == "billing_error"
    assert error["message"] == (
        f"{refusal_name(relay, kind)} is used up: $2.00 of $2.00 spent. "
        f"It resets at {local_reset.isoformat()}."
    )
    seconds = (resets_at - timezone.now()).total_seconds()
    if seconds <= 86400:
        assert abs(int(refused.headers["retry-after"]) - seconds) <= 2
    else:
        assert "retry-after" not in refused.headers
    assert relay.primary.requests == []
    # Counted as its own reason, for the key's page (OpenAI's code is the same for all).
    [row] = refusal_rows(count=1, key=relay.key)
    assert (row.status_code, row.code) == (402, f"{kind}_limit_reached")


def test_spend_of_an_earlier_window_does_not_count(relay):
    now = timezone.now()
    start, _ = window(Period.MONTH, relay.key.team.time_zone, now)
    UsageEventFactory(key=relay.key, charged_usd=Decimal("5"), created_at=start - timedelta(0, 1))
    set_limit(relay, "monthly", "1")
    set_limit(relay, "team_monthly", "1")

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_a_member_cap_counts_every_key_of_the_member(relay, member):
    other = make_key(team=relay.key.team, owner=member, group=relay.group, actor=member).key
    UsageEventFactory(key=other, charged_usd=Decimal("3"), created_at=timezone.now())
    set_limit(relay, "member_monthly", "3")

    refused = relay.call("POST", "/v1/messages", MESSAGE)

    assert refused.status == 402
    assert refused.json()["error"]["message"].startswith(
        f"Your monthly cap in team {relay.key.team.name} is used up: $3.00 of $3.00 spent."
    )


def test_windows_roll_over_at_the_teams_midnight(relay, monkeypatch):
    """An injected clock, no sleeping to midnight: a daily limit used up at 23:59 in the team's
    zone (Asia/Shanghai, UTC+8) refuses until 00:00 there, when a new day's total starts."""
    Team.objects.filter(pk=relay.key.team_id).update(time_zone="Asia/Shanghai")
    day_ends = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # 2026-12-08 00:00 in Shanghai
    UsageEventFactory(
        key=relay.key, charged_usd=Decimal("1"), created_at=day_ends - timedelta(minutes=1)
    )
    set_limit(relay, "daily", "1")

    monkeypatch.setattr(quota, "clock", lambda: day_ends - timedelta(seconds=30))
    before = relay.call("POST", "/v1/messages", MESSAGE)
    monkeypatch.setattr(quota, "clock", lambda: day_ends + timedelta(seconds=1))
    after = relay.call("POST", "/v1/messages", MESSAGE)

    assert before.status == 402
    assert before.json()["error"]["message"] == (
        "The daily limit of this key is used up: $1.00 of $1.00 spent. "
        "It resets at 2026-12-08T00:00:00+08:00."
    )
    assert after.status == 200


# --- concurrency ----------------------------------------------------------------------------


def _in_flight_refusal(relay):
    refused = relay.call("POST", "/v1/messages", MESSAGE)
    assert refused.status == 429
    assert refused.headers["retry-after"] == "1"
    return refused.json()["error"]


def test_concurrency_refuses_past_the_limit_and_frees_slots_on_completion(relay):
    ApiKey.objects.filter(pk=relay.key.pk).update(max_concurrency=2)
    invalidate_key_state([relay.key.digest])
    relay.primary.hold_after_first_delta = True
    streams = [open_stream(relay, "/v1/messages", STREAM) for _ in range(2)]
    try:
        for _, response in streams:
            next(read_events(response))  # both in flight
        error = _in_flight_refusal(relay)
        assert error == {
            "type": "rate_limit_error",
            "message": "2 requests of this key are already in flight, its limit of 2 at once. "
            "Retry after 1 second.",
        }
        relay.primary.release.set()
        for _, response in streams:
            b"".join(read_events(response))
    finally:
        for connection, _ in streams:
            connection.close()
    usage_events(key=relay.key, count=2)

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_a_client_that_disconnects_frees_its_slot(relay):
    ApiKey.objects.filter(pk=relay.key.pk).update(max_concurrency=1)
    invalidate_key_state([relay.key.digest])
    relay.primary.hold_after_first_delta = True
    connection, response = open_stream(relay, "/v1/messages", STREAM)
    next(read_events(response))
    _in_flight_refusal(relay)

    connection.close()  # the client goes away mid-stream
    usage_events(key=relay.key, count=1)
    relay.primary.release.set()

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_a_rate_limit_is_a_sliding_window(relay):
    """3 a second: hammered for 2.5 s, no second-long span ever holds more than 3 admitted
    requests (a fixed window let 2N through across its boundary)."""
    ApiKey.objects.filter(pk=relay.key.pk).update(rate_limit="3/s")
    invalidate_key_state([relay.key.digest])
    admitted = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        if relay.call("POST", "/v1/messages/count_tokens", MESSAGE).status == 200:
            admitted.append(time.monotonic())

    assert 6 <= len(admitted) <= 9
    # Any 4 admitted requests span more than a second (less the request's own latency).
    assert all(
        later - earlier > 0.9 for earlier, later in zip(admitted, admitted[3:], strict=False)
    )
