"""The API's JSON parser: DRF's, with numbers that keep the text they were sent as."""

import io

import pytest
from rest_framework.exceptions import ParseError

from core.api.parsers import JsonNumber, JSONParser


def parse(body: bytes, encoding: str = "utf-8"):
    return JSONParser().parse(io.BytesIO(body), parser_context={"encoding": encoding})


def test_a_number_with_a_fraction_or_exponent_is_a_float_that_keeps_its_literal():
    data = parse(b'{"tiny": 1e-400, "price": 25.50, "list": [0.1], "count": 2}')

    assert isinstance(data["tiny"], JsonNumber)
    assert (data["tiny"], data["tiny"].literal) == (0.0, "1e-400")
    assert (data["price"], data["price"].literal) == (25.5, "25.50")
    assert data["list"][0].literal == "0.1"
    # Whole numbers stay ints, as json gives them.
    assert type(data["count"]) is int


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        (
            b'{"a": NaN}',
            "utf-8",
            "JSON parse error - Out of range float values are not JSON compliant: 'NaN'",
        ),
        (b'{"a": ', "utf-8", "JSON parse error - Expecting value: line 1 column 7 (char 6)"),
        # A compressing codec would expand a small body without bound: DRF refuses it.
        (b"{}", "bz2_codec", 'Unsupported charset "bz2_codec" in request Content-Type header.'),
    ],
)
def test_what_drf_refuses_is_still_refused(body, encoding, message):
    with pytest.raises(ParseError) as caught:
        parse(body, encoding)
    assert str(caught.value.detail) == message
