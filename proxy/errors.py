"""The relay's refusals, written once and rendered in the caller's API shape.

Each refusal knows its status, its Anthropic error type and its OpenAI type and code, so the
gate raises one thing and the client gets the body its SDK expects: the request's dialect
renders it (proxy.dialects: AnthropicErrors, OpenAIErrors).
"""

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis.exceptions
from django.db import OperationalError

from .redis_client import RedisError

# The relay's own state cannot be reached: Redis (key state, quota; the rate limit's cache) or
# the database (a key or channel not loaded yet). Answered with relay_unavailable(), a
# retryable 503, which the SDKs retry.
STATE_UNAVAILABLE = (RedisError, redis.exceptions.ConnectionError, OperationalError)


@dataclass
class RelayError(Exception):
    status: int
    anthropic_type: str
    openai_type: str
    code: str
    message: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # When OpenAI's API answers this case with another status (quota: 429, not 402).
    openai_status: int | None = None
    # The key refused, when it is known (for the log line, never for the client).
    key_id: int | None = None
    # What the refusal is counted as (billing.refusals), when the code the client sees is
    # shared by several reasons (OpenAI's insufficient_quota for every spend limit).
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def for_key(self, key_id: int) -> "RelayError":
        """This refusal, naming the key it refused."""
        return dataclasses.replace(self, key_id=key_id)


def missing_credentials() -> RelayError:
    return RelayError(
        401,
        "authentication_error",
        "invalid_request_error",
        "missing_api_key",
        "No API key provided. Send your key in the x-api-key header "
        "or as Authorization: Bearer <key>.",
    )


def invalid_key() -> RelayError:
    # The same words for a malformed, unknown, rotated or deleted key: nothing here may tell
    # a caller whether some other key exists.
    return RelayError(
        401,
        "authentication_error",
        "invalid_request_error",
        "invalid_api_key",
        "Invalid API key. Check that you copied the whole key (it starts with sk-hc-); "
        "a rotated or deleted key no longer works.",
    )


def key_disabled(*, expired_at: str | None = None) -> RelayError:
    """`expired_at`: the key was disabled automatically when it expired, at that time."""
    message = (
        "This key is disabled. Ask your team lead to enable it again, "
        "or create a new key in the portal."
    )
    if expired_at is not None:
        message = (
            f"This key was disabled automatically when it expired on {expired_at}; ask your "
            "team lead to set a new expiration and enable it."
        )
    return RelayError(403, "permission_error", "permission_error", "key_disabled", message)


def key_expired(expired_at: str) -> RelayError:
    return RelayError(
        403,
        "permission_error",
        "permission_error",
        "key_expired",
        f"This key expired on {expired_at}. Ask your team lead to extend its expiration, "
        "or create a new key in the portal.",
    )


def ip_not_allowed(client_ip: str) -> RelayError:
    return RelayError(
        403,
        "permission_error",
        "permission_error",
        "ip_not_allowed",
        f"Requests from {client_ip} are not allowed for this key. Ask your team lead to add "
        "this address to the key's IP restriction.",
    )


def model_not_allowed(message: str) -> RelayError:
    return RelayError(403, "permission_error", "permission_error", "model_not_allowed", message)


def quota_used_up(spent: str, limit: str, *, held: str | None = None) -> RelayError:
    """`held`: what requests still in progress have reserved, when that is why it is used up."""
    in_progress = f", and requests in progress hold ${held} of the rest" if held else ""
    message = (
        f"Quota used up: this key has spent ${spent} of its ${limit} limit{in_progress}. "
        "Ask your team lead to raise the key's quota."
    )
    return RelayError(
        402, "billing_error", "insufficient_quota", "insufficient_quota", message, openai_status=429
    )


def spend_limit_reached(
    name: str, *, reason: str, spent: str, limit: str, held: str | None, resets_at: datetime
) -> RelayError:
    """A spend window used up (proxy.quota names it: "the daily limit of this key", "your
    monthly cap in team X", "team X's monthly budget"), and when it resets: an ISO time in
    the team's zone, and a retry-after header when that is within a day."""
    in_progress = f", and requests in progress hold ${held} of the rest" if held else ""
    message = (
        f"{name[0].upper()}{name[1:]} is used up: ${spent} of ${limit} spent{in_progress}. "
        f"It resets at {resets_at.isoformat()}."
    )
    seconds = math.ceil((resets_at - datetime.now(UTC)).total_seconds())
    headers = [(b"retry-after", str(max(1, seconds)).encode())] if seconds <= 86400 else []
    return RelayError(
        402,
        "billing_error",
        "insufficient_quota",
        "insufficient_quota",
        message,
        openai_status=429,
        headers=headers,
        reason=reason,
    )


def too_many_in_flight(in_flight: int, limit: int) -> RelayError:
    return RelayError(
        429,
        "rate_limit_error",
        "rate_limit_error",
        "concurrency_limit_exceeded",
        f"{in_flight} requests of this key are already in flight, its limit of {limit} at "
        "once. Retry after 1 second.",
        headers=[(b"retry-after", b"1")],
    )


def rate_limited(rate: str, retry_after: int) -> RelayError:
    return RelayError(
        429,
        "rate_limit_error",
        "rate_limit_error",
        "rate_limit_exceeded",
        f"Rate limit exceeded: this key allows {rate}. Retry after {retry_after} seconds.",
        headers=[(b"retry-after", str(retry_after).encode())],
    )


def invalid_request(code: str, message: str) -> RelayError:
    return RelayError(400, "invalid_request_error", "invalid_request_error", code, message)


def request_too_large(limit_bytes: int) -> RelayError:
    return RelayError(
        413,
        "request_too_large",
        "invalid_request_error",
        "request_too_large",
        f"The request body is larger than this relay's limit of {_size(limit_bytes)}.",
    )


def not_found(path: str) -> RelayError:
    return _not_found(
        "not_found",
        f"Unknown endpoint {path}. This relay serves POST /v1/messages, "
        "POST /v1/messages/count_tokens, POST /v1/chat/completions, POST /v1/responses, "
        "GET /v1/models, GET /v1/models/{model_id}, GET /v1/key, "
        "GET /v1/dashboard/billing/subscription and GET /v1/dashboard/billing/usage.",
    )


def model_not_found(model: str, group: str) -> RelayError:
    return _not_found(
        "model_not_found",
        f"Model “{model}” is not available in group “{group}” of this key. "
        "GET /v1/models lists the models it can use.",
    )


def method_not_allowed(method: str, path: str, allowed: str) -> RelayError:
    return RelayError(
        405,
        "invalid_request_error",
        "invalid_request_error",
        "method_not_allowed",
        f"{method} is not allowed on {path}; use {allowed}.",
        headers=[(b"allow", allowed.encode())],
    )


def no_channel(message: str) -> RelayError:
    return RelayError(502, "api_error", "api_error", "upstream_unavailable", message)


def relay_unavailable() -> RelayError:
    """The relay's own state (Redis, the database) could not be reached: a retryable 503."""
    return RelayError(
        503,
        "api_error",
        "api_error",
        "service_unavailable",
        "The relay briefly cannot reach its own cache or database. Try again in a moment.",
        headers=[(b"retry-after", b"1")],
    )


def _not_found(code: str, message: str) -> RelayError:
    return RelayError(404, "not_found_error", "invalid_request_error", code, message)


def _size(limit_bytes: int) -> str:
    mib = limit_bytes / (1024 * 1024)
    return f"{mib:g} MiB" if limit_bytes >= 1024 * 1024 else f"{limit_bytes} bytes"
