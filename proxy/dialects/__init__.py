"""The vendor APIs the relay speaks, one Dialect each: how its answers report usage, the name of
its output limit and how its requests go upstream; and its Vendor's: the shape its refusals
take and how its SDK reads the model listing. The relay switches on none of these by name:
proxy.app routes each path to its dialect, and everything after asks the dialect.
"""

from .anthropic import ANTHROPIC
from .anthropic import COUNT_TOKENS as ANTHROPIC_COUNT_TOKENS
from .anthropic import MESSAGES as ANTHROPIC_MESSAGES
from .base import Dialect, ErrorShape, UsageReader, Vendor
from .openai import CHAT as OPENAI_CHAT
from .openai import OPENAI
from .openai import RESPONSES as OPENAI_RESPONSES

__all__ = [
    "ANTHROPIC",
    "ANTHROPIC_COUNT_TOKENS",
    "ANTHROPIC_MESSAGES",
    "OPENAI",
    "OPENAI_CHAT",
    "OPENAI_RESPONSES",
    "Dialect",
    "ErrorShape",
    "UsageReader",
    "Vendor",
]
