"""proxy.dialects: each vendor API's usage, refusals, requests upstream and model listing."""

import asyncio
import json

import pytest

from proxy import errors, mock
from proxy.body import Body, parse_body
from proxy.dialects import (
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
)
from proxy.forwarding import Forwarder
from proxy.models import Channel
from proxy.usage import MAX_TOKENS, SSESplitter, Usage, approx_tokens, event_json

# --- usage --------------------------------------------------------------------------------


def test_counts_beyond_what_a_row_holds_are_capped():
    anthropic = Usage()
    ANTHROPIC_MESSAGES.usage.body(
        anthropic,
        {
            "usage": {
                "input_tokens": 5_000_000_000,
                "output_tokens": 7,
                "cache_read_input_tokens": -3,
            }
        },
    )
    openai = Usage()
    OPENAI_CHAT.usage.body(
        openai,
        {
            "usage": {
                "prompt_tokens": 2**40,
                "completion_tokens": 2**31,
                "prompt_tokens_details": {"cached_tokens": 10},
            }
        },
    )

    assert (anthropic.input_tokens, anthropic.output_tokens, anthropic.cache_read_tokens) == (
        MAX_TOKENS,
        7,
        0,
    )
    assert (openai.input_tokens, openai.output_tokens, openai.cache_read_tokens) == (
        MAX_TOKENS - 10,
        MAX_TOKENS,
        10,
    )


def _split(five_minutes: int, one_hour: int) -> dict:
    return {"ephemeral_5m_input_tokens": five_minutes, "ephemeral_1h_input_tokens": one_hour}


@pytest.mark.parametrize(
    ("reported", "cache_creation", "one_hour"),
    [
        ({"cache_creation_input_tokens": 900, "cache_creation": _split(300, 600)}, 900, 600),
        ({"cache_creation_input_tokens": 900}, 900, 0),
        ({"cache_creation_input_tokens": 900, "cache_creation": {}}, 900, 0),
        ({"cache_creation_input_tokens": 900, "cache_creation": "damaged"}, 900, 0),
        ({"cache_creation": _split(300, 600)}, 900, 600),
        # A total below its parts: billed for the parts.
        ({"cache_creation_input_tokens": 100, "cache_creation": _split(0, 600)}, 600, 600),
        ({"cache_creation_input_tokens": 900, "cache_creation": _split(300, -5)}, 900, 0),
        ({"cache_creation": _split(2**31, 2**31)}, MAX_TOKENS, MAX_TOKENS),
    ],
    ids=[
        "split",
        "no-split",
        "empty-split",
        "damaged-split",
        "split-without-total",
        "total-below-parts",
        "negative-part",
        "capped",
    ],
)
def test_anthropic_cache_writes_split_by_lifetime(reported, cache_creation, one_hour):
    usage = Usage()

    ANTHROPIC_MESSAGES.usage.body(usage, {"usage": {"input_tokens": 1, **reported}})

    assert (usage.cache_creation_tokens, usage.cache_creation_1h_tokens) == (
        cache_creation,
        one_hour,
    )


def test_anthropic_stream_split_from_message_start_then_message_delta():
    start = {
        "type": "message_start",
        "message": {
            "usage": {
                "input_tokens": 10,
                "output_tokens": 1,
                "cache_creation_input_tokens": 500,
                "cache_creation": _split(500, 0),
            }
        },
    }
    delta = {
        "type": "message_delta",
        "usage": {
            "output_tokens": 40,
            "cache_creation_input_tokens": 800,
            "cache_creation": _split(300, 500),
        },
    }
    usage = Usage()

    ANTHROPIC_MESSAGES.usage.event(usage, start)
    assert (usage.cache_creation_tokens, usage.cache_creation_1h_tokens) == (500, 0)
    ANTHROPIC_MESSAGES.usage.event(usage, delta)

    assert (usage.output_tokens, usage.cache_creation_tokens, usage.cache_creation_1h_tokens) == (
        40,
        800,
        500,
    )
    assert usage.complete


def test_anthropic_message_delta_with_only_the_output_keeps_the_split_of_message_start():
    start = {
        "type": "message_start",
        "message": {
            "usage": {"cache_creation_input_tokens": 700, "cache_creation": _split(100, 600)}
        },
    }
    usage = Usage()

    ANTHROPIC_MESSAGES.usage.event(usage, start)
    ANTHROPIC_MESSAGES.usage.event(usage, {"type": "message_delta", "usage": {"output_tokens": 9}})

    assert (usage.output_tokens, usage.cache_creation_tokens, usage.cache_creation_1h_tokens) == (
        9,
        700,
        600,
    )


@pytest.mark.parametrize("end", ["response.completed", "response.incomplete", "response.failed"])
def test_responses_stream_usage_comes_from_its_terminal_event(end):
    usage = Usage()
    OPENAI_RESPONSES.usage.event(usage, {"type": "response.created", "response": {"usage": None}})
    OPENAI_RESPONSES.usage.event(usage, {"type": "response.output_text.delta", "delta": "Hello"})
    OPENAI_RESPONSES.usage.event(
        usage,
        {
            "type": end,
            "response": {
                "usage": {
                    "input_tokens": 120,
                    "input_tokens_details": {"cached_tokens": 100},
                    "output_tokens": 9,
                }
            },
        },
    )

    assert usage.complete
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (20, 100, 9)


def test_a_responses_stream_cut_short_is_estimated_from_every_kind_of_delta():
    usage = Usage()
    for kind, delta in [
        ("response.output_text.delta", "abcd" * 3),
        ("response.function_call_arguments.delta", '{"a":1}'),
        ("response.reasoning_summary_text.delta", "abcd"),
        ("response.output_text.done", "not counted again" * 10),
        ("response.output_text.delta", None),
    ]:
        OPENAI_RESPONSES.usage.event(usage, {"type": kind, "delta": delta})

    usage.estimate_missing(input_tokens=approx_tokens(b"x" * 40))

    assert not usage.complete
    # 12 + 7 + 4 = 23 characters, about 6 tokens; the input estimated from the request.
    assert (usage.output_tokens, usage.input_tokens) == (6, 10)


def test_count_tokens_reads_no_usage_from_its_answer():
    counted, message = Usage(), Usage()
    answer = {"input_tokens": 12, "usage": {"input_tokens": 12, "output_tokens": 3}}

    ANTHROPIC_COUNT_TOKENS.usage.body(counted, answer)
    ANTHROPIC_MESSAGES.usage.body(message, answer)

    assert counted == Usage()
    assert (message.input_tokens, message.output_tokens, message.complete) == (12, 3, True)


@pytest.mark.parametrize(
    ("chunk", "usage_only"),
    [
        ({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}, True),
        ({"choices": [{"delta": {"content": "Hi"}}], "usage": {"prompt_tokens": 4}}, False),
        ({"choices": [{"delta": {"content": "Hi"}}]}, False),
    ],
)
def test_only_a_chat_chunk_without_choices_is_usage_only(chunk, usage_only):
    assert OPENAI_CHAT.usage.event(Usage(), chunk) is usage_only


# --- refusals ----------------------------------------------------------------------------


QUOTA = errors.quota_used_up("1.00", "1.00")
ANTHROPIC_REFUSAL = {
    "type": "error",
    "error": {"type": "billing_error", "message": QUOTA.message},
    "request_id": "req_1",
}
OPENAI_REFUSAL = {
    "error": {"message": QUOTA.message, "type": "insufficient_quota", "code": "insufficient_quota"}
}


@pytest.mark.parametrize(
    ("dialect", "status", "body"),
    [
        (ANTHROPIC_MESSAGES, 402, ANTHROPIC_REFUSAL),
        (ANTHROPIC_COUNT_TOKENS, 402, ANTHROPIC_REFUSAL),
        # OpenAI answers a used-up quota with 429.
        (OPENAI_CHAT, 429, OPENAI_REFUSAL),
        (OPENAI_RESPONSES, 429, OPENAI_REFUSAL),
    ],
)
def test_each_dialect_refuses_in_its_own_shape(dialect, status, body):
    assert dialect.vendor.errors.status(QUOTA) == status
    assert json.loads(dialect.vendor.errors.body(QUOTA, "req_1")) == body


def test_a_refusal_named_for_a_key_is_a_copy():
    refusal = errors.key_disabled()

    named = refusal.for_key(7)

    assert (named.key_id, refusal.key_id) == (7, None)
    assert (named.status, named.code, named.message) == (
        refusal.status,
        refusal.code,
        refusal.message,
    )


# --- requests upstream --------------------------------------------------------------------


def body_of(fields: dict) -> Body:
    return asyncio.run(parse_body(json.dumps(fields).encode()))


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}


def test_a_chat_stream_that_did_not_ask_for_usage_asks_for_it_upstream():
    payload, raw, strip_usage = OPENAI_CHAT.upstream_request(body_of({**CHAT, "stream": True}))

    assert strip_usage
    assert payload["stream_options"] == {"include_usage": True}
    assert json.loads(raw) == {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    ("dialect", "fields"),
    [
        (OPENAI_CHAT, CHAT),
        (OPENAI_CHAT, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
        (OPENAI_RESPONSES, {"model": "gpt-4o", "input": "Hi", "stream": True}),
        (ANTHROPIC_MESSAGES, {"model": "claude-sonnet-4-6", "max_tokens": 5, "stream": True}),
    ],
)
def test_any_other_body_goes_upstream_as_sent(dialect, fields):
    body = body_of(fields)

    assert dialect.upstream_request(body) == (body.fields, body.raw, False)


# --- the mock channel answers every dialect, in what its reader reads ----------------------


@pytest.mark.parametrize("dialect", [ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES])
@pytest.mark.parametrize("stream", [False, True])
def test_the_mock_answer_reports_usage_its_dialect_reads(dialect, stream):
    payload = {"model": "m", "stream": stream, "stream_options": {"include_usage": True}}
    request = json.dumps(payload).encode()
    answer = mock.respond(dialect=dialect, payload=payload, request=request)
    usage = Usage()

    data = asyncio.run(answer.read())
    if stream:
        for event in SSESplitter().feed(data):
            parsed = event_json(event)
            if parsed is not None:
                dialect.usage.event(usage, parsed)
    else:
        dialect.usage.body(usage, json.loads(data))

    text_tokens = approx_tokens(mock._text("m"))
    assert answer.is_stream is stream
    assert usage.complete
    assert (usage.input_tokens, usage.output_tokens) == (approx_tokens(request), text_tokens)


def test_the_mock_counts_tokens_for_count_tokens():
    answer = mock.respond(dialect=ANTHROPIC_COUNT_TOKENS, payload={"model": "m"}, request=b"x" * 40)

    assert json.loads(asyncio.run(answer.read())) == {"input_tokens": 10}


# --- a transport for every channel provider -----------------------------------------------


def test_each_channel_provider_has_its_transport():
    forwarder = Forwarder()

    assert set(forwarder.transports) == set(Channel.Provider)
    assert forwarder.transports[Channel.Provider.ANTHROPIC] is forwarder.http
    assert forwarder.transports[Channel.Provider.OPENAI] is forwarder.http
    assert isinstance(forwarder.transports[Channel.Provider.MOCK], mock.MockTransport)
