"""Real-time quota through the relay: admission-time reservations bound the overshoot under
concurrency; the running total survives a cache loss; last_used_at stays fresh cheaply."""

import json
import threading
from datetime import timedelta
from decimal import Decimal

import anthropic
from django.core.cache import cache
from django.utils import timezone

from billing import ledger
from billing.models import UsageEvent
from billing.services import recording, settle_usage
from keys import services
from keys.models import ApiKey

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


def test_concurrent_streams_overshoot_at_most_one_request(relay, member):
    """30 concurrent streams on a key whose remaining quota covers about 6 of them.

    Each admission reserves a high estimate of its charge, and a request is admitted only
    while total + reservations < limit; so the final total exceeds the limit by less than one
    request's estimate, however many requests arrive at once."""
    relay.primary.usage.output_tokens = 200
    relay.primary.pause_seconds = 0.03  # each stream lasts ~0.3 s: all 30 overlap
    limit = Decimal("0.03")
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd=limit)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        client = relay.anthropic()
        try:
            with client.messages.stream(**MESSAGE) as stream:
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
