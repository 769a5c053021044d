"""Real-time quota through the relay: admission-time reservations bound the overshoot under
concurrency; the running total survives a cache loss; last_used_at stays fresh cheaply."""

import asyncio
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal

import anthropic
import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from billing import ledger
from billing.models import ModelPrice, UsageEvent
from billing.pricing import PriceRow
from billing.services import recording, settle_usage
from core import keyspace
from keys import services
from keys.models import ApiKey
from proxy.body import parse_body
from proxy.errors import RelayError
from proxy.gate import Gate
from proxy.keystate import build_key_state, parse_key_state
from proxy.prices import PriceTable
from proxy.quota import Admission, Refused, admission_plan, estimate_charge_units
from proxy.store import make_store, run_db
from tests.threads import join, start_thread

from .conftest import CLAUDE, GPT, quota_plan, usage_events
from .fake_upstream import Usage

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
# (rounded up) input tokens priced as 1-hour cache writes (6 > 3.75 > 3 $/MTok) plus max_tokens
# of output, x 1.5.
_BODY_BYTES = len(json.dumps(MESSAGE, separators=(",", ":")))
ESTIMATE = (Decimal(-(-_BODY_BYTES // 4)) * Decimal("6") + 200 * 15) / 10**6 * Decimal("1.5")


@pytest.mark.parametrize(
    ("field", "asked", "output_tokens"),
    [
        ("max_tokens", 300, 300),  # Anthropic's, and Chat Completions' older name
        ("max_completion_tokens", 300, 300),  # Chat Completions'
        ("max_output_tokens", 300, 300),  # the Responses API's
        ("max_tokens", 50_000, 16_384),  # more than the model writes: what it writes
        (None, None, 16_384),  # optional in both OpenAI APIs: what the model can write
    ],
)
def test_the_reservation_counts_the_output_limit_each_api_names(relay, field, asked, output_tokens):
    """Before, a request without a limit reserved 4,096 output tokens while the model could
    write 16,384: $2.13 spent against a $0.50 quota with 60 concurrent requests."""
    state = parse_key_state(build_key_state(relay.key.digest))
    only_output = PriceRow(
        "m", Decimal(0), Decimal(1), Decimal(0), Decimal(0), max_output_tokens=16_384
    )  # $1 / MTok
    payload = {"model": "m", **({field: asked} if field else {})}
    body = asyncio.run(parse_body(json.dumps(payload).encode()))

    units, input_units = estimate_charge_units(
        state, only_output, body, output_field="max_completion_tokens"
    )

    assert units == ledger.usd_to_units(Decimal(output_tokens) / 10**6 * Decimal("1.5"))
    assert input_units == 0


@pytest.mark.parametrize(
    ("input_price", "write_5m", "write_1h", "reserved_per_mtok"),
    [
        ("3", "3.75", "6", "6"),  # Claude: 1-hour writes cost most
        ("3", "3.75", "0", "3.75"),  # no 1-hour price: priced as 5-minute writes
        ("3", "3.75", "3.5", "3.75"),  # a 1-hour price below the 5-minute one
        ("2.50", "0", "0", "2.50"),  # OpenAI: writing the cache is free
        ("3", "2", "2.5", "3"),  # writes cheaper than input
    ],
    ids=["one-hour", "no-one-hour-price", "five-minutes-dearer", "no-writes", "input-dearest"],
)
def test_the_reservation_prices_input_at_the_dearest_class_it_may_be_billed_in(
    relay, input_price, write_5m, write_1h, reserved_per_mtok
):
    state = parse_key_state(build_key_state(relay.key.digest))
    price = PriceRow(
        "m",
        Decimal(input_price),
        Decimal(0),
        Decimal(write_5m),
        Decimal(0),
        cache_write_1h_per_mtok=Decimal(write_1h),
    )
    body = asyncio.run(parse_body(b'{"model":"m","x":"' + b"y" * 3980 + b'"}'))  # 4,000 bytes

    units, input_units = estimate_charge_units(state, price, body, output_field=None)

    # 1,000 input tokens, x 1.5.
    assert (
        units
        == input_units
        == ledger.usd_to_units(1000 * Decimal(reserved_per_mtok) / 10**6 * Decimal("1.5"))
    )


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
    # Full price, or less for the last ones admitted with their output limit lowered to what
    # the quota had left (the fake upstream, like a vendor, keeps to the limit it is sent).
    assert all(event.charged_usd <= CHARGE for event in events)
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
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.02")
    for count in (1, 2):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
        usage_events(key=relay.key, count=count)
    settle_usage()

    cache.clear()  # Redis flushed or restarted, or local memory lost

    # Settled 2 x 0.004671 = 0.009342: the $0.010658 left pays for two more requests in full
    # (ESTIMATE each); then what is left pays for less than the input and 64 output tokens.
    for count in (3, 4):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
        usage_events(key=relay.key, count=count)
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 402
    assert ledger.spend_total(relay.key.pk) == ledger.usd_to_units(CHARGE * 4)


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
    def last_used_at(expected, seconds=5.0):
        # Refreshed just after the rows commit (billing.services.recording): waited for.
        deadline = time.monotonic() + seconds
        while True:
            relay.key.refresh_from_db()
            if relay.key.last_used_at == expected or time.monotonic() > deadline:
                return relay.key.last_used_at
            time.sleep(0.02)

    assert relay.key.last_used_at is None
    relay.call("POST", "/v1/messages", MESSAGE)
    [first] = usage_events(key=relay.key)
    assert last_used_at(first.created_at) == first.created_at

    relay.call("POST", "/v1/messages", MESSAGE)
    second = usage_events(key=relay.key, count=2)[-1]
    assert last_used_at(second.created_at, seconds=0.5) == first.created_at

    stale = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.filter(pk=relay.key.pk).update(last_used_at=stale)
    recording._last_used_refreshed.clear()  # another process, with no memory of this key
    relay.call("POST", "/v1/messages", MESSAGE)
    third = usage_events(key=relay.key, count=3)[-1]
    assert last_used_at(third.created_at) == third.created_at
    assert UsageEvent.objects.filter(key=relay.key).count() == 3


# --- one round trip: the snapshot read and the admission sent together --------------------


def held_reservations(store, key: ApiKey) -> dict:
    """The quota reservations the key holds now, in Redis or in the relay's local `store`."""
    name = keyspace.reservations(key.team_id, key.pk)
    if settings.REDIS is not None:
        with settings.REDIS.sync_client() as client:
            held = client.hgetall(name)
        held.pop(keyspace.HOLDS_SUM.encode(), None)  # their sum, kept beside them
        return held
    return dict(store._reservations.get(name, {}))


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
    assert held_reservations(relay_server[1].store, relay.key) == {}


def test_quota_raised_after_a_refusal_is_obeyed_by_the_next_request(relay, member):
    relay.primary.usage.output_tokens = 200  # CHARGE a request
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.01")
    for count in (1, 2):
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
        usage_events(key=relay.key, count=count)
    # $0.009342 spent: what is left cannot pay for the input and 64 output tokens.
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 402

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
    assert held_reservations(relay_server[1].store, relay.key) == {}


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
        output_field="max_tokens",
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
            held = await run_db(lambda: held_reservations(store, relay.key))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return held, await run_db(lambda: held_reservations(store, relay.key))
        finally:
            await store.close()

    return asyncio.run(scenario())


def test_a_request_cancelled_in_the_gate_gives_its_reservation_back(relay, member):
    """The request's task is cancelled (a worker shutting down, a server timeout) with its
    admission made but its answer not read: the gate cannot know whether it was made, so it
    releases it, rather than leave it to block the key until its hold expires."""
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1", rate_limit="10/m")

    async def after_the_admission(store, gate) -> asyncio.Event:
        admitted = asyncio.Event()
        admit = store.admit

        async def admitted_then_stuck(*args):
            admission = await admit(*args)
            if not admission.admitted:  # the running total was missing: rebuilt, asked again
                return admission
            admitted.set()
            await asyncio.Event().wait()  # the answer is never read

        store.admit = admitted_then_stuck
        return admitted

    held, after = reservations_around_a_cancel(relay, after_the_admission)

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
        plan = admission_plan(first.state, first.price, first.body, output_field="max_tokens")
        await store.release(plan, first.hold_id)
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


# --- a request's output limit lowered to what the quota pays for ---------------------------

CHAT_WITHOUT_LIMIT = {"model": GPT, "messages": [{"role": "user", "content": "Write a lot."}]}
# gpt-4o writes at most 16,384 tokens; at $10 / MTok x 1.5 that is $0.24576.
GPT_MAX_OUTPUT = 16_384


@pytest.fixture
def unbounded_gpt(relay):
    """The model writes everything it may: the request's limit, else its maximum."""
    ModelPrice.objects.filter(model=GPT).update(max_output_tokens=GPT_MAX_OUTPUT)
    relay.primary.usage = Usage(
        input_tokens=5, output_tokens=GPT_MAX_OUTPUT, cache_creation_tokens=0, cache_read_tokens=0
    )
    return relay


def test_a_request_the_quota_cannot_pay_in_full_goes_with_a_lowered_limit(unbounded_gpt, member):
    relay = unbounded_gpt
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.05")

    response = relay.call("POST", "/v1/chat/completions", CHAT_WITHOUT_LIMIT)

    assert response.status == 200
    lowered = int(response.headers["x-hcai-output-limit-lowered"])
    [forwarded] = relay.primary.requests
    assert json.loads(forwarded.body)["max_completion_tokens"] == lowered
    # $0.05 pays for 3,333 output tokens at $0.000015 each, less what the input may cost.
    assert 3_300 < lowered < 3_334
    [event] = usage_events(key=relay.key)
    assert event.output_tokens == lowered
    assert event.charged_usd <= Decimal("0.05")


def test_a_request_the_quota_can_pay_in_full_is_sent_unchanged(unbounded_gpt, member):
    relay = unbounded_gpt
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="5")

    response = relay.call("POST", "/v1/chat/completions", CHAT_WITHOUT_LIMIT)

    assert response.status == 200
    assert "x-hcai-output-limit-lowered" not in response.headers
    [forwarded] = relay.primary.requests
    assert json.loads(forwarded.body) == CHAT_WITHOUT_LIMIT


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_concurrent_requests_without_a_limit_never_pass_the_quota(unbounded_gpt, member, path):
    """The issue's trial: 60 concurrent requests that set no output limit, on a $0.50 quota.
    Before, each reserved 4,096 output tokens and wrote 16,384: $2.13 was spent. Now each
    reserves what the model can write, or what is left with its limit lowered to match."""
    relay = unbounded_gpt
    relay.primary.pause_seconds = 0.02
    limit = Decimal("0.50")
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd=limit)
    body = CHAT_WITHOUT_LIMIT if path.endswith("completions") else {"model": GPT, "input": "Hi"}
    statuses: list = []
    errors: list[BaseException] = []
    join(
        [
            start_thread(lambda: statuses.append(relay.call("POST", path, body)), errors)
            for _ in range(60)
        ],
        timeout=60,
    )

    assert errors == []
    refusals = {
        response.json()["error"]["message"] for response in statuses if response.status != 200
    }
    statuses = [response.status for response in statuses]
    admitted = statuses.count(200)
    assert sorted(set(statuses)) == [200, 429]  # OpenAI's status for insufficient_quota
    events = usage_events(key=relay.key, count=admitted, timeout=10)
    total = sum(event.charged_usd for event in events)
    assert len(events) == admitted >= 3
    assert total <= limit
    # Refused while others were in progress: the message says where the rest of the money is.
    assert any("requests in progress hold $" in message for message in refusals)


@pytest.mark.parametrize(
    ("spent", "estimate", "minimum", "admitted", "held"),
    [
        (0, 400, 100, True, 400),  # room for all of it
        (700, 400, 100, True, 300),  # room for less: what is left
        (950, 400, 100, False, 0),  # less left than the minimum
        (950, 40, 40, True, 40),  # a small request fits
        (1_000, 0, 0, False, 0),  # nothing left
    ],
)
def test_an_admission_holds_what_is_left_down_to_its_minimum(
    spent, estimate, minimum, admitted, held
):
    plan = quota_plan(424_242, limit_units=1_000, estimate_units=estimate, minimum_units=minimum)

    async def scenario():
        store = make_store()
        try:
            ledger.spend_totals().add(keyspace.spend_total(plan.team_id, plan.key_id), spent, 60)
            return await store.admit(plan, "hold-1")
        finally:
            await store.close()

    admission = asyncio.run(scenario())

    if admitted:
        assert admission == Admission(True, held_units=held)
    else:
        assert admission == Admission(False, spent, 0, refused=Refused.SPEND, limit=0)
