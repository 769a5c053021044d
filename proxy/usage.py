"""Token usage: what a request used, the estimates for text nobody has counted, and SSE
streams split into events.

Each vendor API reports usage its own way; its dialect reads it into Usage
(proxy.dialects). When a stream stops early (the client left, the upstream failed) the final
counts never come; the output is then estimated from the text that did arrive
(`approx_tokens`).
"""

import json
import re
from dataclasses import dataclass

from billing.pricing import TokenCounts

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
class Usage(TokenCounts):
    """What one request used, as its answer reported it (read by its dialect's UsageReader)."""

    # Whether the upstream reported the final output count (else it is estimated).
    complete: bool = False
    # What the stream produced so far, in quarter tokens (see token_quarters).
    produced_quarters: int = 0

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


# The largest count a UsageEvent token column holds (a PostgreSQL integer). An upstream that
# reports more is capped here: the row must fit, or its whole ingest batch would be refused.
MAX_TOKENS = 2**31 - 1


def reported_count(reported: dict, field: str, default: int) -> int:
    """A token count an upstream reported under `field`; `default` when it is missing or not
    a count, capped at MAX_TOKENS."""
    value = reported.get(field)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_TOKENS)
    return default
