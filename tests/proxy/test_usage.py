"""proxy.usage: token estimates for text nobody has counted (reservations, streams cut short)."""

import pytest

from proxy.usage import MAX_TOKENS, Usage, approx_tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        (b"", 0),
        (b"12345678", 2),  # four ASCII characters a token
        (b"123456789", 3),  # rounded up
        ("你好世界", 4),  # one token a CJK character (bytes / 4 said 3)
        ("你好世界".encode(), 4),  # the same as UTF-8 bytes
        ("Hi 你好".encode(), 3),  # 3 quarters + 2 whole tokens
        ("こんにちは、世界", 8),
        (b'"\\u4f60\\u597d"', 4),  # JSON-escaped CJK is ASCII: 14 bytes
        (b"\xff\xfe", 2),  # not UTF-8: each undecodable byte counts as a character
    ],
)
def test_approx_tokens(text, tokens):
    assert approx_tokens(text) == tokens


def test_stream_cut_short_estimates_cjk_output_per_character():
    usage = Usage()
    for text in ["你好"] * 10 + ["abcd"]:
        usage.anthropic_event(
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}}
        )

    usage.estimate_missing(input_tokens=approx_tokens("请总结".encode()))

    assert (usage.output_tokens, usage.input_tokens) == (21, 3)
    assert not usage.complete


def test_counts_beyond_what_a_row_holds_are_capped():
    anthropic = Usage()
    anthropic.anthropic_body(
        {
            "usage": {
                "input_tokens": 5_000_000_000,
                "output_tokens": 7,
                "cache_read_input_tokens": -3,
            }
        }
    )
    openai = Usage()
    openai.openai_body(
        {
            "usage": {
                "prompt_tokens": 2**40,
                "completion_tokens": 2**31,
                "prompt_tokens_details": {"cached_tokens": 10},
            }
        }
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


@pytest.mark.parametrize("end", ["response.completed", "response.incomplete", "response.failed"])
def test_responses_stream_usage_comes_from_its_terminal_event(end):
    usage = Usage()
    usage.responses_event({"type": "response.created", "response": {"usage": None}})
    usage.responses_event({"type": "response.output_text.delta", "delta": "Hello"})
    usage.responses_event(
        {
            "type": end,
            "response": {
                "usage": {
                    "input_tokens": 120,
                    "input_tokens_details": {"cached_tokens": 100},
                    "output_tokens": 9,
                }
            },
        }
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
        usage.responses_event({"type": kind, "delta": delta})

    usage.estimate_missing(input_tokens=approx_tokens(b"x" * 40))

    assert not usage.complete
    # 12 + 7 + 4 = 23 characters, about 6 tokens; the input estimated from the request.
    assert (usage.output_tokens, usage.input_tokens) == (6, 10)
