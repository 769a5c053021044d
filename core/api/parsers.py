"""The API's JSON parser: DRF's, except that a number with a fraction or exponent keeps the
text it was sent as."""

import codecs
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json


class JsonNumber(float):
    """A JSON number such as 25.5: the float json would give, so every field reads it as before,
    plus its literal, so that an amount can be read exactly (as a float, 1e-400 is 0.0, and a
    quota of 0 means unlimited)."""

    literal: str

    def __new__(cls, literal: str) -> "JsonNumber":
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        # DRF's own parse with parse_float added, for which it has no hook.
        encoding = parsers.get_encoding(parser_context or {})
        try:
            return json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=json.strict_constant if self.strict else None,
                parse_float=JsonNumber,
            )
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
