"""The request body: the scanner against json.loads on nasty cases, the fields the relay reads,
and, through the real relay, bad bodies refused in each API's shape with nothing forwarded, and
a 30 MiB body handled without the memory or the stall json.loads would cost."""

import asyncio
import json
import threading
import time

import pytest

from proxy import body as body_module
from proxy.body import Scanner, parse_body

from .conftest import CLAUDE, GPT
from .test_gate import (
    assert_anthropic_error,
    assert_nothing_forwarded_or_recorded,
    assert_openai_error,
)

MiB = 1024 * 1024


def scan(raw: bytes) -> Scanner:
    scanner = Scanner(raw)
    while not scanner.step():
        pass
    return scanner


def scanned_fields(raw: bytes) -> dict:
    scanner = scan(raw)
    assert scanner.error is None, scanner.error
    return {name: json.loads(raw[start:end]) for name, (start, end) in scanner.spans.items()}


@pytest.fixture(params=[24, 32 * 1024], ids=["tiny-slices", "default-slices"])
def slice_bytes(request, monkeypatch):
    """Tiny slices cut every token somewhere: each case is also scanned across cuts."""
    monkeypatch.setattr(body_module, "SLICE_BYTES", request.param)


# --- the scanner ----------------------------------------------------------------------------

VALID = [
    b'{"model": "m"}',
    b'{"model": "a", "model": "b"}',  # json.loads keeps the last
    b'{"mod\\u0065l": "escaped key"}',
    b' \r\n\t{ "model" : "spaced" , "stream" : true } \n',
    b'{"messages": {"model": "nested, not taken"}, "model": "top"}',
    b'{"messages": [{"model": "in an array"}], "max_tokens": 5}',
    b'{"model": "braces {[\\"\\\\]} and quotes", "x": "\\"}\\\\"}',
    b'{"model": "caf\xc3\xa9 \\ud83d\\ude00", "stream_options": {"include_usage": false}}',
    b'{"model": "m", "max_tokens": 12345678901234567890, "stream": null}',
    b'{"x": [[[[[[[[1]]]]]]]], "model": "m", "y": {"a": {"b": {"c": {"d": []}}}}}',
    b'{"x": [1, -2.5e-3, true, false, null, "s", [], {}], "model": "m"}',
    b'{"model": "m", "messages": "' + b"x" * 200 + b'"}',
    b'{"' + b"k" * 300 + b'": 1, "model": "after a long key"}',
]


@pytest.mark.parametrize("raw", VALID)
def test_the_scanner_reads_the_top_level_fields_as_json_loads_does(raw, slice_bytes):
    parsed = json.loads(raw)

    assert scanned_fields(raw) == {k: v for k, v in parsed.items() if k in body_module.FIELDS}


INVALID = [
    (b'{"model": "m"', "Expecting ',' delimiter: line 1 column 14 (byte 13)"),
    (b'{"model": "m', "Unterminated string: line 1 column 13 (byte 12)"),
    (b'{"model": "m"} x', "Extra data: line 1 column 16 (byte 15)"),
    (
        b'{"model": "m",}',
        "Expecting property name enclosed in double quotes: line 1 column 15 (byte 14)",
    ),
    (b'{"model" "m"}', "Expecting ':' delimiter: line 1 column 10 (byte 9)"),
    (b'{"model": "m", "x": [1, 2,]}', "Expecting value: line 1 column 27 (byte 26)"),
    (b'{"model": "m", "x": [1 2]}', "Expecting ',' delimiter: line 1 column 24 (byte 23)"),
    (b'{"model": "m", "x": [}', "Expecting value: line 1 column 22 (byte 21)"),
    (
        b'{"model": "m", "x": {]}',
        "Expecting property name enclosed in double quotes: line 1 column 22 (byte 21)",
    ),
    (b'{"model": "m", "x": [1}', "Expecting ',' delimiter: line 1 column 23 (byte 22)"),
    (b'{"model": "a\\qb"}', "Invalid \\escape: line 1 column 13 (byte 12)"),
    (b'{"model": "a\nb"}', "Invalid control character: line 1 column 13 (byte 12)"),
    (b'{"model": "m",\n "x": 01}', "Expecting value: line 2 column 7 (byte 21)"),
    (b'{"model": "m", "x": tru}', "Expecting value: line 1 column 21 (byte 20)"),
    (b'{"model": "m", "x": [NaN]}', "NaN is not a JSON value"),
    (b'{"model": "m", "x": -Infinity}', "-Infinity is not a JSON value"),
    (b'{"model": "m", "x": "\xff"}', "the body is not UTF-8 (byte 21)"),
]


@pytest.mark.parametrize(("raw", "detail"), INVALID)
def test_the_scanner_refuses_what_json_loads_refuses(raw, detail, slice_bytes):
    with pytest.raises(ValueError):
        json.loads(raw, parse_constant=body_module._refuse_constant)

    assert scan(raw).error.message == f"Invalid JSON: {detail}."


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"model"', b"5", b"\xef\xbb\xbf{}"])
def test_the_scanner_refuses_anything_but_an_object(raw):
    assert scan(raw).error.message == "The request body must be a JSON object."


def test_nesting_is_scanned_up_to_the_limit():
    """200 levels of containers (json.loads of a small body goes deeper, to its recursion
    limit, about 990: see proxy.body)."""
    at_limit = b'{"model": "m", "x": ' + b"[" * 199 + b"]" * 199 + b"}"
    beyond = b'{"model": "m", "x": ' + b"[" * 200 + b"]" * 200 + b"}"

    assert scanned_fields(at_limit) == {"model": "m"}
    assert scan(beyond).error.message == "Invalid JSON: nested too deeply."


def test_the_scanner_counts_the_tokens_approx_tokens_counts():
    raw = json.dumps({"model": "m", "text": "请总结 this " * 5000}, ensure_ascii=False).encode()

    assert -(-scan(raw).quarters // 4) == body_module.approx_tokens(raw)


# --- the fields, on both paths --------------------------------------------------------------


def large(fields: bytes) -> bytes:
    """A body over FAST_VALUES values, so it is scanned, with `fields` first."""
    return b"{" + fields + b', "messages": [' + b"0," * 60_000 + b"0]}"


def small(fields: bytes) -> bytes:
    return b"{" + fields + b', "messages": []}'


LIMIT = "must be a whole number from 1 to 10,000,000."
BAD_FIELDS = [
    (b'"model": "m", "max_tokens": 1e60', "invalid_field", f"The “max_tokens” field {LIMIT}"),
    (
        b'"model": "m", "max_tokens": ' + b"1" * 61,
        "invalid_field",
        f"The “max_tokens” field {LIMIT}",
    ),
    (b'"model": "m", "max_tokens": true', "invalid_field", f"The “max_tokens” field {LIMIT}"),
    (b'"model": "m", "max_tokens": 0', "invalid_field", f"The “max_tokens” field {LIMIT}"),
    (b'"model": "m", "max_tokens": -5', "invalid_field", f"The “max_tokens” field {LIMIT}"),
    (b'"model": "m", "max_tokens": "50"', "invalid_field", f"The “max_tokens” field {LIMIT}"),
    (b'"model": "m", "max_tokens": 50.0', "invalid_field", f"The “max_tokens” field {LIMIT}"),
    (
        b'"model": "m", "max_completion_tokens": 10000001',
        "invalid_field",
        f"The “max_completion_tokens” field {LIMIT}",
    ),
    (
        b'"model": "m", "max_output_tokens": [1]',
        "invalid_field",
        f"The “max_output_tokens” field {LIMIT}",
    ),
    (
        b'"model": "m", "stream": "yes"',
        "invalid_field",
        "The “stream” field must be true or false.",
    ),
    (
        b'"model": "m", "stream": true, "stream_options": true',
        "invalid_field",
        "The “stream_options” field must be an object.",
    ),
    (
        b'"model": "m", "stream_options": []',
        "invalid_field",
        "The “stream_options” field must be an object.",
    ),
    (b'"model": 5', "missing_model", "The request body must name a model in its “model” field."),
    (b'"model": "m", "x": NaN', "invalid_json", "Invalid JSON: NaN is not a JSON value."),
    (b'"model": "m", "x": Infinity', "invalid_json", "Invalid JSON: Infinity is not a JSON value."),
]


@pytest.mark.parametrize("shape", [small, large])
@pytest.mark.parametrize(("fields", "code", "message"), BAD_FIELDS)
def test_bad_fields(shape, fields, code, message):
    body = asyncio.run(parse_body(shape(fields)))

    assert (body.error.status, body.error.code, body.error.message) == (400, code, message)


def test_a_field_too_large_to_parse_is_refused():
    body = asyncio.run(parse_body(large(b'"model": "' + b"m" * 20_000 + b'"')))

    assert body.error.message == "The “model” field is larger than 16384 bytes."


@pytest.mark.parametrize("shape", [small, large])
def test_good_fields(shape):
    body = asyncio.run(
        parse_body(shape(b'"model": "m", "max_tokens": null, "max_completion_tokens": 7'))
    )

    assert body.error is None
    assert (body.model, body.output_limit) == ("m", 7)
    assert body.input_tokens == body_module.approx_tokens(body.raw)


@pytest.mark.parametrize("shape", [small, large])
@pytest.mark.parametrize(
    ("fields", "options"),
    [
        (b'"model": "m", "stream": true', None),
        (b'"model": "m", "stream": true, "stream_options": null', None),
        (b'"model": "m", "stream_options": {"include_usage": false, "x": 1}', {"x": 1}),
    ],
)
def test_with_stream_options_changes_only_that_field(shape, fields, options):
    raw = shape(fields)
    body = asyncio.run(parse_body(raw))

    changed = body.with_stream_options({**(options or {}), "include_usage": True})

    expected = {**json.loads(raw), "stream_options": {**(options or {}), "include_usage": True}}
    assert json.loads(changed.raw) == expected
    assert changed.fields["stream_options"] == expected["stream_options"]
    if shape is large:  # The rest of the bytes as they came.
        assert changed.raw.endswith(raw[raw.index(b', "messages"') :])


# --- through the relay ----------------------------------------------------------------------

MESSAGES = b'"messages": [{"role": "user", "content": "Hi"}]'


@pytest.mark.parametrize(("fields", "code", "message"), BAD_FIELDS)
def test_bad_fields_are_refused_in_each_api_shape(relay, fields, code, message):
    fields = fields.replace(b'"m"', b'"%s"' % CLAUDE.encode())
    anthropic = relay.call("POST", "/v1/messages", b"{" + fields + b", " + MESSAGES + b"}")
    fields = fields.replace(CLAUDE.encode(), GPT.encode())
    openai = relay.call("POST", "/v1/chat/completions", b"{" + fields + b", " + MESSAGES + b"}")
    responses = relay.call("POST", "/v1/responses", b"{" + fields + b', "input": "Hi"}')

    assert_anthropic_error(anthropic, 400, "invalid_request_error", message)
    assert_openai_error(openai, 400, "invalid_request_error", code, message)
    assert_openai_error(responses, 400, "invalid_request_error", code, message)
    assert_nothing_forwarded_or_recorded(relay)


@pytest.mark.parametrize("size", ["small", "large"])
def test_deep_nesting_is_a_400_not_a_500(relay, size):
    deep = b"[" * 5000 + b"]" * 5000
    padding = b', "padding": "' + b"x" * 2 * MiB + b'"' if size == "large" else b""
    raw = b'{"model": "%s", "messages": %s%s}' % (CLAUDE.encode(), deep, padding)

    response = relay.call("POST", "/v1/messages", raw)

    assert_anthropic_error(
        response, 400, "invalid_request_error", "Invalid JSON: nested too deeply."
    )
    assert_nothing_forwarded_or_recorded(relay)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class PeakMemory:
    """The process's largest resident size while it runs, sampled every few milliseconds."""

    def __enter__(self):
        self.baseline = self.peak = _resident_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _resident_bytes())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def thirty_mib_of_empty_lists() -> bytes:
    # count_tokens: the fake upstream keeps the bytes without parsing them.
    head = b'{"model": "%s", "messages": [' % CLAUDE.encode()
    return head + b"[]," * (10 * MiB - 20) + b"[]]}"


def test_thirty_mib_of_empty_lists_is_forwarded_in_bounded_memory(relay):
    raw = thirty_mib_of_empty_lists()

    with PeakMemory() as memory:
        response = relay.call("POST", "/v1/messages/count_tokens", raw)

    assert response.status == 200, response.body
    assert relay.primary.requests[0].body == raw
    # The bytes are held a few times over (client, relay, upstream); json.loads built a
    # document of over 1.5 GB from them.
    assert memory.growth < 400 * MiB, memory.growth / MiB


def test_small_requests_go_on_while_a_large_body_is_scanned(relay, monkeypatch):
    # Smaller slices: the scan takes longer, so the small requests surely overlap it.
    monkeypatch.setattr(body_module, "SLICE_BYTES", 4 * 1024)
    scanning, scanned = threading.Event(), threading.Event()
    step = Scanner.step

    small_done = threading.Event()

    def watched_step(scanner):
        scanning.set()
        if not small_done.is_set():
            # A slower machine's step (each one still yields to the loop after it): the scan
            # then surely outlasts the small requests, however busy this machine is.
            time.sleep(0.002)
        done = step(scanner)
        if done:
            scanned.set()
        return done

    monkeypatch.setattr(Scanner, "step", watched_step)
    big: list = []
    thread = threading.Thread(
        target=lambda: big.append(
            relay.call("POST", "/v1/messages/count_tokens", thirty_mib_of_empty_lists())
        )
    )
    thread.start()
    assert scanning.wait(30)

    small_statuses = []
    for _ in range(5):
        message = {
            "model": CLAUDE,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hi"}],
        }
        small_statuses.append(relay.call("POST", "/v1/messages", message).status)
    finished_first = not scanned.is_set()
    small_done.set()
    thread.join()

    assert small_statuses == [200] * 5
    assert finished_first
    assert big[0].status == 200
