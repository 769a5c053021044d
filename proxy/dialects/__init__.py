"""The vendor APIs the relay speaks, one Dialect each: the shape its refusals take, how its
answers report usage, the name of its output limit, how its requests go upstream, and how its
SDK reads the model listing. The relay switches on none of these by name: proxy.app routes each
path to its dialect, and everything after asks the dialect.
"""

from .anthropic import COUNT_TOKENS as ANTHROPIC_COUNT_TOKENS
from .anthropic import ERRORS as ANTHROPIC_ERRORS
from .anthropic import MESSAGES as ANTHROPIC_MESSAGES
from .base import Dialect, ErrorShape, UsageReader
from .openai import CHAT as OPENAI_CHAT
from .openai import ERRORS as OPENAI_ERRORS
from .openai import RESPONSES as OPENAI_RESPONSES

__all__ = [
    "ANTHROPIC_COUNT_TOKENS",
    "ANTHROPIC_ERRORS",
    "ANTHROPIC_MESSAGES",
    "OPENAI_CHAT",
    "OPENAI_ERRORS",
    "OPENAI_RESPONSES",
    "Dialect",
    "ErrorShape",
    "UsageReader",
]
