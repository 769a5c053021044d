"""proxy.usage: token estimates for text nobody has counted (reservations, streams cut short)."""

import pytest

from proxy.dialects import ANTHROPIC_MESSAGES
from proxy.usage import Usage, approx_tokens


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
        ANTHROPIC_MESSAGES.usage.event(
            usage, {"type": "content_block_delta", "delta": {"type": "text_delta", "text": text}}
        )

    usage.estimate_missing(input_tokens=approx_tokens("请总结".encode()))

    assert (usage.output_tokens, usage.input_tokens) == (21, 3)
    assert not usage.complete
