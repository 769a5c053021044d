"""Every row of the gate's table, in both API shapes, with exact status, type, code and message;
and changes made through the services obeyed by the very next request."""

import json
import socket
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import OperationalError
from django.utils import timezone

from billing.models import UsageEvent
from core.keyspace import snapshot_cache_key
from keys import services
from keys.models import ApiKey
from proxy import channels
from proxy.errors import RelayError
from proxy.gate import check_enabled
from proxy.keystate import build_key_state, parse_key_state
from proxy.store import RedisStore
from tests.factories import GroupFactory
from tests.threads import join, start_thread

from .conftest import CLAUDE, GPT, usage_events

MESSAGE = {"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
CHAT = {"model": GPT, "messages": [{"role": "user", "content": "Hi"}]}
RESPONSE = {"model": GPT, "input": "Hi"}


def assert_anthropic_error(response, status: int, error_type: str, message: str) -> None:
    assert response.status == status, response.body
    assert response.json() == {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": response.headers["request-id"],
    }
    assert response.headers["x-request-id"] == response.headers["request-id"]


def assert_openai_error(response, status: int, error_type: str, code: str, message: str) -> None:
    assert response.status == status, response.body
    assert response.json() == {"error": {"message": message, "type": error_type, "code": code}}
    assert response.headers["x-request-id"].startswith("req_")


def assert_nothing_forwarded_or_recorded(relay) -> None:
    assert relay.primary.requests == []
    time.sleep(0.05)  # Recording happens after the response; give a stray one time to land.
    assert usage_events(timeout=0, key=relay.key) == []


# --- credentials ----------------------------------------------------------------------------

MISSING = (
    "No API key provided. Send your key in the x-api-key header or as Authorization: Bearer <key>."
)
INVALID = (
    "Invalid API key. Check that you copied the whole key (it starts with sk-hc-); "
    "a rotated or deleted key no longer works."
)


@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"authorization": "Bearer "}])
def test_no_credentials(relay, headers):
    anthropic = relay.call("POST", "/v1/messages", MESSAGE, headers, key=None)
    openai = relay.call("POST", "/v1/chat/completions", CHAT, headers, key=None)
    responses = relay.call("POST", "/v1/responses", RESPONSE, headers, key=None)

    assert_anthropic_error(anthropic, 401, "authentication_error", MISSING)
    assert_openai_error(openai, 401, "invalid_request_error", "missing_api_key", MISSING)
    assert_openai_error(responses, 401, "invalid_request_error", "missing_api_key", MISSING)
    assert_nothing_forwarded_or_recorded(relay)


@pytest.mark.parametrize(
    "damage",
    [
        lambda key: key[:-1],
        lambda key: key[:10],
        lambda key: key.upper(),
        lambda key: key[:12] + " " + key[12:],
        lambda key: key + "x",
        lambda key: "sk-hc-" + "A" * 43,
        lambda key: "not-a-key",
    ],
    ids=["one-short", "cut-short", "upper-cased", "inner-space", "one-long", "unknown", "garbage"],
)
def test_unknown_or_malformed_key(relay, damage):
    damaged = damage(relay.plaintext)

    anthropic = relay.call("POST", "/v1/messages", MESSAGE, key=damaged)
    openai = relay.call(
        "POST", "/v1/chat/completions", CHAT, {"authorization": f"Bearer {damaged}"}, key=None
    )

    assert_anthropic_error(anthropic, 401, "authentication_error", INVALID)
    assert_openai_error(openai, 401, "invalid_request_error", "invalid_api_key", INVALID)
    assert_nothing_forwarded_or_recorded(relay)


def test_rotated_key_refused_at_once(relay, member):
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    rotated = services.api_key_rotate(key=relay.key, actor=member)

    assert_anthropic_error(
        relay.call("POST", "/v1/messages", MESSAGE), 401, "authentication_error", INVALID
    )
    assert relay.call("POST", "/v1/messages", MESSAGE, key=rotated.plaintext).status == 200


# --- the key's own state --------------------------------------------------------------------

DISABLED = (
    "This key is disabled. Ask your team lead to enable it again, "
    "or create a new key in the portal."
)


def test_disabled_key_obeyed_on_next_request(relay, member):
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200  # the state is now cached
    services.api_key_disable(key=relay.key, actor=member)

    anthropic = relay.call("POST", "/v1/messages", MESSAGE)
    openai = relay.call("POST", "/v1/chat/completions", CHAT)
    responses = relay.call("POST", "/v1/responses", RESPONSE)

    assert_anthropic_error(anthropic, 403, "permission_error", DISABLED)
    assert_openai_error(openai, 403, "permission_error", "key_disabled", DISABLED)
    assert_openai_error(responses, 403, "permission_error", "key_disabled", DISABLED)
    assert len(relay.primary.requests) == 1
    services.api_key_enable(key=relay.key, actor=member)
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_a_key_disabled_when_it_expired_says_how_to_bring_it_back(relay):
    expired = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.filter(pk=relay.key.pk).update(expires_at=expired)
    assert services.api_key_expire(key=relay.key)
    shown = timezone.localtime(expired)
    message = (
        f"This key was disabled automatically when it expired on {shown:%Y-%m-%d %H:%M} "
        f"{shown.tzname()}; ask your team lead to set a new expiration and enable it."
    )

    anthropic = relay.call("POST", "/v1/messages", MESSAGE)
    openai = relay.call("POST", "/v1/chat/completions", CHAT)

    assert_anthropic_error(anthropic, 403, "permission_error", message)
    assert_openai_error(openai, 403, "permission_error", "key_disabled", message)
    assert_nothing_forwarded_or_recorded(relay)


def test_a_snapshot_from_before_the_expiry_reason_gives_the_plain_refusal(relay):
    """Snapshots already in the cache when this field arrived have no `disabled_by_expiry`."""
    expired = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.filter(pk=relay.key.pk).update(expires_at=expired)
    services.api_key_expire(key=relay.key)
    snapshot = json.loads(build_key_state(relay.key.digest))
    assert snapshot.pop("disabled_by_expiry") is True

    state = parse_key_state(json.dumps(snapshot).encode())

    assert state.disabled_by_expiry is False
    with pytest.raises(RelayError) as refused:
        check_enabled(state)
    assert refused.value.message == DISABLED


def expired_message(moment) -> str:
    shown = timezone.localtime(moment)
    return (
        f"This key expired on {shown:%Y-%m-%d %H:%M} UTC. Ask your team lead to extend its "
        "expiration, or create a new key in the portal."
    )


def test_expired_key_refused_at_request_time(relay, member):
    """The key is still `enabled` (expire_keys has not run): the gate checks the time itself,
    even with the key's state cached from before the expiry."""
    soon = timezone.now() + timedelta(seconds=1.5)
    services.api_key_update(key=relay.key, actor=member, expires_at=soon)
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    time.sleep(max(0.0, (soon - timezone.now()).total_seconds()) + 0.05)

    anthropic = relay.call("POST", "/v1/messages", MESSAGE)
    openai = relay.call("POST", "/v1/chat/completions", CHAT)

    assert_anthropic_error(anthropic, 403, "permission_error", expired_message(soon))
    assert_openai_error(openai, 403, "permission_error", "key_expired", expired_message(soon))
    relay.key.refresh_from_db()
    assert relay.key.status == ApiKey.Status.ENABLED


def test_expiry_moved_to_the_past(relay):
    """Services refuse a past expiry, so it is set behind their back, the cache dropped as they
    would drop it."""
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    yesterday = timezone.now() - timedelta(days=1)
    ApiKey.objects.filter(pk=relay.key.pk).update(expires_at=yesterday)
    cache.delete(snapshot_cache_key(relay.key.digest))

    response = relay.call("POST", "/v1/messages", MESSAGE)

    assert_anthropic_error(response, 403, "permission_error", expired_message(yesterday))


def test_disabled_is_reported_before_expired(relay, member):
    services.api_key_disable(key=relay.key, actor=member)
    ApiKey.objects.filter(pk=relay.key.pk).update(expires_at=timezone.now() - timedelta(days=1))
    cache.delete(snapshot_cache_key(relay.key.digest))

    assert_anthropic_error(
        relay.call("POST", "/v1/messages", MESSAGE), 403, "permission_error", DISABLED
    )


def ip_message(address: str) -> str:
    return (
        f"Requests from {address} are not allowed for this key. Ask your team lead to add this "
        "address to the key's IP restriction."
    )


def test_ip_restriction_obeyed_on_next_request(relay, member):
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    services.api_key_update(
        key=relay.key, actor=member, allowed_ips="203.0.113.0/24, 2001:db8::/32"
    )

    anthropic = relay.call("POST", "/v1/messages", MESSAGE)
    openai = relay.call("POST", "/v1/chat/completions", CHAT)

    assert_anthropic_error(anthropic, 403, "permission_error", ip_message("127.0.0.1"))
    assert_openai_error(openai, 403, "permission_error", "ip_not_allowed", ip_message("127.0.0.1"))
    services.api_key_update(key=relay.key, actor=member, allowed_ips="127.0.0.0/8")
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(relay, member, settings):
    settings.TRUSTED_PROXIES = []
    services.api_key_update(key=relay.key, actor=member, allowed_ips="203.0.113.7")

    response = relay.call("POST", "/v1/messages", MESSAGE, {"x-forwarded-for": "203.0.113.7"})

    assert_anthropic_error(response, 403, "permission_error", ip_message("127.0.0.1"))
    assert relay.primary.requests == []


@pytest.mark.parametrize(
    "forwarded_for",
    ["203.0.113.7", "198.51.100.9, 203.0.113.7", "198.51.100.9, 203.0.113.7, 127.0.0.2"],
    ids=["single", "right-most-untrusted", "trusted-hops-skipped"],
)
def test_forwarded_for_from_trusted_proxy_is_used(relay, member, settings, forwarded_for):
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    services.api_key_update(key=relay.key, actor=member, allowed_ips="203.0.113.7")

    response = relay.call("POST", "/v1/messages", MESSAGE, {"x-forwarded-for": forwarded_for})

    assert response.status == 200
    [event] = usage_events(key=relay.key)
    assert event.client_ip == "203.0.113.7"
    # The client's address is not passed on to the vendor.
    assert "x-forwarded-for" not in relay.primary.requests[0].headers


def test_trusted_proxy_cannot_vouch_for_a_spoofed_left_hop(relay, member, settings):
    """Only the right-most untrusted hop counts: what the client wrote to the left of it is
    not believed, even through a trusted proxy."""
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    services.api_key_update(key=relay.key, actor=member, allowed_ips="203.0.113.7")

    response = relay.call(
        "POST", "/v1/messages", MESSAGE, {"x-forwarded-for": "203.0.113.7, 198.51.100.9"}
    )

    assert_anthropic_error(response, 403, "permission_error", ip_message("198.51.100.9"))


# --- model and group ------------------------------------------------------------------------


def test_model_outside_group_refused(relay):
    body = {**MESSAGE, "model": "gpt-4o"}
    relay.group.models = ["claude-*"]
    services.group_save(group=relay.group, actor=None)

    anthropic = relay.call("POST", "/v1/messages", body)
    openai = relay.call("POST", "/v1/chat/completions", CHAT)

    message = "Model “gpt-4o” is not allowed in group “Relay” (allowed: claude-*)."
    assert_anthropic_error(anthropic, 403, "permission_error", message)
    assert_openai_error(openai, 403, "permission_error", "model_not_allowed", message)
    assert_nothing_forwarded_or_recorded(relay)


def test_model_without_price_refused(relay):
    response = relay.call("POST", "/v1/messages", {**MESSAGE, "model": "claude-unpriced-9"})

    assert_anthropic_error(
        response,
        403,
        "permission_error",
        "Model “claude-unpriced-9” has no price yet, so group “Relay” cannot serve it. "
        "Ask an administrator to add a price for it.",
    )
    assert_nothing_forwarded_or_recorded(relay)


def test_dated_snapshot_priced_by_its_base_name(relay):
    response = relay.call("POST", "/v1/messages", {**MESSAGE, "model": CLAUDE + "-20250929"})

    assert response.status == 200
    [event] = usage_events(key=relay.key)
    assert event.charged_usd == Decimal("0.00044100")


def test_group_change_obeyed_on_next_request(relay, member, team):
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    gpt_only = GroupFactory(name="GPT only", models=["gpt-*"])
    services.api_key_update(key=relay.key, actor=member, group=gpt_only)

    response = relay.call("POST", "/v1/messages", MESSAGE)

    assert_anthropic_error(
        response,
        403,
        "permission_error",
        f"Model “{CLAUDE}” is not allowed in group “GPT only” (allowed: gpt-*).",
    )


def test_group_deactivated(relay):
    relay.group.is_active = False
    services.group_save(group=relay.group, actor=None)

    response = relay.call("POST", "/v1/messages", MESSAGE)

    assert_anthropic_error(
        response,
        403,
        "permission_error",
        "Group “Relay” of this key is not active or no longer available to its team, so no "
        "model can be used. Ask your team lead to move the key to another group.",
    )


# --- quota ----------------------------------------------------------------------------------

QUOTA = (
    "Quota used up: this key has spent ${spent} of its ${limit} limit. "
    "Ask your team lead to raise the key's quota."
)


def test_quota_used_up_by_settled_spend(relay, member):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1.00")
    ApiKey.objects.filter(pk=relay.key.pk).update(spent_usd=Decimal("1.00"))

    anthropic = relay.call("POST", "/v1/messages", MESSAGE)
    openai = relay.call("POST", "/v1/chat/completions", CHAT)

    message = QUOTA.format(spent="1.00", limit="1.00")
    assert_anthropic_error(anthropic, 402, "billing_error", message)
    assert_openai_error(openai, 429, "insufficient_quota", "insufficient_quota", message)
    assert_nothing_forwarded_or_recorded(relay)


def test_quota_sees_spend_without_the_settlement_task(relay, member):
    """Each request costs $0.004671; a $0.01 quota admits two, and the $0.000658 left then
    pays for less than a third one's input and 64 output tokens. No settlement task runs:
    each row is settled as it is written."""
    # (25 x 3 + 200 x 15 + 10 x 3.75 + 5 x 0.30) / 1e6 x 1.5
    relay.primary.usage.output_tokens = 200
    message = {**MESSAGE, "max_tokens": 200}
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="0.01")
    statuses = []
    for count in range(1, 4):
        statuses.append(relay.call("POST", "/v1/messages", message).status)
        usage_events(key=relay.key, count=min(count, 2))

    assert statuses == [200, 200, 402]
    events = UsageEvent.objects.filter(key=relay.key, settled_at__isnull=False)
    assert [event.charged_usd for event in events] == [Decimal("0.00467100")] * 2
    relay.key.refresh_from_db()
    assert relay.key.spent_usd == Decimal("0.00934200")


def test_quota_lowered_then_raised(relay, member):
    ApiKey.objects.filter(pk=relay.key.pk).update(spent_usd=Decimal("3.00"))
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="5")
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    usage_events(key=relay.key)

    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="2")
    lowered = relay.call("POST", "/v1/messages", MESSAGE)
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="10")
    raised = relay.call("POST", "/v1/messages", MESSAGE)

    assert_anthropic_error(lowered, 402, "billing_error", QUOTA.format(spent="3.00", limit="2.00"))
    assert raised.status == 200


def test_quota_is_checked_before_a_malformed_body(relay, member):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="1")
    ApiKey.objects.filter(pk=relay.key.pk).update(spent_usd=Decimal("2.5"))

    response = relay.call("POST", "/v1/messages", b"{not json")

    assert_anthropic_error(response, 402, "billing_error", QUOTA.format(spent="2.50", limit="1.00"))


# --- rate limit -----------------------------------------------------------------------------


def test_rate_limit(relay, member):
    services.api_key_update(key=relay.key, actor=member, rate_limit="2/m")

    statuses = [relay.call("POST", "/v1/messages", MESSAGE).status for _ in range(2)]
    anthropic = relay.call("POST", "/v1/messages", MESSAGE)
    openai = relay.call("POST", "/v1/chat/completions", CHAT)

    assert statuses == [200, 200]
    retry_after = int(anthropic.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert_anthropic_error(
        anthropic,
        429,
        "rate_limit_error",
        f"Rate limit exceeded: this key allows 2 requests per minute. "
        f"Retry after {retry_after} seconds.",
    )
    assert openai.status == 429
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(openai.headers["retry-after"]) <= 60
    assert len(relay.primary.requests) == 2


def test_rate_limit_survives_rotation(relay, member):
    services.api_key_update(key=relay.key, actor=member, rate_limit="1/h")
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    rotated = services.api_key_rotate(key=relay.key, actor=member)

    assert relay.call("POST", "/v1/messages", MESSAGE, key=rotated.plaintext).status == 429


# --- the body -------------------------------------------------------------------------------

NO_MODEL = "The request body must name a model in its “model” field."


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            b"{not json",
            "invalid_json",
            "Invalid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1).",
        ),
        (b"", "invalid_json", "Invalid JSON: the body is empty."),
        (b"[1, 2]", "invalid_json", "The request body must be a JSON object."),
        (b'{"max_tokens": 5}', "missing_model", NO_MODEL),
        (b'{"model": ""}', "missing_model", NO_MODEL),
    ],
    ids=["malformed", "empty", "not-an-object", "no-model", "empty-model"],
)
def test_bad_body(relay, body, code, message):
    anthropic = relay.call("POST", "/v1/messages", body)
    openai = relay.call("POST", "/v1/chat/completions", body)

    assert_anthropic_error(anthropic, 400, "invalid_request_error", message)
    assert_openai_error(openai, 400, "invalid_request_error", code, message)
    assert_nothing_forwarded_or_recorded(relay)


def test_body_over_the_limit(relay, settings):
    settings.RELAY_MAX_BODY_BYTES = 1024
    big = {**MESSAGE, "messages": [{"role": "user", "content": "x" * 2000}]}

    anthropic = relay.call("POST", "/v1/messages", big)
    openai = relay.call("POST", "/v1/chat/completions", {**big, "model": GPT})

    message = "The request body is larger than this relay's limit of 1024 bytes."
    assert_anthropic_error(anthropic, 413, "request_too_large", message)
    assert_openai_error(openai, 413, "invalid_request_error", "request_too_large", message)
    assert_nothing_forwarded_or_recorded(relay)


def test_large_body_under_the_default_limit_goes_through_unchanged(relay):
    """Claude Code's first request is about 115 KB; a few hundred KB is normal."""
    big = {**MESSAGE, "messages": [{"role": "user", "content": "y" * 400_000}]}
    raw = json.dumps(big, indent=1).encode()

    response = relay.call("POST", "/v1/messages?beta=true", raw)

    assert response.status == 200
    assert relay.primary.requests[0].body == raw
    assert relay.primary.requests[0].query == "beta=true"


def test_rate_limit_is_checked_before_a_malformed_body(relay, member):
    services.api_key_update(key=relay.key, actor=member, rate_limit="1/h")
    assert relay.call("POST", "/v1/messages", b"{").status == 400

    assert relay.call("POST", "/v1/messages", b"{").status == 429


# --- routing --------------------------------------------------------------------------------


def test_unknown_endpoint_and_wrong_method(relay):
    missing = relay.call("POST", "/v1/completions", {"model": GPT})
    wrong = relay.call("GET", "/v1/messages")

    assert_anthropic_error(
        missing,
        404,
        "not_found_error",
        "Unknown endpoint /v1/completions. This relay serves POST /v1/messages, "
        "POST /v1/messages/count_tokens, POST /v1/chat/completions, POST /v1/responses, "
        "GET /v1/models, GET /v1/models/{model_id}, GET /v1/key, "
        "GET /v1/dashboard/billing/subscription and GET /v1/dashboard/billing/usage.",
    )
    assert_anthropic_error(
        wrong, 405, "invalid_request_error", "GET is not allowed on /v1/messages; use POST."
    )
    assert wrong.headers["allow"] == "POST"


# --- listing and retrieving models ---------------------------------------------------------

MODEL_PATHS = ["/v1/models", f"/v1/models/{CLAUDE}"]


@pytest.mark.parametrize("path", MODEL_PATHS)
def test_model_endpoints_check_the_key_its_status_and_the_client_ip(relay, member, path):
    assert_anthropic_error(relay.call("GET", path, key=None), 401, "authentication_error", MISSING)
    assert_anthropic_error(
        relay.call("GET", path, key="sk-hc-" + "A" * 43), 401, "authentication_error", INVALID
    )
    services.api_key_update(key=relay.key, actor=member, allowed_ips="203.0.113.7")
    assert_anthropic_error(
        relay.call("GET", path), 403, "permission_error", ip_message("127.0.0.1")
    )
    services.api_key_disable(key=relay.key, actor=member)
    assert_anthropic_error(relay.call("GET", path), 403, "permission_error", DISABLED)
    assert_nothing_forwarded_or_recorded(relay)


@pytest.mark.parametrize("path", MODEL_PATHS)
def test_model_endpoints_are_get_only(relay, path):
    response = relay.call("POST", path, MESSAGE)

    assert_anthropic_error(
        response, 405, "invalid_request_error", f"POST is not allowed on {path}; use GET."
    )
    assert response.headers["allow"] == "GET"


def test_retrieving_a_model_outside_the_group_or_without_a_price_is_not_found(relay):
    relay.group.models = ["claude-*"]
    services.group_save(group=relay.group, actor=None)

    outside = relay.call("GET", f"/v1/models/{GPT}")
    unpriced = relay.call("GET", "/v1/models/claude-unpriced-9")
    unknown = relay.call("GET", "/v1/models/a%20b%2Fc")

    for response, model in [(outside, GPT), (unpriced, "claude-unpriced-9"), (unknown, "a b/c")]:
        assert_anthropic_error(
            response,
            404,
            "not_found_error",
            f"Model “{model}” is not available in group “Relay” of this key. "
            "GET /v1/models lists the models it can use.",
        )
    assert relay.call("GET", f"/v1/models/{CLAUDE}").json()["id"] == CLAUDE


def test_a_deactivated_group_lists_no_models_and_finds_none(relay):
    relay.group.is_active = False
    services.group_save(group=relay.group, actor=None)

    listing = relay.call("GET", "/v1/models")
    one = relay.call("GET", f"/v1/models/{CLAUDE}")

    assert listing.status == 200
    assert listing.json() == {
        "object": "list",
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }
    assert one.status == 404


def test_an_empty_model_id_is_an_unknown_endpoint(relay):
    response = relay.call("GET", "/v1/models/")

    assert response.status == 404
    assert response.json()["error"]["message"].startswith("Unknown endpoint /v1/models/.")


def test_portal_paths_still_reach_django(relay):
    response = relay.call("GET", "/healthz", key=None)

    assert response.status == 200
    assert response.json() == {"status": "ok"}


# --- the relay's own state unreachable ------------------------------------------------------

UNAVAILABLE = "The relay briefly cannot reach its own cache or database. Try again in a moment."


def test_unreachable_state_store_is_a_retryable_503(relay, relay_server):
    """Redis down: the key cannot be checked, so nothing is forwarded; the SDKs retry a 503."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    _, app = relay_server
    working = app._store
    app._store = RedisStore(dead_url)
    try:
        anthropic = relay.call("POST", "/v1/messages", MESSAGE)
        openai = relay.call("POST", "/v1/chat/completions", CHAT)
    finally:
        app._store = working

    assert_anthropic_error(anthropic, 503, "api_error", UNAVAILABLE)
    assert anthropic.headers["retry-after"] == "1"
    assert_openai_error(openai, 503, "api_error", "service_unavailable", UNAVAILABLE)
    assert_nothing_forwarded_or_recorded(relay)
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200


def test_a_hung_redis_is_a_retryable_503_in_well_under_a_second_each(
    relay, relay_server, private_redis
):
    """Redis stops answering without closing anything (SIGSTOP, as in a network partition).
    Before, requests waited 10-18 s: each waited 5 s for a reply, then queued behind the others'
    reconnects of 5 s each. Now every request's state has a deadline of half a second, and the
    requests arriving during a reconnect share it."""
    _, app = relay_server
    working = app._store
    app._store = RedisStore(private_redis.url)
    try:
        assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
        private_redis.pause()
        forwarded = len(relay.primary.requests)
        answers: list[tuple[int, float]] = []

        def call() -> None:
            started = time.monotonic()
            response = relay.call("POST", "/v1/messages", MESSAGE)
            answers.append((response.status, time.monotonic() - started))

        errors: list[BaseException] = []
        join([start_thread(call, errors) for _ in range(10)], timeout=30)
        private_redis.resume()
        recovered = relay.call("POST", "/v1/messages", MESSAGE)
    finally:
        app._store = working

    assert errors == []
    assert [status for status, _ in answers] == [503] * 10
    # Generous against a slow CI machine; the point is seconds, not the old 10-18.
    assert max(seconds for _, seconds in answers) < 3
    assert len(relay.primary.requests) == forwarded + 1  # only the request after the resume
    assert recovered.status == 200


def test_unreachable_database_for_the_channel_table_is_a_retryable_503(
    relay, relay_server, monkeypatch
):
    """A worker's first request (or the first after a channel edit) reads channel secrets from
    the database; with the database down that is the same retryable 503."""

    def database_down():
        raise OperationalError("connection refused")

    monkeypatch.setattr(channels, "_load", database_down)
    _, app = relay_server
    monkeypatch.setattr(app.forwarder.http, "channels", channels.ChannelTable())

    anthropic = relay.call("POST", "/v1/messages", MESSAGE)

    assert_anthropic_error(anthropic, 503, "api_error", UNAVAILABLE)
    assert relay.primary.requests == []
    [event] = usage_events(key=relay.key)
    assert (event.status_code, event.charged_usd) == (503, Decimal(0))
