"""The relay: a lean ASGI app for /v1/*, dispatched by hcai/asgi.py before Django's handler.

Django's ASGI handler starts a thread per request, which alone caps a 2-core machine near
1,000 requests a second (see the relay issue); this app runs on the event loop and uses
Django only for settings, models (in worker threads, on cache misses) and cache names. A warm
request makes one Redis round trip before it is forwarded (the key's snapshot, sent together
with the quota admission for keys with a quota; see proxy.gate.Gate) and one after (recording
the usage), all async.

A request's path names its dialect (ENDPOINTS; proxy.dialects), which the rest asks: the gate
(proxy.gate), then forwarding (proxy.forwarding) and recording (proxy.recording); the model
listing (proxy.listing) and the key's balance (proxy.balance) pass the key checks only.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings

from billing.refusals import Refusal
from core.client_ip import client_ip, trusted_proxies
from core.request_id import current_request_id, new_request_id

from . import balance, errors, gate, listing
from .dialects import (
    ANTHROPIC,
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_MESSAGES,
    OPENAI,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    Dialect,
    ErrorShape,
)
from .errors import RelayError
from .exchange import Exchange
from .forwarding import Forwarder
from .keystate import KeyState
from .metrics import relay_metrics
from .prices import PriceTable
from .store import Store, make_store

logger = logging.getLogger("proxy")

# Answers an endpoint that forwards nothing: (exchange, the key's state, the price table).
KeyOnlyAnswer = Callable[[Exchange, KeyState, PriceTable], Awaitable[None]]


@dataclass(frozen=True, slots=True, eq=False)
class Endpoint:
    # Its short stable name, as usage rows and refusal counts record it
    # (billing.refusals.ENDPOINT_LABELS).
    name: str
    method: str
    errors: ErrorShape
    # The API a model request speaks; None for the endpoints that forward nothing.
    dialect: Dialect | None
    # What answers an endpoint that forwards nothing once the key checks passed (see
    # RelayApp.answer_key_only): the model listing, the key's balance.
    answer: KeyOnlyAnswer | None = None


def _forwarded(name: str, method: str, dialect: Dialect) -> Endpoint:
    return Endpoint(name, method, dialect.vendor.errors, dialect)


def _key_only(name: str, answer: KeyOnlyAnswer, errors: ErrorShape = OPENAI.errors) -> Endpoint:
    return Endpoint(name, "GET", errors, None, answer)


ENDPOINTS = {
    "/v1/messages": _forwarded("messages", "POST", ANTHROPIC_MESSAGES),
    "/v1/messages/count_tokens": _forwarded("count_tokens", "POST", ANTHROPIC_COUNT_TOKENS),
    "/v1/chat/completions": _forwarded("chat_completions", "POST", OPENAI_CHAT),
    "/v1/responses": _forwarded("responses", "POST", OPENAI_RESPONSES),
    listing.LIST_PATH: _key_only("models", listing.answer, ANTHROPIC.errors),
    # The key reads its own balance (proxy.balance), in OpenAI's shape: its legacy billing API.
    balance.SUBSCRIPTION_PATH: _key_only("billing_subscription", balance.subscription),
    balance.USAGE_PATH: _key_only("billing_usage", balance.usage),
    balance.KEY_PATH: _key_only("key", balance.key_info),
}
# OpenAI's legacy billing paths without /v1 (hcai.asgi sends balance.LEGACY_PREFIX here).
for _path in (balance.SUBSCRIPTION_PATH, balance.USAGE_PATH):
    ENDPOINTS[_path.removeprefix("/v1")] = ENDPOINTS[_path]
# Every path under listing.MODEL_PREFIX (one model) is the listing's too.
_LISTING = ENDPOINTS[listing.LIST_PATH]
_MODEL_PREFIX = listing.MODEL_PREFIX
# Unknown paths under an OpenAI API are refused in its shape, any other in Anthropic's.
_OPENAI_PREFIXES = ("/v1/chat/", "/v1/responses/", "/v1/dashboard/", balance.LEGACY_PREFIX)
# Answered when the key's remaining quota paid for fewer output tokens than the request asked
# for (or, with no limit asked, than the model can write): the limit it was sent upstream with.
OUTPUT_LOWERED_HEADER = b"x-hcai-output-limit-lowered"


class RelayApp:
    def __init__(self) -> None:
        self.prices = PriceTable()
        self.gate = gate.Gate(self.prices)
        self.forwarder = Forwarder()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        # Made on first use, inside the running loop that its connections will belong to.
        if self._store is None:
            self._store = make_store()
        return self._store

    async def close(self) -> None:
        await relay_metrics.close()
        await self.forwarder.close()
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def lifespan(self, scope: dict, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def __call__(self, scope: dict, receive, send) -> None:
        path = scope["path"]
        endpoint = ENDPOINTS.get(path)
        if endpoint is None and path.startswith(_MODEL_PREFIX) and len(path) > len(_MODEL_PREFIX):
            endpoint = _LISTING
        if endpoint is not None:
            shape = endpoint.errors
        else:
            shape = OPENAI.errors if path.startswith(_OPENAI_PREFIXES) else ANTHROPIC.errors
        exchange = Exchange(
            scope=scope,
            receive=receive,
            send=send,
            request_id="",
            errors=shape,
            client_ip="",
            endpoint=endpoint.name if endpoint is not None else "",
        )
        exchange.request_id = new_request_id(exchange.header(b"x-request-id"))
        peer = scope["client"][0] if scope.get("client") else ""
        exchange.client_ip = client_ip(peer, scope["headers"], trusted_proxies())
        token = current_request_id.set(exchange.request_id)
        try:
            key_id = await self.handle(exchange, endpoint)
            _count(exchange)
            logger.info(
                "%s %s %s key=%s %.1fms",
                scope["method"],
                path,
                exchange.status,
                key_id or "-",
                (time.monotonic() - exchange.started) * 1000,
            )
        finally:
            current_request_id.reset(token)

    async def handle(self, exchange: Exchange, endpoint: Endpoint | None) -> int | None:
        """Run the gate, then forward. Returns the key's id once it is known (for the log)."""
        scope = exchange.scope
        try:
            if endpoint is None:
                raise errors.not_found(scope["path"])
            if scope["method"] != endpoint.method:
                raise errors.method_not_allowed(scope["method"], scope["path"], endpoint.method)
            plaintext = gate.credential(scope["headers"])
            if plaintext is None:
                raise errors.missing_credentials()
            dialect = endpoint.dialect
            if dialect is None:
                return await self.answer_key_only(exchange, endpoint, plaintext)
            passed = await self.gate.check(
                self.store,
                plaintext=plaintext,
                receive=exchange.receive,
                headers=scope["headers"],
                client_ip=exchange.client_ip,
                output_field=dialect.output_field,
                max_body_bytes=settings.RELAY_MAX_BODY_BYTES,
            )
        except RelayError as error:
            await exchange.refuse(error)
            if error.key_id is not None:
                # Counted after the answer is sent, so the client does not wait for it. A
                # refusal with no key known (no or an invalid credential, an unknown path)
                # is not counted: there is no key or team to show it to.
                await self.count_refusal(exchange, error.key_id, error.reason or error.code)
            return error.key_id
        except errors.STATE_UNAVAILABLE:
            logger.exception("Relay state unavailable")
            await exchange.refuse(errors.relay_unavailable())
            return None
        if passed.output_lowered_to is not None:
            exchange.extra_headers.append(
                (OUTPUT_LOWERED_HEADER, str(passed.output_lowered_to).encode())
            )
        await self.forwarder.forward(self.store, exchange, dialect, passed)
        return passed.state.key_id

    async def count_refusal(self, exchange: Exchange, key_id: int, code: str) -> None:
        """Count the refusal against its key (billing.refusals): one store call, never a
        database write on the request path."""
        refusal = Refusal(key_id, exchange.status, code, exchange.endpoint)
        try:
            await self.store.count_refusal(refusal)
        except Exception:
            logger.exception("Could not count a refusal of key %s (%s)", key_id, code)

    async def answer_key_only(self, exchange: Exchange, endpoint: Endpoint, plaintext: str) -> int:
        """GET /v1/models (or one model of it) and the key's balance: the key checks only (see
        Gate.check_listing), nothing charged or counted."""
        state = await self.gate.check_listing(
            self.store, plaintext=plaintext, client_ip=exchange.client_ip
        )
        await endpoint.answer(exchange, state, self.prices)
        return state.key_id


def _count(exchange: Exchange) -> None:
    endpoint = exchange.endpoint or "unknown"
    relay_metrics.request(endpoint, exchange.status, exchange.refused)
    if exchange.forwarded_at:
        relay_metrics.added_latency(endpoint, exchange.forwarded_at - exchange.started)
    if exchange.answered_at:
        relay_metrics.first_byte_latency(endpoint, exchange.answered_at - exchange.started)
