"""The relay: a lean ASGI app for /v1/*, dispatched by hcai/asgi.py before Django's handler.

Django's ASGI handler starts a thread per request, which alone caps a 2-core machine near
1,000 requests a second (see the relay issue); this app runs on the event loop and uses
Django only for settings, models (in worker threads, on cache misses) and cache names. A warm
request makes one Redis round trip before it is forwarded (the key's snapshot, sent together
with the quota admission for keys with a quota; see proxy.gate.Gate) and one after (recording
the usage), all async.
"""

import asyncio
import dataclasses
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import aiohttp
import redis.exceptions
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from billing.ledger import UsageRecord
from billing.pricing import price_usage
from core.client_ip import client_ip, trusted_proxies
from core.request_id import current_request_id, new_request_id

from . import errors, gate, mock
from .body import Body
from .channels import ChannelTable
from .errors import RelayError, Shape
from .keystate import ChannelState, KeyState, provider_matches
from .prices import PriceTable
from .redis_client import RedisError
from .store import Store, make_store
from .upstream import UpstreamFailure, UpstreamResponse, Upstreams
from .usage import SSESplitter, Usage, event_json

logger = logging.getLogger("proxy")

SESSION_HEADER = b"x-claude-code-session-id"
# The relay's own state cannot be reached: Redis (key state, quota; the rate limit's cache) or
# the database (a key or channel not loaded yet). A retryable 503, which the SDKs retry.
STATE_UNAVAILABLE = (RedisError, redis.exceptions.ConnectionError, OperationalError)
# Status recorded for a stream the client walked away from (nginx's convention).
CLIENT_CLOSED = 499
# A stream keeps its usage so far in a checkpoint this often (while it sends anything), to be
# billed from it should this worker die first (billing.ledger.reap_checkpoints).
CHECKPOINT_SECONDS = 1.0


@dataclass(frozen=True)
class Endpoint:
    kind: str
    method: str
    shape: Shape
    provider: str | None
    # The request's output limit under this API's name (None: the endpoint writes no output).
    output_field: str | None = None


ENDPOINTS = {
    "/v1/messages": Endpoint("messages", "POST", Shape.ANTHROPIC, "anthropic", "max_tokens"),
    "/v1/messages/count_tokens": Endpoint("count_tokens", "POST", Shape.ANTHROPIC, "anthropic"),
    "/v1/chat/completions": Endpoint(
        "chat", "POST", Shape.OPENAI, "openai", "max_completion_tokens"
    ),
    "/v1/responses": Endpoint("responses", "POST", Shape.OPENAI, "openai", "max_output_tokens"),
    "/v1/models": Endpoint("models", "GET", Shape.ANTHROPIC, None),
}
# Answered when the key's remaining quota paid for fewer output tokens than the request asked
# for (or, with no limit asked, than the model can write): the limit it was sent upstream with.
OUTPUT_LOWERED_HEADER = b"x-hcai-output-limit-lowered"
# GET /v1/models/{model_id}: one model, as both SDKs' models.retrieve ask for it.
MODEL_PREFIX = "/v1/models/"
MODEL_ENDPOINT = Endpoint("model", "GET", Shape.ANTHROPIC, None)
_API_NAMES = {"anthropic": "Anthropic", "openai": "OpenAI"}


@dataclass
class Exchange:
    """One request and what has been sent back so far."""

    scope: dict
    receive: Callable[[], Awaitable[dict]]
    send: Callable[[dict], Awaitable[None]]
    request_id: str
    shape: Shape
    client_ip: str
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=timezone.now)
    response_started: bool = False
    status: int = 0
    # Headers of ours added to whatever is answered (see OUTPUT_LOWERED_HEADER).
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Whether a checkpoint of this request's usage was kept (see RelayApp.checkpoint).
    checkpointed: bool = False

    def header(self, name: bytes) -> str | None:
        for header_name, value in self.scope["headers"]:
            if header_name == name:
                return value.decode("latin-1")
        return None

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.response_started = True
        self.status = status
        request_id = self.request_id.encode()
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *headers,
                    *self.extra_headers,
                    (b"request-id", request_id),
                    (b"x-request-id", request_id),
                ],
            }
        )

    async def body(self, data: bytes, *, more: bool) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], data: bytes) -> None:
        await self.start(status, [*headers, (b"content-length", str(len(data)).encode())])
        await self.body(data, more=False)

    async def refuse(self, error: RelayError) -> None:
        headers = [(b"content-type", b"application/json"), *error.headers]
        await self.respond(
            error.status_for(self.shape), headers, error.body(self.shape, self.request_id)
        )


@dataclass
class _ReadResponse:
    """A non-streaming upstream answer, already read in full."""

    status: int
    headers: list[tuple[str, str]]
    data: bytes
    is_stream: bool = False

    async def read(self) -> bytes:
        return self.data


Answer = UpstreamResponse | mock.MockResponse | _ReadResponse


class RelayApp:
    def __init__(self) -> None:
        self.prices = PriceTable()
        self.gate = gate.Gate(self.prices)
        self.channels = ChannelTable()
        self.upstreams = Upstreams()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        # Made on first use, inside the running loop that its connections will belong to.
        if self._store is None:
            self._store = make_store()
        return self._store

    async def close(self) -> None:
        await self.upstreams.close()
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
        if endpoint is None and path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
            endpoint = MODEL_ENDPOINT
        shape = endpoint.shape if endpoint else Shape.ANTHROPIC
        if endpoint is None and path.startswith(("/v1/chat/", "/v1/responses/")):
            shape = Shape.OPENAI
        exchange = Exchange(
            scope=scope,
            receive=receive,
            send=send,
            request_id="",
            shape=shape,
            client_ip="",
        )
        exchange.request_id = new_request_id(exchange.header(b"x-request-id"))
        peer = scope["client"][0] if scope.get("client") else ""
        exchange.client_ip = client_ip(peer, scope["headers"], trusted_proxies())
        token = current_request_id.set(exchange.request_id)
        try:
            key_id = await self.handle(exchange, endpoint)
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
            if endpoint.kind in ("models", "model"):
                state = await self.gate.check_listing(
                    self.store, plaintext=plaintext, client_ip=exchange.client_ip
                )
                if endpoint.kind == "models":
                    await self.list_models(exchange, state)
                else:
                    await self.retrieve_model(exchange, state, scope["path"][len(MODEL_PREFIX) :])
                return state.key_id
            passed = await self.gate.check(
                self.store,
                plaintext=plaintext,
                receive=exchange.receive,
                headers=scope["headers"],
                client_ip=exchange.client_ip,
                output_field=endpoint.output_field,
                max_body_bytes=settings.RELAY_MAX_BODY_BYTES,
            )
        except RelayError as error:
            await exchange.refuse(error)
            return error.key_id
        except STATE_UNAVAILABLE:
            logger.exception("Relay state unavailable")
            await exchange.refuse(errors.relay_unavailable())
            return None
        if passed.output_lowered_to is not None:
            exchange.extra_headers.append(
                (OUTPUT_LOWERED_HEADER, str(passed.output_lowered_to).encode())
            )
        await self.forward(exchange, endpoint, passed)
        return passed.state.key_id

    # --- after the gate: forward, relay, record -----------------------------------------------

    async def forward(self, exchange: Exchange, endpoint: Endpoint, passed: gate.Passed) -> None:
        """Forward to the group's channels in order; record exactly one usage event."""
        state = passed.state
        usage = Usage()
        try:
            await self._forward(exchange, endpoint, passed, usage)
        except STATE_UNAVAILABLE:
            # The database was needed for a channel's URL and credential (a worker's first
            # request, or the first after a channel was edited).
            logger.exception("Channel table unavailable")
            if not exchange.response_started:
                await exchange.refuse(errors.relay_unavailable())
        except Exception:
            logger.exception("Relay failed on key %s", state.key_id)
            if not exchange.response_started:
                await exchange.refuse(
                    RelayError(500, "api_error", "api_error", "internal_error", "Relay error.")
                )
            elif exchange.status < 400:
                exchange.status = 502
        finally:
            await self.record(exchange, passed, usage)

    async def _forward(
        self, exchange: Exchange, endpoint: Endpoint, passed: gate.Passed, usage: Usage
    ) -> None:
        state, body = passed.state, passed.body
        channels = [ch for ch in state.channels if provider_matches(ch, endpoint.provider)]
        if not channels:
            await exchange.refuse(
                errors.no_channel(
                    f"Group “{state.group_name}” has no channel for the "
                    f"{_API_NAMES[endpoint.provider]} API. Ask an administrator to route one."
                )
            )
            return
        payload, upstream_body, strip_usage = _upstream_payload(endpoint, body)
        failure: UpstreamFailure | None = None
        for position, channel in enumerate(channels, start=1):
            try:
                response = await self._open(exchange, endpoint, channel, payload, upstream_body)
            except UpstreamFailure as error:
                failure = error
                # The channel's name only: its URL and credential never reach a log line.
                logger.warning(
                    "Channel %s failed (%s); %s",
                    channel.name,
                    error.reason,
                    "trying the next" if position < len(channels) else "none left",
                )
                continue
            await self.relay(exchange, endpoint, passed, response, usage, strip_usage)
            return
        if failure is not None and failure.status == 529:
            await exchange.refuse(
                RelayError(
                    529,
                    "overloaded_error",
                    "api_error",
                    "overloaded",
                    "The upstream is overloaded. Try again in a moment.",
                )
            )
            return
        await exchange.refuse(
            errors.no_channel(
                f"No upstream channel of group “{state.group_name}” answered "
                f"({len(channels)} tried). Try again in a moment."
            )
        )

    async def _open(
        self,
        exchange: Exchange,
        endpoint: Endpoint,
        channel: ChannelState,
        payload: dict,
        upstream_body: bytes,
    ) -> Answer:
        if channel.provider == "mock":
            return mock.respond(endpoint=endpoint.kind, payload=payload, request=upstream_body)
        secrets = await self.channels.secrets(channel)
        if secrets is None:
            raise UpstreamFailure("channel no longer active")
        scope = exchange.scope
        response = await self.upstreams.open(
            channel,
            secrets,
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=scope["headers"],
            body=upstream_body,
        )
        if response.is_stream:
            return response
        # A whole body is read here, before anything reaches the client, so a failure while
        # reading it can still fail over to the next channel.
        try:
            data = await response.read()
        except TimeoutError:
            raise UpstreamFailure("timeout") from None
        except aiohttp.ClientError as error:
            raise UpstreamFailure(type(error).__name__) from None
        finally:
            response.close()
        return _ReadResponse(response.status, response.headers, data)

    async def relay(
        self,
        exchange: Exchange,
        endpoint: Endpoint,
        passed: gate.Passed,
        response: Answer,
        usage: Usage,
        strip_usage: bool,
    ) -> None:
        headers = [(name.encode(), value.encode()) for name, value in response.headers]
        if not response.is_stream:
            data = await response.read()
            if 200 <= response.status < 300 and endpoint.kind != "count_tokens":
                _account_body(endpoint, data, usage)
            await exchange.respond(response.status, headers, data)
            return
        await exchange.start(
            response.status,
            # Tell any buffering reverse proxy in front (nginx) to pass events on at once.
            [*headers, (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")],
        )
        disconnected = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(exchange.receive, response, disconnected))
        splitter = SSESplitter()
        next_checkpoint = exchange.started + CHECKPOINT_SECONDS
        try:
            async for chunk in response.chunks():
                events = []
                for event in splitter.feed(chunk):
                    data = event_json(event)
                    usage_only = data is not None and usage.stream_event(endpoint.kind, data)
                    if usage_only and strip_usage:
                        continue  # The client did not ask for the usage chunk.
                    events.append(event)
                if events:
                    await exchange.body(b"".join(events), more=True)
                if time.monotonic() >= next_checkpoint:
                    await self.checkpoint(exchange, passed, usage)
                    next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
            tail = splitter.rest()
        except (TimeoutError, aiohttp.ClientError) as error:
            tail = b""
            if not disconnected.is_set():
                logger.warning("Upstream stream broke off (%s)", type(error).__name__)
                exchange.status = 502
        finally:
            watcher.cancel()
            response.close()
        if disconnected.is_set():
            exchange.status = CLIENT_CLOSED
            return
        await exchange.body(tail, more=False)

    async def record(self, exchange: Exchange, passed: gate.Passed, usage: Usage) -> None:
        record = _usage_record(exchange, passed, usage, status=exchange.status or 502)
        try:
            await self.store.record(
                record, hold_id=passed.hold_id, checkpointed=exchange.checkpointed
            )
        except Exception:
            logger.exception(
                "Could not record usage of key %s (%s, $%s)",
                record.key_id,
                record.model,
                record.charged_usd,
            )

    async def checkpoint(self, exchange: Exchange, passed: gate.Passed, usage: Usage) -> None:
        """Keep what the stream has used so far, billed as a failed request (502) should this
        worker die before recording it whole. A checkpoint that cannot be kept is skipped."""
        record = _usage_record(exchange, passed, dataclasses.replace(usage), status=502)
        try:
            await self.store.checkpoint(record, hold_id=passed.hold_id)
        except RedisError as error:
            logger.warning("Could not checkpoint a stream of key %s (%s)", record.key_id, error)
            return
        exchange.checkpointed = True

    # --- GET /v1/models -------------------------------------------------------------------------

    async def list_models(self, exchange: Exchange, state: KeyState) -> None:
        """The group's priced models, in one list both official SDKs parse."""
        models = await self._models(state)
        listing = {
            "object": "list",
            "data": models,
            "has_more": False,
            "first_id": models[0]["id"] if models else None,
            "last_id": models[-1]["id"] if models else None,
        }
        await exchange.respond(
            200, [(b"content-type", b"application/json")], json.dumps(listing).encode()
        )

    async def retrieve_model(self, exchange: Exchange, state: KeyState, model_id: str) -> None:
        """One model of the listing (GET /v1/models/{model_id}); a model the key cannot use is
        not found, whether it is priced for other groups or not priced at all."""
        models = await self._models(state)
        found = next((model for model in models if model["id"] == model_id), None)
        if found is None:
            error = errors.model_not_found(model_id, state.group_name)
            error.key_id = state.key_id
            raise error
        await exchange.respond(
            200, [(b"content-type", b"application/json")], json.dumps(found).encode()
        )

    async def _models(self, state: KeyState) -> list[dict]:
        """The models the key's group may use and that have a price, by name, each with the
        fields of both SDKs' model objects."""
        priced = await self.prices.priced_models() if state.group_usable else {}
        names = sorted(name for name in priced if state.allows_model(name))
        return [
            {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": priced[name].isoformat().replace("+00:00", "Z"),
                "object": "model",
                "created": int(priced[name].timestamp()),
                "owned_by": "hcai",
            }
            for name in names
        ]


def _usage_record(
    exchange: Exchange, passed: gate.Passed, usage: Usage, *, status: int
) -> UsageRecord:
    """The request's usage as recorded: what the upstream reported, with what an interrupted
    stream never reported estimated (in `usage`, which this completes)."""
    state, body = passed.state, passed.body
    usage.estimate_missing(input_tokens=body.input_tokens)
    cost, charged = price_usage(
        prices=passed.price,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        multiplier=state.multiplier,
    )
    return UsageRecord(
        key_id=state.key_id,
        team_id=state.team_id,
        group_id=state.group_id,
        model=body.model or "",
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cost_usd=cost,
        charged_usd=charged,
        status_code=status,
        latency_ms=int((time.monotonic() - exchange.started) * 1000),
        client_ip=_valid_ip(exchange.client_ip),
        session_id=exchange.header(SESSION_HEADER) or "",
        request_id=exchange.request_id,
        created_at=exchange.started_at,
    )


def _upstream_payload(endpoint: Endpoint, body: Body) -> tuple[dict, bytes, bool]:
    """The payload and bytes to send upstream, and whether to strip the usage chunk.

    The body goes byte for byte, except an OpenAI stream that did not ask for usage: billing
    needs it, so it is asked for here (changing only the stream_options bytes) and the extra
    chunk is removed on the way back. The payload is the fields the relay read (the gate
    checked stream_options is an object or null)."""
    if endpoint.kind != "chat" or body.fields.get("stream") is not True:
        return body.fields, body.raw, False
    options = body.fields.get("stream_options") or {}
    if options.get("include_usage") is True:
        return body.fields, body.raw, False
    changed = body.with_stream_options({**options, "include_usage": True})
    return changed.fields, changed.raw, True


def _account_body(endpoint: Endpoint, data: bytes, usage: Usage) -> None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return
    if isinstance(parsed, dict):
        usage.body(endpoint.kind, parsed)


async def _watch_disconnect(receive, response, disconnected: asyncio.Event) -> None:
    """Notice a client that leaves mid-stream and stop reading the upstream at once, so it
    stops generating what nobody will read."""
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()
    response.close()


@lru_cache(maxsize=1024)
def _valid_ip(address: str) -> str | None:
    """The address as the usage row stores it (parsed once per address: it showed in the
    relay's profile)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
