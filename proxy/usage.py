"""Reading token usage out of what the upstream sends, and splitting SSE streams into events.

Anthropic: `message_start` carries the input and cache tokens, `message_delta` the output
(cumulative); a non-streaming body has one `usage`. OpenAI: one `usage` object (in the last
chunk of a stream that asked for `stream_options.include_usage`), where `prompt_tokens`
includes `prompt_tokens_details.cached_tokens`; we store the uncached part as input tokens and
the cached part as cache reads, the way Anthropic counts them, so one price table fits both.
OpenAI's Responses API: the same, named `input_tokens` / `input_tokens_details` /
`output_tokens`, in the body or in the `response` of a stream's terminal event.

When a stream stops early (the client left, the upstream failed) the final counts never come;
the output is then estimated from the text that did arrive (`approx_tokens`).
"""

import json
import re
from dataclasses import dataclass

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def token_quarters(text: str | bytes) -> int:
    """The size of text nobody has counted yet, in quarter tokens: a quarter for each ASCII
    character (English and code run at about four characters a token, and the JSON syntax of a
    request body makes that generous) and a whole token for any other character (Chinese,
    Japanese and Korean text runs at about one token a character, which bytes / 4 undercounted
    by a quarter). UTF-8 bytes are decoded first; ASCII, the usual case, is not."""
    if text.isascii():
        return len(text)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    ascii_characters = len(text.encode("ascii", "ignore"))
    return ascii_characters + 4 * (len(text) - ascii_characters)


def approx_tokens(text: str | bytes) -> int:
    """An estimate of text's tokens, rounded up (see token_quarters)."""
    return -(-token_quarters(text) // 4)


class SSESplitter:
    """Cut a byte stream into whole SSE events (each with its blank-line terminator)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        events = []
        start = 0
        for match in _EVENT_END.finditer(self._buffer):
            events.append(self._buffer[start : match.end()])
            start = match.end()
        self._buffer = self._buffer[start:]
        return events

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


def event_json(event: bytes) -> dict | None:
    """The JSON in an event's data lines; None for comments, pings without data and [DONE]."""
    lines = [
        line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
    ]
    if not lines:
        return None
    data = b"\n".join(lines)
    if data == b"[DONE]":
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    # Whether the upstream reported the final output count (else it is estimated).
    complete: bool = False
    # What the stream produced so far, in quarter tokens (see token_quarters).
    produced_quarters: int = 0

    # --- Anthropic --------------------------------------------------------------------------

    def anthropic_usage(self, usage: dict) -> None:
        self.input_tokens = _count(usage, "input_tokens", self.input_tokens)
        self.output_tokens = _count(usage, "output_tokens", self.output_tokens)
        self.cache_creation_tokens = _count(
            usage, "cache_creation_input_tokens", self.cache_creation_tokens
        )
        self.cache_read_tokens = _count(usage, "cache_read_input_tokens", self.cache_read_tokens)

    def anthropic_event(self, data: dict) -> None:
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            for field in ("text", "partial_json", "thinking"):
                value = delta.get(field)
                if isinstance(value, str):
                    self.produced_quarters += token_quarters(value)
        elif kind == "message_start":
            self.anthropic_usage((data.get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            self.anthropic_usage(data.get("usage") or {})
            self.complete = True

    def anthropic_body(self, data: dict) -> None:
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.anthropic_usage(usage)
            self.complete = True

    # --- OpenAI -----------------------------------------------------------------------------

    def openai_usage(
        self, usage: dict, *, prefix: str = "prompt", output: str = "completion"
    ) -> None:
        """Chat Completions' usage (prompt_tokens, completion_tokens, prompt_tokens_details),
        or the Responses API's with prefix "input" and output "output"."""
        prompt = _count(usage, f"{prefix}_tokens", 0)
        cached = _count(usage.get(f"{prefix}_tokens_details") or {}, "cached_tokens", 0)
        self.input_tokens = max(prompt - cached, 0)
        self.cache_read_tokens = cached
        self.output_tokens = _count(usage, f"{output}_tokens", 0)
        self.complete = True

    def openai_chunk(self, data: dict) -> bool:
        """Account for one chunk; True if it is the usage-only chunk (no choices)."""
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                self.produced_quarters += token_quarters(content)
            for call in delta.get("tool_calls") or []:
                arguments = (call.get("function") or {}).get("arguments")
                if isinstance(arguments, str):
                    self.produced_quarters += token_quarters(arguments)
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.openai_usage(usage)
            return not data.get("choices")
        return False

    def openai_body(self, data: dict) -> None:
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.openai_usage(usage)

    # --- OpenAI's Responses API (POST /v1/responses; Codex CLI) --------------------------------

    def responses_usage(self, usage: dict) -> None:
        self.openai_usage(usage, prefix="input", output="output")

    def responses_event(self, data: dict) -> None:
        kind = data.get("type")
        if kind in _RESPONSES_DELTAS:
            delta = data.get("delta")
            if isinstance(delta, str):
                self.produced_quarters += token_quarters(delta)
        elif kind in _RESPONSES_ENDS:
            usage = (data.get("response") or {}).get("usage")
            if isinstance(usage, dict):
                self.responses_usage(usage)

    def responses_body(self, data: dict) -> None:
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.responses_usage(usage)

    # --- by endpoint (the relay's Endpoint.kind) -----------------------------------------------

    def stream_event(self, kind: str, data: dict) -> bool:
        """Account for one stream event; True if it is Chat Completions' usage-only chunk."""
        if kind == "chat":
            return self.openai_chunk(data)
        if kind == "responses":
            self.responses_event(data)
        else:
            self.anthropic_event(data)
        return False

    def body(self, kind: str, data: dict) -> None:
        """Account for a whole (non-streaming) answer."""
        if kind == "chat":
            self.openai_body(data)
        elif kind == "responses":
            self.responses_body(data)
        else:
            self.anthropic_body(data)

    # --- a stream cut short -----------------------------------------------------------------

    def estimate_missing(self, *, input_tokens: int) -> None:
        """Fill in what an interrupted stream never reported, from what it did produce;
        `input_tokens`: the request body's estimate (proxy.body.Body.input_tokens)."""
        if self.complete:
            return
        produced = -(-self.produced_quarters // 4)
        self.output_tokens = max(self.output_tokens, produced)
        if produced and not (self.input_tokens or self.cache_read_tokens):
            # OpenAI reports input only at the end; the prompt was read all the same.
            self.input_tokens = input_tokens


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

# The largest count a UsageEvent token column holds (a PostgreSQL integer). An upstream that
# reports more is capped here: the row must fit, or its whole ingest batch would be refused.
MAX_TOKENS = 2**31 - 1


def _count(usage: dict, field: str, default: int) -> int:
    value = usage.get(field)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_TOKENS)
    return default
