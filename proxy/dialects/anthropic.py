"""Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens; Claude Code).

Usage: `message_start` carries the input and cache tokens, `message_delta` the output
(cumulative, and lately the rest again); a non-streaming body has one `usage`. Cache writes
come as a total (`cache_creation_input_tokens`) and, where the API splits them by lifetime, as
`cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}`; the 1-hour part is
priced apart (billing.pricing). A later report overrides what an earlier one said.
"""

import json
from datetime import datetime

from ..errors import RelayError
from ..usage import MAX_TOKENS, Usage, reported_count, token_quarters
from .base import Dialect, Vendor


class AnthropicErrors:
    """{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}"""

    def status(self, error: RelayError) -> int:
        return error.status

    def body(self, error: RelayError, request_id: str) -> bytes:
        payload = {
            "type": "error",
            "error": {"type": error.anthropic_type, "message": error.message},
            "request_id": request_id,
        }
        return json.dumps(payload).encode()


class MessagesUsage:
    def event(self, usage: Usage, data: dict) -> bool:
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            for field in ("text", "partial_json", "thinking"):
                value = delta.get(field)
                if isinstance(value, str):
                    usage.produced_quarters += token_quarters(value)
        elif kind == "message_start":
            _read((data.get("message") or {}).get("usage") or {}, usage)
        elif kind == "message_delta":
            _read(data.get("usage") or {}, usage)
            usage.complete = True
        return False

    def body(self, usage: Usage, data: dict) -> None:
        reported = data.get("usage")
        if isinstance(reported, dict):
            _read(reported, usage)
            usage.complete = True


class CountTokensUsage(MessagesUsage):
    """count_tokens answers with the count it was asked for, which is no usage: nothing is
    read from its body."""

    def body(self, usage: Usage, data: dict) -> None:
        pass


def _read(reported: dict, usage: Usage) -> None:
    usage.input_tokens = reported_count(reported, "input_tokens", usage.input_tokens)
    usage.output_tokens = reported_count(reported, "output_tokens", usage.output_tokens)
    usage.cache_creation_tokens = reported_count(
        reported, "cache_creation_input_tokens", usage.cache_creation_tokens
    )
    usage.cache_read_tokens = reported_count(
        reported, "cache_read_input_tokens", usage.cache_read_tokens
    )
    split = reported.get("cache_creation")
    parts = 0
    if isinstance(split, dict):
        usage.cache_creation_1h_tokens = reported_count(
            split, "ephemeral_1h_input_tokens", usage.cache_creation_1h_tokens
        )
        five_minutes = reported_count(split, "ephemeral_5m_input_tokens", 0)
        parts = min(usage.cache_creation_1h_tokens + five_minutes, MAX_TOKENS)
    # The total covers both parts: an answer whose total says less (or none) is billed for the
    # parts it reports, and the 1-hour part is never more than the total.
    usage.cache_creation_tokens = max(
        usage.cache_creation_tokens, parts, usage.cache_creation_1h_tokens
    )


def model_object(name: str, created: datetime) -> dict:
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }


def model_list(models: list[dict]) -> dict:
    return {
        "data": models,
        "has_more": False,
        "first_id": models[0]["id"] if models else None,
        "last_id": models[-1]["id"] if models else None,
    }


ANTHROPIC = Vendor("anthropic", "Anthropic", AnthropicErrors(), model_object, model_list)
MESSAGES = Dialect("Anthropic Messages", ANTHROPIC, MessagesUsage(), output_field="max_tokens")
COUNT_TOKENS = Dialect("Anthropic count_tokens", ANTHROPIC, CountTokensUsage(), output_field=None)
