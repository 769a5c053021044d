"""Real-time quota through the relay: admission-time reservations bound the overshoot under
concurrency; the running total survives a cache loss; last_used_at stays fresh cheaply."""

import asyncio
import json
import threading
from datetime import timedelta
from decimal import Decimal

import anthropic
import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from billing import ledger
from billing.models import UsageEvent
from billing.pricing import PriceRow
from billing.services import recording, settle_usage
from keys import services
from keys.models import ApiKey
from proxy import gate as gate_module
from proxy.body import parse_body
from proxy.errors import RelayError
from proxy.gate import DEFAULT_MAX_TOKENS, Gate, estimate_charge_units
from proxy.keystate import build_key_state, parse_key_state
from proxy.prices import PriceTable
from proxy.store import make_store, run_db

from .conftest import CLAUDE, usage_events

# 400 characters of prompt: about 500 bytes of JSON, so the relay's input estimate (bytes / 4)
# is above the fake upstream's 40 input tokens, as it is for real prompts.
MESSAGE = {
    "model": CLAUDE,
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "x" * 400}],
}
# What the fake upstream bills per request: 25 input, 10 cache-write, 5 cache-read and 200
# output tokens at 3 / 3.75 / 0.30 / 15 $/MTok, x 1.5.
CHARGE = Decimal("0.004671")
# The relay's reservation for MESSAGE as the SDK sends it (compact ASCII JSON): bytes / 4
# (rounded up) input tokens priced as cache writes (3.75 > 3 $/MTok) plus max_tokens of output,
# x 1.5.
_BODY_BYTES = len(json.dumps(MESSAGE, separators=(",", ":")))
ESTIMATE = (Decimal(-(-_BODY_BYTES // 4)) * Decimal("3.75") + 200 * 15) / 10**6 * Decimal("1.5")


@pytest.mark.parametrize(
    ("field", "output_tokens"),
    [
        ("max_tokens", 300),  # Anthropic's, and Chat Completions' older name
        ("max_completion_tokens", 300),  # Chat Completions'
        ("max_output_tokens", 300),  # the Responses API's
        (None, DEFAULT_MAX_TOKENS),  # optional in both OpenAI APIs
    ],
)
def test_the_reservation_counts_the_output_limit_each_api_names(relay, field, output_tokens):
    state = parse_key_state(build_key_state(relay.key.digest))
    only_output = PriceRow("m", Decimal(0), Decimal(1), Decimal(0), Decimal(0))  # $1 / MTok
    payload = {"model": "m", **({field: 300} if field else {})}
    body = asyncio.run(parse_body(json.dumps(payload).encode()))

    units = estimate_charge_units(state, only_output, body, counts_output=True)

    assert units == ledger.usd_to_units(Decimal(output_tokens) / 10**6 * Decimal("1.5"))


@pytest.mark.parametrize("same_request_id", [False, True], ids=["own-ids", "one-x-request-id"])
def test_concurrent_streams_overshoot_at_most_one_request(relay, member, same_request_id):
    """30 concurrent streams on a key whose remaining quota covers about 6 of them.

    Each admission reserves a high estimate of its charge, and a request is admitted only
    while total + reservations < limit; so the final total exceeds the limit by less than one
    request's estimate, however many requests arrive at once. Also when every request sends
    the same X-Request-Id (which becomes its request id): reservations were once keyed by it,
    so such requests shared one reservation and the quota could be overrun at will."""
    headers = {"x-request-id": "req-the-same-for-all"} if same_request_id else {}
    relay.primary.usage.output_tokens = 200
    relay.primary.pause_seconds = 0.03  # each stream lasts ~0.3 s: all 30 overlap
    limit = Decimal("0.03")
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd=limit)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        client = relay.anthropic()
        try:
            with client.messages.stream(**MESSAGE, extra_headers=headers) as stream:
                stream.get_final_message()
            status = 200
        except anthropic.APIStatusError as error:
            status = error.status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    admitted = statuses.count(200)
    assert sorted(set(statuses)) == [200, 402]
    events = usage_events(key=relay.key, count=admitted, timeout=10)
    assert len(events) == admitted
    total = sum(event.charged_usd for event in events)
    assert all(event.charged_usd == CHARGE for event in events)
    overshoot = total - limit
    print(
        f"admitted {admitted} of 30, charged ${total} on a ${limit} quota: overshoot ${overshoot}"
    )
    assert overshoot < ESTIMATE
    # Reservations are conservative, not blocking: at least what the quota could pay for at
    # the estimate was admitted.
    assert admitted >= int(limit / ESTIMATE)


def test_running_total_survives_cache_loss(relay, member):
    relay.primary.usage.output_tokens = 200
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.01")
    for count in (1, 2):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
        usage_events(key=relay.key, count=count)
    settle_usage()

    cache.clear()  # Redis flushed or restarted, or local memory lost

    # Settled 2 x 0.004671 = 0.009342 < 0.01: one more is admitted, then refused.
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    usage_events(key=relay.key, count=3)
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 402
    assert ledger.spend_total(relay.key.pk) == ledger.usd_to_units(CHARGE * 3)


def test_refused_request_leaves_no_reservation(relay, member):
    """A request refused after admission (here by the rate limit) gives its reservation
    back, or the key would be blocked by requests that never ran."""
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.01", rate_limit="1/h")
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    for _ in range(5):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 429
    services.api_key_update(key=relay.key, actor=member, rate_limit="")

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_last_used_at_refreshed_at_most_once_a_minute(relay):
    assert relay.key.last_used_at is None
    relay.call("POST", "/v1/messages", MESSAGE)
    [first] = usage_events(key=relay.key)
    relay.key.refresh_from_db()
    assert relay.key.last_used_at == first.created_at

    relay.call("POST", "/v1/messages", MESSAGE)
    usage_events(key=relay.key, count=2)
    relay.key.refresh_from_db()
    assert relay.key.last_used_at == first.created_at

    stale = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.filter(pk=relay.key.pk).update(last_used_at=stale)
    recording._last_used_refreshed.clear()  # another process, with no memory of this key
    relay.call("POST", "/v1/messages", MESSAGE)
    third = usage_events(key=relay.key, count=3)[-1]
    relay.key.refresh_from_db()
    assert relay.key.last_used_at == third.created_at
    assert UsageEvent.objects.filter(key=relay.key).count() == 3


# --- one round trip: the snapshot read and the admission sent together --------------------


def held_reservations(store, key_id: int) -> dict:
    """The quota reservations the key holds now, in Redis or in the relay's local `store`."""
    if settings.REDIS_URL:
        name = cache.make_key(ledger.reservations_cache_key(key_id))
        with redis.Redis.from_url(settings.REDIS_URL) as client:
            return client.hgetall(name)
    return dict(store._reservations.get(key_id, {}))


def test_quota_lowered_after_earlier_requests_is_obeyed_and_leaves_no_reservation(
    relay, relay_server, member
):
    """The relay's worker remembers the key with a $1 quota and reserves against that limit in
    the same round trip as it reads the snapshot; the snapshot says $0.01 now, so that
    reservation is given back and the request refused."""
    relay.primary.usage.output_tokens = 200  # CHARGE a request
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1")
    for count in (1, 2, 3):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
        usage_events(key=relay.key, count=count)

    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.01")
    refused = relay.call("POST", "/v1/messages", MESSAGE)

    assert refused.status == 402
    assert refused.json()["error"]["message"] == (
        "Quota used up: this key has spent $0.01 of its $0.01 limit. Ask your team lead to "
        "raise the key's quota."
    )
    assert held_reservations(relay_server[1].store, relay.key.pk) == {}


def test_quota_raised_after_a_refusal_is_obeyed_by_the_next_request(relay, member):
    relay.primary.usage.output_tokens = 200  # CHARGE a request
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.01")
    for count in (1, 2, 3):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
        usage_events(key=relay.key, count=count)
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 402  # $0.014 spent

    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1")

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_key_disabled_after_earlier_requests_gives_back_the_guessed_reservation(
    relay, relay_server, member
):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1")
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    usage_events(key=relay.key)

    services.api_key_update(key=relay.key, actor=member, status=ApiKey.Status.DISABLED)

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 403
    assert held_reservations(relay_server[1].store, relay.key.pk) == {}


async def receive_message() -> dict:
    """MESSAGE as the ASGI server hands a request body to the gate."""
    return {"type": "http.request", "body": json.dumps(MESSAGE).encode(), "more_body": False}


def gate_check(gate: Gate, store, relay):
    """MESSAGE through `gate`, as the relay's worker checks it."""
    return gate.check(
        store,
        plaintext=relay.plaintext,
        receive=receive_message,
        headers=[],
        client_ip="127.0.0.1",
        counts_output=True,
        max_body_bytes=1 << 20,
    )


class CountingStore:
    """The relay's store, with the name of every call made to it, in order."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        method = getattr(self.store, name)

        async def counted(*args, **kwargs):
            self.calls.append(name)
            return await method(*args, **kwargs)

        return counted


def check_repeatedly(relay, count: int, changes: dict | None = None) -> list[tuple[list, object]]:
    """Run the gate `count` times on MESSAGE as one relay worker would (one store, one Gate),
    first running `changes[n]` (a service call, in a thread) before check n. Returns, for each
    check, the store calls it made and what it gave (Passed, or the RelayError raised)."""

    async def scenario() -> list[tuple[list, object]]:
        store = CountingStore(make_store())
        gate = Gate(PriceTable())
        outcomes = []
        try:
            for number in range(count):
                if changes and number in changes:
                    await run_db(changes[number])
                store.calls.clear()
                try:
                    outcome = await gate_check(gate, store, relay)
                except RelayError as error:
                    outcome = error
                outcomes.append((list(store.calls), outcome))
            return outcomes
        finally:
            await store.store.close()

    return asyncio.run(scenario())


def test_a_warm_key_with_a_quota_costs_one_store_call_before_forwarding(relay, member):
    """On Redis, get_key_state_and_admit is one round trip (tests/proxy/test_redis_client.py:
    its commands go out in one write)."""
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1")

    def raise_quota():  # a change made elsewhere: the guess is now wrong
        services.api_key_update(key=relay.key, actor=member, quota_limit_usd="2")

    outcomes = check_repeatedly(relay, 4, {2: raise_quota})

    assert [passed.state.quota_limit_usd for _, passed in outcomes] == [
        "1.00",
        "1.00",
        "2.00",
        "2.00",
    ]
    assert {passed.state.key_id for _, passed in outcomes} == {relay.key.pk}
    first, warm, changed, warm_again = [calls for calls, _ in outcomes]
    # A key this process has not seen: its snapshot first (built on the miss, stored if the
    # key's generation did not move meanwhile), then admission (the running total is rebuilt
    # once).
    assert first[:3] == ["get_key_state", "key_state_generation", "put_key_state"]
    assert set(first[3:]) == {"admit"}
    assert warm == ["get_key_state_and_admit"]
    # The guess (a $1 limit) was admitted; the fresh snapshot says $2, so that reservation is
    # given back and the admission made again with what the snapshot says.
    assert changed == [
        "get_key_state_and_admit",
        "key_state_generation",
        "put_key_state",
        "release",
        "admit",
    ]
    assert warm_again == ["get_key_state_and_admit"]


def test_a_key_without_a_quota_reads_only_its_snapshot(relay):
    _, (calls, passed) = check_repeatedly(relay, 2)

    assert passed.state.key_id == relay.key.pk
    assert calls == ["get_key_state"]


def test_a_key_refused_last_time_reads_its_snapshot_first_and_reserves_nothing(relay, member):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1")

    def disable():
        services.api_key_update(key=relay.key, actor=member, status=ApiKey.Status.DISABLED)

    (_, passed), (second, refused), (third, refused_again) = check_repeatedly(
        relay, 3, {1: disable}
    )

    assert passed.state.key_id == relay.key.pk
    # Remembered as enabled: admitted with the snapshot read, then refused on the fresh
    # snapshot, and the reservation given back.
    assert second == ["get_key_state_and_admit", "key_state_generation", "put_key_state", "release"]
    assert (refused.status, refused.code) == (403, "key_disabled")
    # Remembered as disabled: the snapshot alone, as for a key never seen.
    assert third == ["get_key_state"]
    assert (refused_again.status, refused_again.code) == (403, "key_disabled")


def reservations_around_a_cancel(relay, stick) -> tuple[dict, dict]:
    """Check MESSAGE in a task, cancel it where `stick(store, gate)` made it stick (its
    coroutine returns an event set once the check is stuck there), and return the key's
    reservations just before the cancel and after it."""

    async def scenario() -> tuple[dict, dict]:
        store = make_store()
        gate = Gate(PriceTable())
        try:
            stuck = await stick(store, gate)
            task = asyncio.create_task(gate_check(gate, store, relay))
            await asyncio.wait_for(stuck.wait(), timeout=10)
            held = await run_db(lambda: held_reservations(store, relay.key.pk))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return held, await run_db(lambda: held_reservations(store, relay.key.pk))
        finally:
            await store.close()

    return asyncio.run(scenario())


def test_a_request_cancelled_in_the_gate_gives_its_reservation_back(relay, member, monkeypatch):
    """The request's task is cancelled (a worker shutting down, a server timeout) after its
    admission, here while the rate limit is being checked: the reservation is released, not
    left to block the key until its hold expires."""
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1", rate_limit="10/m")

    async def in_the_rate_check(store, gate) -> asyncio.Event:
        checking = asyncio.Event()

        async def stuck_rate_check(state):
            checking.set()
            await asyncio.Event().wait()

        monkeypatch.setattr(gate_module, "check_rate", stuck_rate_check)
        return checking

    held, after = reservations_around_a_cancel(relay, in_the_rate_check)

    assert len(held) == 1
    assert after == {}


def test_a_request_cancelled_during_the_pipelined_admission_gives_its_reservation_back(
    relay, member
):
    """A warm key's snapshot read and admission go out together. Cancelled before their answer
    is read, the gate cannot know whether the admission was made: it releases it anyway."""
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1")

    async def before_the_answer_is_read(store, gate) -> asyncio.Event:
        first = await gate_check(gate, store, relay)  # the key is now remembered
        await store.release(key_id=relay.key.pk, hold_id=first.hold_id)
        admitted = asyncio.Event()
        pipelined = store.get_key_state_and_admit

        async def admitted_then_stuck(*args):
            await pipelined(*args)
            admitted.set()
            await asyncio.Event().wait()  # the answer is never read

        store.get_key_state_and_admit = admitted_then_stuck
        return admitted

    held, after = reservations_around_a_cancel(relay, before_the_answer_is_read)

    assert len(held) == 1
    assert after == {}
