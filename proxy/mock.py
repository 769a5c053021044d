"""The `mock` provider: answers locally, without any network, in every dialect.

The answer is deterministic (same request, same bytes apart from ids and timestamps) and its
usage is realistic: input tokens from the request size, output tokens from the text, so the
quickstart's demo shows believable numbers in the portal. Streams are real SSE sequences:
Anthropic's message_start ... message_stop, OpenAI's chunks, usage chunk and [DONE], and the
Responses API's response.created ... response.completed.
"""

import json
import secrets
import time
from collections.abc import AsyncIterator

from . import dialects
from .dialects import Dialect
from .keystate import ChannelState
from .usage import approx_tokens


def _text(model: str) -> str:
    return (
        f"Hello from the HCAI Keys mock channel, answering as {model}. "
        "No upstream was called: this reply is the same for every request, "
        "and its token counts are estimated from the request size."
    )


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def _tokens(text: str) -> int:
    return max(1, approx_tokens(text))


def _sse(event: str | None, payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {data}\n\n".encode()


class MockResponse:
    """An answer as an upstream gives it (proxy.upstream.Answer)."""

    def __init__(self, content_type: str, parts: list[bytes]) -> None:
        self.status = 200
        self.headers = [("content-type", content_type)]
        self.is_stream = content_type.startswith("text/event-stream")
        self._parts = parts

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part

    async def read(self) -> bytes:
        return b"".join(self._parts)

    def close(self) -> None:
        self._parts = []


class MockTransport:
    """The mock provider's Transport (proxy.upstream): the answer is made here."""

    async def open(
        self, channel: ChannelState, *, dialect: Dialect, scope: dict, payload: dict, body: bytes
    ) -> MockResponse:
        return respond(dialect=dialect, payload=payload, request=body)


def respond(*, dialect: Dialect, payload: dict, request: bytes) -> MockResponse:
    model = str(payload.get("model", "mock"))
    input_tokens = max(1, approx_tokens(request))
    return _ANSWERS[dialect](model, input_tokens, payload)


def _json(body: dict) -> MockResponse:
    return MockResponse("application/json", [json.dumps(body).encode()])


def _count_tokens(model: str, input_tokens: int, payload: dict) -> MockResponse:
    return _json({"input_tokens": input_tokens})


def _anthropic(model: str, input_tokens: int, payload: dict) -> MockResponse:
    text = _text(model)
    message_id = "msg_mock_" + secrets.token_hex(12)
    output_tokens = _tokens(text)
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not payload.get("stream"):
        return _json(message)
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    parts = [
        _sse("message_start", {"type": "message_start", "message": start}),
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _sse("ping", {"type": "ping"}),
    ]
    parts += [
        _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": word},
            },
        )
        for word in _words(text)
    ]
    parts += [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return MockResponse("text/event-stream; charset=utf-8", parts)


def _openai(model: str, input_tokens: int, payload: dict) -> MockResponse:
    text = _text(model)
    completion_id = "chatcmpl-mock" + secrets.token_hex(12)
    created = int(time.time())
    output_tokens = _tokens(text)
    usage = {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    if not payload.get("stream"):
        return _json(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    def chunk(delta: dict, finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse(
            None,
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            },
        )

    parts = [chunk({"role": "assistant", "content": ""}, None)]
    parts += [chunk({"content": word}, None) for word in _words(text)]
    parts.append(chunk({}, "stop"))
    # The relay always asks upstreams for usage (and strips it if the client did not ask), so
    # the mock behaves like an upstream asked for it.
    if (payload.get("stream_options") or {}).get("include_usage"):
        parts.append(
            _sse(
                None,
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                },
            )
        )
    parts.append(_sse(None, "[DONE]"))
    return MockResponse("text/event-stream; charset=utf-8", parts)


def _responses(model: str, input_tokens: int, payload: dict) -> MockResponse:
    text = _text(model)
    response_id = "resp_mock_" + secrets.token_hex(12)
    item_id = "msg_mock_" + secrets.token_hex(12)
    output_tokens = _tokens(text)
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {
        "type": "message",
        "id": item_id,
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    response = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [item],
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }
    if not payload.get("stream"):
        return _json(response)
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    located = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **located, "part": {**part, "text": ""}},
        *(
            {"type": "response.output_text.delta", **located, "delta": word}
            for word in _words(text)
        ),
        {"type": "response.output_text.done", **located, "text": text},
        {"type": "response.content_part.done", **located, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]
    parts = [
        _sse(event["type"], {**event, "sequence_number": number})
        for number, event in enumerate(events)
    ]
    return MockResponse("text/event-stream; charset=utf-8", parts)


# Each dialect's answer: (model, input tokens, the request's payload) -> the answer.
_ANSWERS = {
    dialects.ANTHROPIC_MESSAGES: _anthropic,
    dialects.ANTHROPIC_COUNT_TOKENS: _count_tokens,
    dialects.OPENAI_CHAT: _openai,
    dialects.OPENAI_RESPONSES: _responses,
}
