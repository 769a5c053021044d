"""Refused requests of a known key are counted per key, minute, status, reason and endpoint
(billing.refusals): by the store, then as RefusalCount rows, and on the key's page."""

import asyncio
from decimal import Decimal

import pytest
from django.conf import settings
from django.urls import reverse

from billing.models import RefusalCount
from billing.refusals import Refusal
from billing.services import collect_refusal_counts
from core import keyspace
from keys import services
from keys.models import ApiKey
from proxy.redis_connect import client_for
from proxy.store import LocalStore, RedisStore, run_db
from tests.refusal_counts import refusal_rows

from .conftest import CLAUDE, GPT, usage_events

MESSAGE = {"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
CHAT = {"model": GPT, "messages": [{"role": "user", "content": "Hi"}]}

needs_redis = pytest.mark.skipif(settings.REDIS is None, reason="needs Redis")
embedded_only = pytest.mark.skipif(settings.REDIS is not None, reason="the embedded default")


def reasons(rows: list[RefusalCount]) -> dict[tuple[int, str, str], int]:
    """(status, code, endpoint) -> count, summed over minutes."""
    summed: dict[tuple[int, str, str], int] = {}
    for row in rows:
        reason = (row.status_code, row.code, row.endpoint)
        summed[reason] = summed.get(reason, 0) + row.count
    return summed


# --- the store: a key refused in a loop ------------------------------------------------------

TIMES = 10_000


def count_in_a_loop(store, refusal: Refusal, times: int, *, at_once: int = 200) -> None:
    """As a relay worker under a tool's retry loop: `at_once` refusals in flight at a time
    (10,000 at once would wait longer than the relay's Redis command timeout on a busy
    machine, which no relay worker does)."""

    async def loop():
        try:
            for start in range(0, times, at_once):
                count = min(at_once, times - start)
                await asyncio.gather(*(store.count_refusal(refusal) for _ in range(count)))
        finally:
            await store.close()

    asyncio.run(loop())


def assert_one_row_a_minute(rows: list[RefusalCount], key: ApiKey) -> None:
    """10,000 refusals make one row (two if the loop crossed into the next minute) whose
    counts add up to exactly 10,000."""
    assert 1 <= len(rows) <= 2
    assert len({row.minute for row in rows}) == len(rows)
    assert sum(row.count for row in rows) == TIMES
    assert {(row.key_id, row.team_id, row.status_code, row.code, row.endpoint) for row in rows} == {
        (key.pk, key.team_id, 402, "insufficient_quota", "messages")
    }
    assert all(row.minute.second == 0 and row.minute.microsecond == 0 for row in rows)


@needs_redis
def test_ten_thousand_refusals_make_one_row_with_redis(issued):
    key = issued.key
    count_in_a_loop(
        RedisStore(client_for(settings.REDIS)),
        Refusal(key.pk, 402, "insufficient_quota", "messages"),
        TIMES,
    )

    assert collect_refusal_counts() <= 2
    assert_one_row_a_minute(list(RefusalCount.objects.all()), key)


@embedded_only
@pytest.mark.django_db(transaction=True)
def test_ten_thousand_refusals_make_one_row_embedded(issued):
    """The embedded store keeps the counts in its process; its writer writes them (close
    waits for it)."""
    key = issued.key
    count_in_a_loop(LocalStore(), Refusal(key.pk, 402, "insufficient_quota", "messages"), TIMES)

    assert_one_row_a_minute(list(RefusalCount.objects.all()), key)


@embedded_only
@pytest.mark.django_db(transaction=True)
def test_the_embedded_writer_writes_a_refusal_and_later_ones_over_it(issued):
    key = issued.key
    refusal = Refusal(key.pk, 403, "key_disabled", "chat_completions")

    def counts() -> int:
        return sum(RefusalCount.objects.values_list("count", flat=True))

    async def scenario() -> list[int]:
        store = LocalStore()
        seen = []
        try:
            await store.count_refusal(refusal)
            await store.close()  # The writer has written it.
            seen.append(await run_db(counts))
            await store.count_refusal(refusal)
            await store.count_refusal(refusal)
        finally:
            await store.close()
        seen.append(await run_db(counts))
        return seen

    assert asyncio.run(scenario()) == [1, 3]


@needs_redis
def test_a_refusal_is_one_script_with_redis(issued):
    """The count is one command (a script) on the refusal path, filed by Redis's clock."""
    key = issued.key
    refusal = Refusal(key.pk, 429, "rate_limit_exceeded", "responses")

    async def scenario():
        store = RedisStore(client_for(settings.REDIS))
        try:
            await store.count_refusal(refusal)
            await store.count_refusal(refusal)
            now = int((await store.redis.execute("TIME"))[0])
            minutes = await store.redis.execute("SMEMBERS", keyspace.REFUSAL_MINUTES)
            counts = await store.redis.execute("HGETALL", keyspace.refusals(now - now % 60))
            ttl = await store.redis.execute("TTL", keyspace.refusals(now - now % 60))
            return now, minutes, counts, ttl
        finally:
            await store.close()

    now, minutes, counts, ttl = asyncio.run(scenario())

    assert minutes == [str(now - now % 60).encode()]
    assert counts == [f"{key.pk}|429|rate_limit_exceeded|responses".encode(), b"2"]
    assert keyspace.REFUSAL_COUNT_SECONDS - 5 < ttl <= keyspace.REFUSAL_COUNT_SECONDS


# --- the relay -------------------------------------------------------------------------------


def test_a_disabled_keys_refusals_on_its_page(relay, member, lead, client):
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    services.api_key_disable(key=relay.key, actor=member)

    for _ in range(3):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 403
    assert relay.call("POST", "/v1/chat/completions", CHAT).status == 403
    assert relay.call("GET", "/v1/models").status == 403

    rows = refusal_rows(count=5, key=relay.key)
    assert reasons(rows) == {
        (403, "key_disabled", "messages"): 3,
        (403, "key_disabled", "chat_completions"): 1,
        (403, "key_disabled", "models"): 1,
    }
    assert {row.team_id for row in rows} == {relay.key.team_id}
    [success] = usage_events(key=relay.key)
    assert success.endpoint == "messages"

    client.force_login(lead)
    page = client.get(reverse("keys:detail", args=[relay.key.team.slug, relay.key.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    if len({row.minute for row in rows}) == 1:
        assert "Refused: Key disabled ×3" in html
    assert "Refused: Key disabled</td>" in html  # Once: no "×1".
    assert html.count('<span class="status status--error">403</span>') == len(rows)
    assert "<td>Chat Completions</td>" in html
    assert "<td>Models</td>" in html
    assert "<td>Messages</td>" in html
    assert '<span class="status status--ok">200</span>' in html


def test_quota_and_model_refusals_name_their_status_and_reason(relay, member):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1.00")
    ApiKey.objects.filter(pk=relay.key.pk).update(spent_usd=Decimal("1.00"))

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 402
    # OpenAI's API answers a used-up quota with 429; the status counted is the one sent.
    assert relay.call("POST", "/v1/chat/completions", CHAT).status == 429
    assert relay.call("POST", "/v1/messages/count_tokens", MESSAGE).status == 402
    assert relay.call("GET", "/v1/models/no-such-model").status == 404

    assert reasons(refusal_rows(count=4, key=relay.key)) == {
        (402, "insufficient_quota", "messages"): 1,
        (429, "insufficient_quota", "chat_completions"): 1,
        (402, "insufficient_quota", "count_tokens"): 1,
        (404, "model_not_found", "models"): 1,
    }


def test_bad_body_and_wrong_model_are_counted(relay):
    assert relay.call("POST", "/v1/messages", b"{not json").status == 400
    wrong = {**CHAT, "model": "llama-3"}
    assert relay.call("POST", "/v1/responses", {"model": "llama-3", "input": "Hi"}).status == 403
    assert relay.call("POST", "/v1/chat/completions", wrong).status == 403

    assert reasons(refusal_rows(count=3, key=relay.key)) == {
        (400, "invalid_json", "messages"): 1,
        (403, "model_not_allowed", "responses"): 1,
        (403, "model_not_allowed", "chat_completions"): 1,
    }


def test_refusals_without_a_known_key_are_not_counted(relay):
    """No credential, an invalid one, an unknown path: no key or team to show them to."""
    assert relay.call("POST", "/v1/messages", MESSAGE, key=None).status == 401
    assert relay.call("POST", "/v1/messages", MESSAGE, key="sk-hc-not-a-real-key").status == 401
    assert relay.call("GET", "/v1/models", key="sk-hc-not-a-real-key").status == 401
    assert relay.call("POST", "/v1/unknown", MESSAGE).status == 404
    # A counted refusal after them: once it is written, the others would have been too.
    assert relay.call("POST", "/v1/messages", b"[]").status == 400

    rows = refusal_rows(count=1)
    assert reasons(rows) == {(400, "invalid_json", "messages"): 1}
    if settings.REDIS is not None:
        assert collect_refusal_counts() == 1  # The current minute's one row, nothing else.


def test_an_oversized_body_of_a_remembered_key_with_limits_is_counted(relay, member, settings):
    """A key this worker remembers with a limit has its body read before its snapshot (the
    admission goes with the snapshot read): a body over the relay's limit is still refused in
    its row of the table, named for the key and counted."""
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="5", rate_limit="100/m")
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200  # now remembered
    settings.RELAY_MAX_BODY_BYTES = 1024
    big = {**MESSAGE, "messages": [{"role": "user", "content": "x" * 2000}]}

    assert relay.call("POST", "/v1/messages", big).status == 413
    assert relay.call("POST", "/v1/chat/completions", {**big, "model": GPT}).status == 413

    assert reasons(refusal_rows(count=2, key=relay.key)) == {
        (413, "request_too_large", "messages"): 1,
        (413, "request_too_large", "chat_completions"): 1,
    }
