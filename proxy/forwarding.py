"""After the gate: forward a request to its group's channels in order (failing over while
none has answered; skipping those the circuit breaker holds open, proxy.breaker), relay the
answer (a stream as it comes, watching for the client leaving) and read its usage with the
request's dialect; recording follows in every case (proxy.recording)."""

import asyncio
import json
import logging
import time

import aiohttp

from . import errors, gate, recording
from .breaker import Attempts
from .dialects import Dialect
from .errors import RelayError
from .exchange import Exchange
from .keystate import provider_matches
from .metrics import relay_metrics
from .mock import MockTransport
from .models import Channel
from .store import Store
from .upstream import Answer, HttpTransport, Transport, UpstreamFailure
from .usage import SSESplitter, Usage, event_json

logger = logging.getLogger("proxy")

# Status recorded for a stream the client walked away from (nginx's convention).
CLIENT_CLOSED = 499
# A stream keeps its usage so far in a checkpoint this often (while it sends anything), to be
# billed from it should this worker die first (billing.ledger.reap_checkpoints).
CHECKPOINT_SECONDS = 1.0


class Forwarder:
    def __init__(self) -> None:
        self.http = HttpTransport()
        # The transport of each channel provider.
        self.transports: dict[str, Transport] = {
            Channel.Provider.ANTHROPIC: self.http,
            Channel.Provider.OPENAI: self.http,
            Channel.Provider.MOCK: MockTransport(),
        }

    async def close(self) -> None:
        await self.http.close()

    async def forward(
        self, store: Store, exchange: Exchange, dialect: Dialect, passed: gate.Passed
    ) -> None:
        """Forward to the group's channels in order; record exactly one usage event."""
        usage = Usage()
        try:
            await self._forward(store, exchange, dialect, passed, usage)
        except errors.STATE_UNAVAILABLE:
            # The database was needed for a channel's URL and credential (a worker's first
            # request, or the first after a channel was edited).
            logger.exception("Channel table unavailable")
            if not exchange.response_started:
                await exchange.refuse(errors.relay_unavailable())
        except asyncio.CancelledError:
            # The worker is shutting down past its grace (hcai.workers), or the server gave
            # up on the request: recorded below as a failure for the client if it had begun.
            if exchange.response_started and exchange.status < 400:
                exchange.status = 502
            raise
        except Exception:
            logger.exception("Relay failed on key %s", passed.state.key_id)
            if not exchange.response_started:
                await exchange.refuse(
                    RelayError(500, "api_error", "api_error", "internal_error", "Relay error.")
                )
            elif exchange.status < 400:
                exchange.status = 502
        finally:
            await recording.record(store, exchange, passed, usage)

    async def _forward(
        self,
        store: Store,
        exchange: Exchange,
        dialect: Dialect,
        passed: gate.Passed,
        usage: Usage,
    ) -> None:
        state = passed.state
        channels = [ch for ch in state.channels if provider_matches(ch, dialect.vendor.provider)]
        if not channels:
            await exchange.refuse(
                errors.no_channel(
                    f"Group “{state.group_name}” has no channel for the "
                    f"{dialect.vendor.name} API. Ask an administrator to route one."
                )
            )
            return
        payload, upstream_body, strip_usage = dialect.upstream_request(passed.body)
        scope = exchange.scope
        failure: UpstreamFailure | None = None
        exchange.forwarded_at = time.monotonic()
        await store.channel_health.ready()
        attempts = Attempts(store.channel_health, channels)
        while (attempt := await attempts.next()) is not None:
            channel = attempt.channel
            opened = time.monotonic()
            try:
                answer = await self.transports[channel.provider].open(
                    channel, dialect=dialect, scope=scope, payload=payload, body=upstream_body
                )
            except UpstreamFailure as error:
                failure = error
                relay_metrics.upstream_answer(
                    channel.name, _failure_outcome(error), time.monotonic() - opened
                )
                if attempts.more():
                    relay_metrics.failover(channel.name)
                # The channel's name only: its URL and credential never reach a log line.
                logger.warning(
                    "Channel %s failed (%s); %s",
                    channel.name,
                    error.reason,
                    "trying the next" if attempts.more() else "none left",
                )
                await attempts.failed(attempt, error)
                continue
            relay_metrics.upstream_answer(
                channel.name, f"{answer.status // 100}xx", time.monotonic() - opened
            )
            await attempts.succeeded(attempt)
            await relay(store, exchange, dialect, passed, answer, usage, strip_usage)
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
                f"({attempts.tried} tried). Try again in a moment."
            )
        )


async def relay(
    store: Store,
    exchange: Exchange,
    dialect: Dialect,
    passed: gate.Passed,
    answer: Answer,
    usage: Usage,
    strip_usage: bool,
) -> None:
    """Pass the answer on, reading its usage; `strip_usage`: leave out the usage-only events
    the relay asked for and the client did not (Dialect.upstream_request)."""
    headers = [(name.encode(), value.encode()) for name, value in answer.headers]
    if not answer.is_stream:
        data = await answer.read()
        if 200 <= answer.status < 300:
            _read_body_usage(dialect, data, usage)
        await exchange.respond(answer.status, headers, data)
        return
    await exchange.start(
        answer.status,
        # Tell any buffering reverse proxy in front (nginx) to pass events on at once.
        [*headers, (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")],
    )
    disconnected = asyncio.Event()
    watcher = asyncio.create_task(_watch_disconnect(exchange.receive, answer, disconnected))
    splitter = SSESplitter()
    read_event = dialect.usage.event
    next_checkpoint = exchange.started + CHECKPOINT_SECONDS
    try:
        async for chunk in answer.chunks():
            events = []
            for event in splitter.feed(chunk):
                data = event_json(event)
                usage_only = data is not None and read_event(usage, data)
                if usage_only and strip_usage:
                    continue  # The client did not ask for the usage chunk.
                events.append(event)
            if events:
                await exchange.body(b"".join(events), more=True)
            if time.monotonic() >= next_checkpoint:
                await recording.checkpoint(store, exchange, passed, usage)
                next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
        tail = splitter.rest()
    except (TimeoutError, aiohttp.ClientError) as error:
        tail = b""
        if not disconnected.is_set():
            logger.warning("Upstream stream broke off (%s)", type(error).__name__)
            exchange.status = 502
    finally:
        watcher.cancel()
        answer.close()
    if disconnected.is_set():
        exchange.status = CLIENT_CLOSED
        return
    await exchange.body(tail, more=False)


def _read_body_usage(dialect: Dialect, data: bytes, usage: Usage) -> None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return
    if isinstance(parsed, dict):
        dialect.usage.body(usage, parsed)


async def _watch_disconnect(receive, answer: Answer, disconnected: asyncio.Event) -> None:
    """Notice a client that leaves mid-stream and stop reading the upstream at once, so it
    stops generating what nobody will read."""
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()
    answer.close()


def _failure_outcome(error: UpstreamFailure) -> str:
    """A failed channel's outcome as the metrics label it: its status class, or the failure."""
    if error.status:
        return f"{error.status // 100}xx"
    return "timeout" if error.reason == "timeout" else "error"
