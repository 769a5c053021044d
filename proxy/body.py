"""The request body: read once, checked as JSON, and the few top-level fields the relay needs
taken from it (the model, the output limit, `stream`, `stream_options`); the bytes themselves
go upstream unchanged.

Any key holder can send up to RELAY_MAX_BODY_BYTES (32 MiB by default), and the relay runs on
the event loop: a document built by json.loads from 30 MiB of `[[],[],…]` takes over a gigabyte
and, with integer arrays, stalls every other request on the worker for seconds. So only a
small body, whose worst case is cheap, is parsed with json.loads; any other is scanned
(Scanner): the whole text is checked, but only the top-level object's keys are looked at and
the values of the fields above kept; no Python object is made per JSON value, nesting is
bounded, and the scan hands the loop back every ~1 ms of work so other requests keep flowing.
"""

import asyncio
import codecs
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import errors
from .usage import approx_tokens, token_quarters

# Top-level fields the relay reads: the model (the gate's model check and price), the output
# limit under each API's name (Anthropic's and Chat Completions' older max_tokens, Chat
# Completions' max_completion_tokens, the Responses API's max_output_tokens; the quota
# reservation), and whether the answer streams (the usage chunk asked for on streamed chat).
MODEL = "model"
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
FIELDS = frozenset({MODEL, *OUTPUT_LIMITS, "stream", "stream_options"})
# An output limit above this is a mistake or an attack, not a model (the largest today allow
# 128K output tokens); it also keeps the reservation's arithmetic far from any overflow.
MAX_OUTPUT_TOKENS = 10_000_000
# Bodies this small are parsed by json.loads. Its cost grows with the number of JSON values,
# not bytes: measured on this project's VM, its worst cases within both bounds (25,000 object
# members; 512 KiB of escaped string) take 2-3.6 ms, while a 330 KB Claude Code-like request
# (47,000 by the count below: commas and colons inside its strings count too) takes 0.7 ms
# here and 3.7 ms in the scanner.
FAST_BYTES = 512 * 1024
FAST_VALUES = 50_000
# Nesting no real request comes near (a few levels); a scanned body deeper than this is refused.
MAX_DEPTH = 200
# A field the relay reads is parsed from its bytes only up to this size (a model name, a
# number, a small object); a larger one is refused.
FIELD_BYTES = 16 * 1024
# The scan's unit of work between two turns of the event loop: at most this many bytes
# matched, or this many tokens handled, each about a millisecond in the worst case.
SLICE_BYTES = 32 * 1024
SLICE_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class Body:
    raw: bytes
    # The top-level FIELDS the body has, with their values (parsed); nothing else.
    fields: dict[str, object]
    error: errors.RelayError | None
    # Approximate input tokens of the whole body (proxy.usage.approx_tokens).
    input_tokens: int
    # Where each field's value lies in `raw`; only for scanned bodies (see with_stream_options).
    spans: dict[str, tuple[int, int]] | None = None

    @property
    def model(self) -> str | None:
        model = self.fields.get(MODEL)
        return model if isinstance(model, str) and model else None

    @property
    def output_limit(self) -> int | None:
        """The output tokens the request allows, under the first name it uses."""
        for name in OUTPUT_LIMITS:
            if self.fields.get(name) is not None:
                return self.fields[name]
        return None

    def with_field(self, name: str, value: object) -> "Body":
        """This body with its top-level `name` set to `value`, changing only those bytes:
        inserted first in the object when it has none, else its value replaced (the other
        fields' spans move with it). A body parsed by json.loads has no spans; it is small,
        and is encoded again when a field it has is replaced."""
        encoded = json.dumps(value, separators=(",", ":")).encode()
        fields = {**self.fields, name: value}
        spans = dict(self.spans) if self.spans is not None else None
        if name not in self.fields:
            start = self.raw.index(b"{") + 1  # The object's brace: only whitespace is before it.
            label = json.dumps(name).encode() + b":"
            raw = self.raw[:start] + label + encoded + b"," + self.raw[start:]
            if spans is not None:
                shift = len(label) + len(encoded) + 1
                spans = {field: (a + shift, b + shift) for field, (a, b) in spans.items()}
                spans[name] = (start + len(label), start + len(label) + len(encoded))
        elif spans is not None:
            start, end = spans[name]
            raw = self.raw[:start] + encoded + self.raw[end:]
            shift = len(encoded) - (end - start)
            spans = {
                field: (a + shift, b + shift) if a > start else (a, b)
                for field, (a, b) in spans.items()
            }
            spans[name] = (start, start + len(encoded))
        else:
            raw = json.dumps({**json.loads(self.raw), name: value}).encode()
        return Body(raw, fields, None, self.input_tokens, spans)

    def with_stream_options(self, options: dict) -> "Body":
        return self.with_field("stream_options", options)


async def read_body(
    receive: Callable[[], Awaitable[dict]], headers: list[tuple[bytes, bytes]], limit: int
) -> Body:
    """Read the request body, stopping once it exceeds `limit` (never holding more)."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return Body(b"", {}, errors.request_too_large(limit), 0)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return Body(b"", {}, errors.request_too_large(limit), 0)
        parts.append(chunk)
        if not message.get("more_body"):
            break
    return await parse_body(b"".join(parts))


async def parse_body(raw: bytes) -> Body:
    if not raw:
        return Body(raw, {}, _invalid_json("the body is empty"), 0)
    if len(raw) <= FAST_BYTES and _values_at_most(raw) <= FAST_VALUES:
        return _parse_small(raw)
    scanner = Scanner(raw)
    while not scanner.step():
        await asyncio.sleep(0)  # Let other requests run between slices.
    if scanner.error is not None:
        return Body(raw, {}, scanner.error, 0)
    fields: dict[str, object] = {}
    for name, (start, end) in scanner.spans.items():
        # Checked by the scan (no NaN, bounded nesting); small, so cheap to parse.
        fields[name] = json.loads(raw[start:end]) if end - start <= FIELD_BYTES else _TOO_LARGE
    input_tokens = -(-scanner.quarters // 4)
    return Body(raw, fields, _check_fields(fields), input_tokens, scanner.spans)


def _values_at_most(raw: bytes) -> int:
    """An upper bound on the body's JSON values: each one after the first follows a comma,
    a colon or an opening bracket (and these bytes inside strings only raise the bound)."""
    return raw.count(b",") + raw.count(b":") + raw.count(b"[") + 1


def _parse_small(raw: bytes) -> Body:
    try:
        payload = json.loads(raw.decode(), parse_constant=_refuse_constant)
    except UnicodeDecodeError as error:
        return Body(raw, {}, _not_utf8(error.start), 0)
    except ValueError as error:
        return Body(raw, {}, _invalid_json(str(error)), 0)
    except RecursionError:
        return Body(raw, {}, _too_deep(), 0)
    input_tokens = approx_tokens(raw)
    if not isinstance(payload, dict):
        return Body(raw, {}, _not_an_object(), input_tokens)
    fields = {name: payload[name] for name in FIELDS & payload.keys()}
    return Body(raw, fields, _check_fields(fields), input_tokens)


def _refuse_constant(name: str) -> None:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON; no API takes them.
    raise ValueError(f"{name} is not a JSON value")


class _TooLarge:
    """A field's value larger than FIELD_BYTES: never parsed."""


_TOO_LARGE = _TooLarge()


def _check_fields(fields: dict[str, object]) -> errors.RelayError | None:
    """The first problem with the fields the relay reads, in the order a reader would fix them."""
    for name, value in fields.items():
        if value is _TOO_LARGE:
            return errors.invalid_request(
                "invalid_field", f"The “{name}” field is larger than {FIELD_BYTES} bytes."
            )
    model = fields.get(MODEL)
    if not isinstance(model, str) or not model:
        return errors.invalid_request(
            "missing_model", "The request body must name a model in its “model” field."
        )
    for name in OUTPUT_LIMITS:
        value = fields.get(name)
        # null is how OpenAI's APIs say "the default"; bool is an int to Python, not to JSON.
        if value is not None and (type(value) is not int or not 1 <= value <= MAX_OUTPUT_TOKENS):
            return errors.invalid_request(
                "invalid_field",
                f"The “{name}” field must be a whole number from 1 to {MAX_OUTPUT_TOKENS:,}.",
            )
    if fields.get("stream") not in (None, True, False):
        return errors.invalid_request("invalid_field", "The “stream” field must be true or false.")
    if not isinstance(fields.get("stream_options", {}), dict | None):
        return errors.invalid_request(
            "invalid_field", "The “stream_options” field must be an object."
        )
    return None


def _invalid_json(detail: str) -> errors.RelayError:
    return errors.invalid_request("invalid_json", f"Invalid JSON: {detail}.")


def _not_an_object() -> errors.RelayError:
    return errors.invalid_request("invalid_json", "The request body must be a JSON object.")


def _not_utf8(position: int) -> errors.RelayError:
    return _invalid_json(f"the body is not UTF-8 (byte {position})")


def _too_deep() -> errors.RelayError:
    return _invalid_json("nested too deeply")


# --- the scanner ---------------------------------------------------------------------------

_WS = rb"[ \t\n\r]*+"
_STRING = rb'"[^"\\\x00-\x1f]*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*+)*+"'
# A number or a literal only counts when what follows it is in sight: a slice may cut one.
_FOLLOWED = rb"(?=[ \t\n\r,\]}])"
_NUMBER = rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
_SCALAR = rb"(?:" + _STRING + rb"|(?:" + _NUMBER + rb"|true|false|null)" + _FOLLOWED + rb")"


def _flat(depth: int) -> bytes:
    """A value nesting at most `depth` containers, as one regular expression: most of a
    large body's values are small ones like these, and the regex engine skips them without a
    turn of the Python loop each."""
    if depth == 0:
        return _SCALAR
    inner = _flat(depth - 1)
    member = _STRING + _WS + b":" + _WS + inner
    array = rb"\[" + _WS + rb"(?:" + inner + _WS + rb"(?:," + _WS + inner + _WS + rb")*+)?+\]"
    obj = rb"\{" + _WS + rb"(?:" + member + _WS + rb"(?:," + _WS + member + _WS + rb")*+)?+\}"
    return rb"(?:" + _SCALAR + rb"|" + array + rb"|" + obj + rb")"


_FLAT_DEPTH = 2
# Indexed by how many containers the value may still open (MAX_DEPTH): one value (of the top-level
# object: each of its keys is looked at); a run of values and their commas (in an array); a run
# of members (in an object below the top level). Each leaves the scan just after a value.
_FLAT_VALUES = [re.compile(_flat(depth)) for depth in range(_FLAT_DEPTH + 1)]
_ARRAY_RUNS = [
    re.compile(_flat(depth) + rb"(?:" + _WS + b"," + _WS + _flat(depth) + rb")*+")
    for depth in range(_FLAT_DEPTH + 1)
]
_OBJECT_RUNS = [
    re.compile(
        _flat(depth)
        + rb"(?:"
        + _WS
        + b","
        + _WS
        + _STRING
        + _WS
        + b":"
        + _WS
        + _flat(depth)
        + rb")*+"
    )
    for depth in range(_FLAT_DEPTH + 1)
]
_WHITESPACE = re.compile(_WS)
_A_STRING = re.compile(_STRING)
# The inside of a string too long to match at once, matched a slice at a time.
_STRING_PART = re.compile(rb'(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+')
_CONSTANT = re.compile(rb"-?+(?:NaN|Infinity)")
_OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT = b"[{]}"
_CLOSERS = {_OPEN_ARRAY: _CLOSE_ARRAY, _OPEN_OBJECT: _CLOSE_OBJECT}
# Longest key worth decoding: the relay's field names, even with every character \u-escaped.
_KEY_BYTES = 6 * len("max_completion_tokens") + 2

# What the scan expects next: a value (the first of an array may be its end instead), a key
# (the first of an object may be its end), the colon after a key, a comma or an end after a
# value, nothing but whitespace after the top-level value.
_VALUE, _FIRST_VALUE, _KEY, _FIRST_KEY, _COLON, _AFTER, _END = range(7)


class _Refused(Exception):
    def __init__(self, error: errors.RelayError) -> None:
        self.error = error


class _Syntax(Exception):
    """Invalid JSON at a position; its line and column are worked out only if it is the
    refusal (a token cut by a slice raises this too, and is tried again)."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position


class Scanner:
    """Checks a whole body as JSON with bounded memory, in steps of bounded work, and keeps
    where the values of the top-level object's FIELDS lie (a repeated key's last, as json.loads
    takes).

    `step()` does one slice and says whether the scan is over; then `error` is its refusal, if
    any, and `spans` and `quarters` (proxy.usage.token_quarters) are set. A slice
    ends at a fixed byte, which may cut a token; a token that does not match after the slice's
    first is tried again at the start of the next slice, before it is called invalid."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.error: errors.RelayError | None = None
        self.spans: dict[str, tuple[int, int]] = {}
        self.quarters = 0
        self._position = 0
        self._state = _VALUE
        self._stack = bytearray()  # The open brackets.
        self._in_string = False  # Inside a string too long for one match.
        self._field: str | None = None  # The top-level field whose value is being scanned.
        self._field_start = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._decoded = 0
        self._slice_start = 0

    def step(self) -> bool:
        try:
            if self._decoded < len(self.raw):
                self._decode_slice()
            if self._position < len(self.raw):
                self._scan_slice()
            if self._position == len(self.raw) and (self._state != _END or self._in_string):
                self._refuse_at_end()
        except _Refused as refused:
            self.error = refused.error
            return True
        except _Syntax as syntax:
            self.error = self._syntax(syntax.message, syntax.position)
            return True
        return self._position == len(self.raw) and self._decoded == len(self.raw)

    def _decode_slice(self) -> None:
        """The body must be UTF-8 (json.loads checks a small one's); its tokens are counted
        from the decoded text."""
        end = min(self._decoded + SLICE_BYTES, len(self.raw))
        try:
            text = self._decoder.decode(self.raw[self._decoded : end], end == len(self.raw))
        except UnicodeDecodeError as error:
            raise _Refused(_not_utf8(self._decoded + error.start)) from None
        self.quarters += token_quarters(text)
        self._decoded = end

    def _scan_slice(self) -> None:
        raw = self.raw
        start = self._slice_start = self._position
        stop = min(start + SLICE_BYTES, len(raw))
        for _ in range(SLICE_TOKENS):
            if self._position >= stop:
                return
            position = _WHITESPACE.match(raw, self._position, stop).end()
            self._position = position
            if position == stop:
                return
            try:
                if not self._token(raw[position], stop):
                    return
            except _Syntax:
                if position > start and stop < len(raw):
                    return  # Perhaps cut by the slice: tried again whole, at the next.
                raise

    def _refuse_at_end(self) -> None:
        if self._in_string:
            raise _Syntax("Unterminated string", len(self.raw))
        if self._state in (_KEY, _FIRST_KEY):
            message = "Expecting property name enclosed in double quotes"
        elif self._state == _COLON:
            message = "Expecting ':' delimiter"
        elif self._state == _AFTER:
            message = "Expecting ',' delimiter"
        else:
            message = "Expecting value"
        raise _Syntax(message, len(self.raw))

    def _token(self, byte: int, stop: int) -> bool:
        """Handle what is at the position; False ends the slice there."""
        if self._in_string:
            return self._string_part(stop)
        state = self._state
        if state == _AFTER:
            self._after(byte)
        elif state in (_VALUE, _FIRST_VALUE):
            self._value(byte, stop)
        elif state in (_KEY, _FIRST_KEY):
            return self._key(byte, stop)
        elif state == _COLON:
            if byte != ord(":"):
                raise _Syntax("Expecting ':' delimiter", self._position)
            self._position += 1
            self._state = _VALUE
            if len(self._stack) == 1:
                self._field_start = self._position
        else:
            raise _Syntax("Extra data", self._position)
        return True

    def _value(self, byte: int, stop: int) -> None:
        raw, position, stack = self.raw, self._position, self._stack
        if byte == _CLOSE_ARRAY and self._state == _FIRST_VALUE:
            self._close(byte)
            return
        if stack:  # Not the top-level value: that one is opened, to look at its keys.
            flat = min(_FLAT_DEPTH, MAX_DEPTH - len(stack))
            if len(stack) == 1 and stack[0] == _OPEN_OBJECT:
                pattern = _FLAT_VALUES[flat]
            elif stack[-1] == _OPEN_ARRAY:
                pattern = _ARRAY_RUNS[flat]
            else:
                pattern = _OBJECT_RUNS[flat]
            match = pattern.match(raw, position, stop)
            if match is not None:
                self._position = match.end()
                self._value_done()
                return
        elif byte != _OPEN_OBJECT:
            raise _Refused(_not_an_object())
        if byte in _CLOSERS:
            if len(stack) == MAX_DEPTH:
                raise _Refused(_too_deep())
            stack.append(byte)
            self._position = position + 1
            self._state = _FIRST_VALUE if byte == _OPEN_ARRAY else _FIRST_KEY
        elif byte == ord('"'):
            self._position = position + 1
            self._in_string = True
        elif constant := _CONSTANT.match(raw, position):
            raise _Refused(_invalid_json(f"{constant.group().decode()} is not a JSON value"))
        else:
            raise _Syntax("Expecting value", position)

    def _string_part(self, stop: int) -> bool:
        raw = self.raw
        end = _STRING_PART.match(raw, self._position, stop).end()
        self._position = end
        if end < len(raw) and raw[end] == ord('"'):
            self._position = end + 1
            self._in_string = False
            if self._state in (_KEY, _FIRST_KEY):
                self._state = _COLON  # A long key, so not a field's.
            else:
                self._value_done()
            return True
        if end == len(raw):
            raise _Syntax("Unterminated string", end)
        if end >= stop - 6 and stop < len(raw):
            return False  # Cut by the slice, perhaps inside an escape: the next one goes on.
        if raw[end] == ord("\\"):
            raise _Syntax("Invalid \\escape", end)
        raise _Syntax("Invalid control character", end)

    def _key(self, byte: int, stop: int) -> bool:
        raw, position = self.raw, self._position
        if byte == _CLOSE_OBJECT and self._state == _FIRST_KEY:
            self._close(byte)
            return True
        if byte != ord('"'):
            raise _Syntax("Expecting property name enclosed in double quotes", position)
        string = _A_STRING.match(raw, position, stop)
        if string is None:
            if len(self._stack) == 1 and position > self._slice_start and stop < len(raw):
                # A top-level key is read whole (it may be a field's): perhaps cut by the slice.
                raise _Syntax("Unterminated string", position)
            self._position = position + 1
            self._in_string = True
            return True
        self._position = string.end()
        self._state = _COLON
        key = string.group()
        if len(self._stack) == 1 and len(key) <= _KEY_BYTES:
            name = json.loads(key.decode(errors="replace"))
            self._field = name if name in FIELDS else None
        return True

    def _after(self, byte: int) -> None:
        if byte == ord(","):
            self._position += 1
            self._state = _VALUE if self._stack[-1] == _OPEN_ARRAY else _KEY
        elif byte in (_CLOSE_ARRAY, _CLOSE_OBJECT):
            self._close(byte)
        else:
            raise _Syntax("Expecting ',' delimiter", self._position)

    def _close(self, byte: int) -> None:
        if _CLOSERS[self._stack[-1]] != byte:
            raise _Syntax("Expecting ',' delimiter", self._position)
        self._stack.pop()
        self._position += 1
        self._value_done()

    def _value_done(self) -> None:
        """A value ended at the position: the top-level one, or perhaps a field's."""
        if not self._stack:
            self._state = _END
            return
        self._state = _AFTER
        if self._field is not None and len(self._stack) == 1:
            self.spans[self._field] = (self._field_start, self._position)
            self._field = None

    def _syntax(self, message: str, position: int) -> errors.RelayError:
        line = self.raw.count(b"\n", 0, position) + 1
        column = position - self.raw.rfind(b"\n", 0, position)
        return _invalid_json(f"{message}: line {line} column {column} (byte {position})")
