"""Recording a forwarded request's usage: once when it ends, and while a stream runs, in
checkpoints that bill it should this worker die first (billing.ledger.reap_checkpoints)."""

import dataclasses
import ipaddress
import logging
import time
from functools import lru_cache

from billing.ledger import UsageRecord
from billing.pricing import price_usage

from . import gate
from .exchange import Exchange
from .redis_client import RedisError
from .store import Store
from .usage import Usage

# The relay's log (one logger for the whole request path).
logger = logging.getLogger("proxy")

SESSION_HEADER = b"x-claude-code-session-id"


async def record(store: Store, exchange: Exchange, passed: gate.Passed, usage: Usage) -> None:
    """Record the request's one usage event (which releases its quota reservation)."""
    record = _usage_record(exchange, passed, usage, status=exchange.status or 502)
    try:
        await store.record(
            record,
            hold_id=passed.hold_id,
            targets=passed.targets(record.created_at),
            checkpointed=exchange.checkpointed,
        )
    except Exception:
        logger.exception(
            "Could not record usage of key %s (%s, $%s)",
            record.key_id,
            record.model,
            record.charged_usd,
        )


async def checkpoint(store: Store, exchange: Exchange, passed: gate.Passed, usage: Usage) -> None:
    """Keep what the stream has used so far, billed as a failed request (502) should this
    worker die before recording it whole. A checkpoint that cannot be kept is skipped."""
    record = _usage_record(exchange, passed, dataclasses.replace(usage), status=502)
    try:
        await store.checkpoint(
            record, hold_id=passed.hold_id, targets=passed.targets(record.created_at)
        )
    except RedisError as error:
        logger.warning("Could not checkpoint a stream of key %s (%s)", record.key_id, error)
        return
    exchange.checkpointed = True


def _usage_record(
    exchange: Exchange, passed: gate.Passed, usage: Usage, *, status: int
) -> UsageRecord:
    """The request's usage as recorded: what the upstream reported, with what an interrupted
    stream never reported estimated (in `usage`, which this completes)."""
    state, body = passed.state, passed.body
    usage.estimate_missing(input_tokens=body.input_tokens)
    cost, charged = price_usage(
        prices=passed.price,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        cache_creation_1h_tokens=usage.cache_creation_1h_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        multiplier=state.multiplier,
    )
    return UsageRecord(
        key_id=state.key_id,
        team_id=state.team_id,
        group_id=state.group_id,
        model=body.model or "",
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cost_usd=cost,
        charged_usd=charged,
        status_code=status,
        latency_ms=int((time.monotonic() - exchange.started) * 1000),
        client_ip=_valid_ip(exchange.client_ip),
        session_id=exchange.header(SESSION_HEADER) or "",
        request_id=exchange.request_id,
        created_at=exchange.started_at,
        endpoint=exchange.endpoint,
        cache_creation_1h_tokens=usage.cache_creation_1h_tokens,
    )


@lru_cache(maxsize=1024)
def _valid_ip(address: str) -> str | None:
    """The address as the usage row stores it (parsed once per address: it showed in the
    relay's profile)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
