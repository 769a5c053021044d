"""A fake LLM vendor for the relay's tests: a real aiohttp server on 127.0.0.1, in a thread.

It emulates Anthropic's /v1/messages (JSON and SSE; the cache writes split by lifetime in
`usage`, `message_start` and `message_delta` when a backend's usage says so) and
/v1/messages/count_tokens and OpenAI's /v1/chat/completions (JSON and SSE, with the usage chunk
when asked) and /v1/responses (JSON and SSE, usage in response.completed), records every
request it receives, and has knobs per backend: a status to answer with, a delay before the
response headers, a pause between stream events, and a gate that holds the rest of a stream
until the test releases it.

Several backends share one server: a channel's base URL is `<server>/<backend name>`, so two
channels of one group can behave differently (failover).
"""

import asyncio
import dataclasses
import json
import socket
import threading
from dataclasses import dataclass, field

from aiohttp import web

TEXT_DELTAS = ["Hello", " from", " the", " fake", " upstream", "."]


@dataclass
class Usage:
    input_tokens: int = 25
    output_tokens: int = 12
    cache_creation_tokens: int = 10
    cache_read_tokens: int = 5
    # Anthropic's split of the cache writes by lifetime: None sends no split (an answer from
    # before it, or from an API that has none); else this many of cache_creation_tokens are
    # 1-hour writes, the rest 5-minute ones.
    cache_creation_1h_tokens: int | None = None

    def anthropic(self) -> dict:
        """As Anthropic's `usage` reports it."""
        reported = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
        }
        if self.cache_creation_1h_tokens is not None:
            reported["cache_creation"] = {
                "ephemeral_5m_input_tokens": self.cache_creation_tokens
                - self.cache_creation_1h_tokens,
                "ephemeral_1h_input_tokens": self.cache_creation_1h_tokens,
            }
        return reported


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Backend:
    name: str
    url: str
    status: int = 200
    delay_seconds: float = 0.0
    pause_seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)
    # When set, a stream sends its first text delta, then waits for `release` (or 10 s).
    hold_after_first_delta: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    finished_streams: int = 0
    requests: list[ReceivedRequest] = field(default_factory=list)


class FakeUpstream:
    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}
        self._loop = asyncio.new_event_loop()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def start(self) -> "FakeUpstream":
        self._thread.start()
        self._started.wait(10)
        return self

    def backend(self, name: str, **knobs) -> Backend:
        backend = Backend(name=name, url=f"{self.base_url}/{name}", **knobs)
        self.backends[name] = backend
        return backend

    def reset(self) -> None:
        for backend in self.backends.values():
            backend.release.set()
        self.backends = {}

    def stop(self) -> None:
        self.reset()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- server -----------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{backend}/v1/messages", self._messages)
        app.router.add_post("/{backend}/v1/messages/count_tokens", self._count_tokens)
        app.router.add_post("/{backend}/v1/chat/completions", self._chat)
        app.router.add_post("/{backend}/v1/responses", self._responses)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        self._loop.run_until_complete(self._runner.setup())
        site = web.SockSite(self._runner, self._socket)
        self._loop.run_until_complete(site.start())
        self._started.set()
        self._loop.run_forever()

    async def _receive(self, request: web.Request) -> Backend:
        backend = self.backends[request.match_info["backend"]]
        backend.requests.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers={name.lower(): value for name, value in request.headers.items()},
                body=await request.read(),
            )
        )
        if backend.delay_seconds:
            await asyncio.sleep(backend.delay_seconds)
        return backend

    def _failure(self, backend: Backend) -> web.Response | None:
        if backend.status == 200:
            return None
        kind = "overloaded_error" if backend.status == 529 else "api_error"
        return web.json_response(
            {"type": "error", "error": {"type": kind, "message": "fake upstream failure"}},
            status=backend.status,
            headers={"openai-organization": "org-secret-name"},
        )

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        backend = await self._receive(request)
        return self._failure(backend) or web.json_response(
            {"input_tokens": backend.usage.input_tokens}
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        backend = await self._receive(request)
        if failure := self._failure(backend):
            return failure
        payload = await request.json()
        usage = _within_limit(backend.usage, payload)
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": payload["model"],
            "content": [{"type": "text", "text": "".join(TEXT_DELTAS)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage.anthropic(),
        }
        if not payload.get("stream"):
            return web.json_response(
                message,
                headers={
                    "request-id": "req_upstream_secret",
                    "anthropic-organization-id": "org-secret",
                },
            )
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1},
        }
        events = [("message_start", {"type": "message_start", "message": start})]
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
            for text in TEXT_DELTAS
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    # Cumulative; with the split, the whole usage again, as Anthropic's
                    # API sends it now.
                    "usage": usage.anthropic()
                    if usage.cache_creation_1h_tokens is not None
                    else {"output_tokens": usage.output_tokens},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return await self._stream(
            request,
            backend,
            [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events],
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        backend = await self._receive(request)
        if failure := self._failure(backend):
            return failure
        payload = await request.json()
        usage = _within_limit(backend.usage, payload)
        usage_body = {
            "prompt_tokens": usage.input_tokens + usage.cache_read_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.cache_read_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        }
        base = {"id": "chatcmpl-fake", "created": 1700000000, "model": payload["model"]}
        if not payload.get("stream"):
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(TEXT_DELTAS)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage_body,
                },
                headers={"openai-organization": "org-secret-name"},
            )
        include_usage = (payload.get("stream_options") or {}).get("include_usage")
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict, finish: str | None) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "object": "chat.completion.chunk", "choices": [choice], **extra}

        chunks = [chunk({"role": "assistant", "content": ""}, None)]
        chunks += [chunk({"content": text}, None) for text in TEXT_DELTAS]
        chunks.append(chunk({}, "stop"))
        if include_usage:
            chunks.append(
                {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage_body}
            )
        lines = [f"data: {json.dumps(data)}\n\n" for data in chunks] + ["data: [DONE]\n\n"]
        return await self._stream(request, backend, lines)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        backend = await self._receive(request)
        if failure := self._failure(backend):
            return failure
        payload = await request.json()
        usage = _within_limit(backend.usage, payload)
        text = "".join(TEXT_DELTAS)
        message = {
            "type": "message",
            "id": "msg_fake",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        response = {
            "id": "resp_fake",
            "object": "response",
            "created_at": 1700000000,
            "status": "completed",
            "model": payload["model"],
            "output": [message],
            "usage": {
                "input_tokens": usage.input_tokens + usage.cache_read_tokens,
                "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.input_tokens + usage.cache_read_tokens + usage.output_tokens,
            },
        }
        if not payload.get("stream"):
            return web.json_response(response, headers={"openai-organization": "org-secret-name"})
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
        events = [
            {"type": "response.created", "response": started},
            {"type": "response.output_item.added", "output_index": 0, "item": message},
            *({"type": "response.output_text.delta", **where, "delta": t} for t in TEXT_DELTAS),
            {"type": "response.output_text.done", **where, "text": text},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": "response.completed", "response": response},
        ]
        lines = [
            f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': n})}\n\n"
            for n, event in enumerate(events)
        ]
        return await self._stream(request, backend, lines)

    async def _stream(
        self, request: web.Request, backend: Backend, events: list[str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        held = False
        for event in events:
            await response.write(event.encode())
            first_text = json.dumps(TEXT_DELTAS[0]) in event
            if backend.hold_after_first_delta and first_text and not held:
                held = True
                await asyncio.to_thread(backend.release.wait, 10)
            if backend.pause_seconds:
                await asyncio.sleep(backend.pause_seconds)
        # Counted once the last event is written and before the stream closes: the relay ends
        # the client's response when the upstream's ends, so the count is visible by then.
        backend.finished_streams += 1
        await response.write_eof()
        return response


def _within_limit(usage: Usage, payload: dict) -> Usage:
    """A vendor never writes more output than the request's limit allows."""
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(payload.get(name), int):
            return dataclasses.replace(usage, output_tokens=min(usage.output_tokens, payload[name]))
    return usage
