"""OpenAI's Chat Completions API (POST /v1/chat/completions) and Responses API
(POST /v1/responses; Codex CLI).

Usage: Chat Completions reports one `usage` object (in the last chunk of a stream that asked
for `stream_options.include_usage`), where `prompt_tokens` includes
`prompt_tokens_details.cached_tokens`; we store the uncached part as input tokens and the
cached part as cache reads, the way Anthropic counts them, so one price table fits both. The
Responses API: the same, named `input_tokens` / `input_tokens_details` / `output_tokens`, in
the body or in the `response` of a stream's terminal event.
"""

import json
from datetime import datetime

from ..body import Body
from ..errors import RelayError
from ..usage import Usage, reported_count, token_quarters
from .base import Dialect, Outgoing, Vendor


class OpenAIErrors:
    """{"error": {"message": ..., "type": ..., "code": ...}}, with OpenAI's own status where it
    differs (quota: 429, not 402)."""

    def status(self, error: RelayError) -> int:
        return error.status if error.openai_status is None else error.openai_status

    def body(self, error: RelayError, request_id: str) -> bytes:
        payload = {
            "error": {"message": error.message, "type": error.openai_type, "code": error.code}
        }
        return json.dumps(payload).encode()


def _read(reported: dict, usage: Usage, prefix: str, output: str) -> None:
    prompt = reported_count(reported, f"{prefix}_tokens", 0)
    cached = reported_count(reported.get(f"{prefix}_tokens_details") or {}, "cached_tokens", 0)
    usage.input_tokens = max(prompt - cached, 0)
    usage.cache_read_tokens = cached
    usage.output_tokens = reported_count(reported, f"{output}_tokens", 0)
    usage.complete = True


class ChatUsage:
    """prompt_tokens, completion_tokens, prompt_tokens_details."""

    def event(self, usage: Usage, data: dict) -> bool:
        """True for the usage-only chunk (no choices)."""
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                usage.produced_quarters += token_quarters(content)
            for call in delta.get("tool_calls") or []:
                arguments = (call.get("function") or {}).get("arguments")
                if isinstance(arguments, str):
                    usage.produced_quarters += token_quarters(arguments)
        reported = data.get("usage")
        if isinstance(reported, dict):
            _read(reported, usage, "prompt", "completion")
            return not data.get("choices")
        return False

    def body(self, usage: Usage, data: dict) -> None:
        reported = data.get("usage")
        if isinstance(reported, dict):
            _read(reported, usage, "prompt", "completion")


# Responses API stream events carrying generated text (a string `delta`), and the terminal
# events, whose `response` carries the usage.
_RESPONSES_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
_RESPONSES_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesUsage:
    """input_tokens, output_tokens, input_tokens_details."""

    def event(self, usage: Usage, data: dict) -> bool:
        kind = data.get("type")
        if kind in _RESPONSES_DELTAS:
            delta = data.get("delta")
            if isinstance(delta, str):
                usage.produced_quarters += token_quarters(delta)
        elif kind in _RESPONSES_ENDS:
            reported = (data.get("response") or {}).get("usage")
            if isinstance(reported, dict):
                _read(reported, usage, "input", "output")
        return False

    def body(self, usage: Usage, data: dict) -> None:
        reported = data.get("usage")
        if isinstance(reported, dict):
            _read(reported, usage, "input", "output")


def chat_request(body: Body) -> Outgoing:
    """The body goes byte for byte, except a stream that did not ask for usage: billing needs
    it, so it is asked for here (changing only the stream_options bytes) and the extra chunk
    is removed on the way back. The gate checked stream_options is an object or null."""
    if body.fields.get("stream") is not True:
        return body.fields, body.raw, False
    options = body.fields.get("stream_options") or {}
    if options.get("include_usage") is True:
        return body.fields, body.raw, False
    changed = body.with_stream_options({**options, "include_usage": True})
    return changed.fields, changed.raw, True


def model_object(name: str, created: datetime) -> dict:
    return {"object": "model", "id": name, "created": int(created.timestamp()), "owned_by": "hcai"}


def model_list(models: list[dict]) -> dict:
    return {"object": "list", "data": models}


OPENAI = Vendor("openai", "OpenAI", OpenAIErrors(), model_object, model_list)
CHAT = Dialect(
    "OpenAI Chat Completions",
    OPENAI,
    ChatUsage(),
    output_field="max_completion_tokens",
    upstream_request=chat_request,
)
RESPONSES = Dialect("OpenAI Responses", OPENAI, ResponsesUsage(), output_field="max_output_tokens")
