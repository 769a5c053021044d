"""The gate: every check a request passes before it is forwarded, in the order the relay
issue's table gives them, each refusing with its own status and message (proxy.errors).

    credentials -> known key -> enabled -> not expired -> client IP -> model allowed and
    priced -> quota -> rate limit -> well-formed body

The body is read before the model check (the model is in it), but a malformed or oversized
body is refused only in its row of the table, after quota and rate limit.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.utils import timezone
from django_ratelimit.core import get_usage

from billing.ledger import units_to_usd, usd_to_units
from billing.pricing import PriceRow, price_usage
from keys.models import KEY_PREFIX, digest_key

from . import errors
from .keystate import (
    KEY_STATE_SECONDS,
    UNKNOWN_KEY_SECONDS,
    UNKNOWN_MARKER,
    KeyState,
    build_key_state,
    parse_key_state,
)
from .prices import PriceTable
from .store import LocalStore, RedisStore, rebuild_spend_total, run_db
from .usage import approx_tokens

# A key is KEY_PREFIX + 43 URL-safe characters; anything far from that shape is refused
# without touching the cache.
_MAX_KEY_LENGTH = 200
# Output tokens reserved for a request that does not say its max_tokens (OpenAI's is optional).
DEFAULT_MAX_TOKENS = 4096
# How long a reservation may outlive its request's longest timeout before it is dropped.
_HOLD_MARGIN_SECONDS = 60


def credential(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from x-api-key, else from Authorization: Bearer (Claude Code's
    ANTHROPIC_AUTH_TOKEN). None when neither carries anything."""
    api_key = bearer = None
    for name, value in headers:
        if name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
        elif name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            bearer = token.strip() if scheme.lower() == "bearer" else value.decode("latin-1")
    return api_key or bearer or None


async def key_state(store: LocalStore | RedisStore, plaintext: str) -> KeyState:
    """The key's snapshot: one cache read when warm; built in a thread on a miss.

    Looked up by the SHA-256 digest, so timing can tell an attacker at most something about a
    digest, never about a key."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > _MAX_KEY_LENGTH:
        raise errors.invalid_key()
    digest = digest_key(plaintext)
    raw = await store.get_key_state(digest)
    if raw is None:
        raw = await run_db(build_key_state, digest)
        seconds = UNKNOWN_KEY_SECONDS if raw == UNKNOWN_MARKER else KEY_STATE_SECONDS
        await store.put_key_state(digest, raw, seconds)
    state = parse_key_state(raw)
    if state is None:
        raise errors.invalid_key()
    return state


def check_key(state: KeyState, now: datetime) -> None:
    if not state.enabled:
        raise errors.key_disabled()
    # Checked here, at request time: the expire_keys task flips the status only every minute.
    if state.expires_at is not None and state.expires_at <= now:
        shown = timezone.localtime(state.expires_at)
        raise errors.key_expired(f"{shown:%Y-%m-%d %H:%M} {shown.tzname()}")


def check_ip(state: KeyState, address: str) -> None:
    if not state.allows_ip(address):
        raise errors.ip_not_allowed(address)


async def check_model(state: KeyState, model: str, prices: PriceTable) -> PriceRow:
    if not state.group_usable:
        raise errors.model_not_allowed(
            f"Group “{state.group_name}” of this key is not active or no longer available to "
            "its team, so no model can be used. Ask your team lead to move the key to "
            "another group."
        )
    if not state.allows_model(model):
        allowed = ", ".join(state.model_patterns) or "none"
        raise errors.model_not_allowed(
            f"Model “{model}” is not allowed in group “{state.group_name}” (allowed: {allowed})."
        )
    price = await prices.lookup(model)
    if price is None:
        raise errors.model_not_allowed(
            f"Model “{model}” has no price yet, so group “{state.group_name}” cannot serve "
            "it. Ask an administrator to add a price for it."
        )
    return price


@dataclass(frozen=True, slots=True)
class Body:
    raw: bytes
    payload: dict | None
    error: errors.RelayError | None

    @property
    def model(self) -> str | None:
        model = (self.payload or {}).get("model")
        return model if isinstance(model, str) and model else None


async def read_body(
    receive: Callable[[], Awaitable[dict]], headers: list[tuple[bytes, bytes]], limit: int
) -> Body:
    """Read the request body, stopping once it exceeds `limit` (never holding more)."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return Body(b"", None, errors.request_too_large(limit))
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return Body(b"", None, errors.request_too_large(limit))
        parts.append(chunk)
        if not message.get("more_body"):
            break
    raw = b"".join(parts)
    try:
        payload = json.loads(raw)
    except ValueError as error:
        detail = str(error) if raw else "the body is empty"
        return Body(raw, None, errors.invalid_request("invalid_json", f"Invalid JSON: {detail}."))
    if not isinstance(payload, dict):
        return Body(
            raw,
            None,
            errors.invalid_request("invalid_json", "The request body must be a JSON object."),
        )
    body = Body(raw, payload, None)
    if body.model is None:
        return Body(
            raw,
            payload,
            errors.invalid_request(
                "missing_model", "The request body must name a model in its “model” field."
            ),
        )
    return body


def estimate_charge_units(
    state: KeyState, price: PriceRow, body: Body, *, counts_output: bool
) -> int:
    """A deliberately high estimate of the request's charge, reserved at admission.

    Input: the whole request body's approximate tokens (proxy.usage.approx_tokens; its JSON
    syntax makes that generous), priced as cache writes when those cost more than plain input,
    since the relay cannot know which the upstream will bill. Output: the request's
    max_tokens, which the upstream never exceeds."""
    output = 0
    if counts_output:
        payload = body.payload or {}
        requested = payload.get("max_tokens") or payload.get("max_completion_tokens")
        output = requested if isinstance(requested, int) and requested > 0 else DEFAULT_MAX_TOKENS
    input_tokens = approx_tokens(body.raw)
    as_cache_writes = price.cache_write_per_mtok > price.input_per_mtok
    _, charged = price_usage(
        prices=price,
        input_tokens=0 if as_cache_writes else input_tokens,
        cache_creation_tokens=input_tokens if as_cache_writes else 0,
        output_tokens=output,
        multiplier=state.multiplier,
    )
    return usd_to_units(charged)


async def admit_quota(
    store: LocalStore | RedisStore, state: KeyState, request_id: str, estimate_units: int
) -> bool:
    """Reserve the estimate against the key's quota; raise the quota error when it is used up.
    Returns whether a reservation was made (keys without a quota make none)."""
    if not state.quota_limit_units:
        return False
    hold = max((channel.timeout_seconds for channel in state.channels), default=600)
    for _ in range(2):
        admission = await store.admit(
            key_id=state.key_id,
            request_id=request_id,
            estimate_units=estimate_units,
            limit_units=state.quota_limit_units,
            hold_seconds=hold + _HOLD_MARGIN_SECONDS,
        )
        if admission is not None:
            break
        # No running total in the cache (first use, eviction, flush): rebuild it from the
        # database, once, then admit against it.
        await rebuild_spend_total(state.key_id)
    else:
        raise RuntimeError(f"Spend total of key {state.key_id} vanished while it was rebuilt.")
    if not admission.admitted:
        spent = units_to_usd(admission.spent_units).quantize(Decimal("0.01"))
        raise errors.quota_used_up(f"{spent:.2f}", state.quota_limit_usd)
    return True


_RATE_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


async def check_rate(state: KeyState) -> None:
    """django-ratelimit's counters, keyed by the key's id (so rotating a key does not reset
    it), in the shared cache. It is sync-only, so this thread hop is paid only by keys that
    have a rate limit."""
    if not state.rate_limit:
        return
    key_id = str(state.key_id)
    usage = await sync_to_async(get_usage, thread_sensitive=False)(
        None,
        group="relay",
        key=lambda group, request: key_id,
        rate=state.rate_limit,
        increment=True,
    )
    if usage is not None and usage["should_limit"]:
        count, _, period = state.rate_limit.partition("/")
        retry_after = max(1, usage["time_left"])
        raise errors.rate_limited(f"{count} requests per {_RATE_NAMES[period]}", retry_after)
