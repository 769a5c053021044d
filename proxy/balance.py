"""The key reads its own balance: what chat clients and relay dashboards ask the relay itself.

  GET /v1/dashboard/billing/subscription (and /dashboard/billing/subscription)
  GET /v1/dashboard/billing/usage?start_date=YYYY-MM-DD&end_date=YYYY-MM-DD (and without /v1)
      OpenAI's legacy billing API, in the shape new-api and one-api serve it (their
      controller/billing.go), so the tools written against them read ours.
  GET /v1/key
      The key itself: its settings and every limit in force (billing.limits), money as exact
      decimal strings. The path OpenRouter gives its own (GET /api/v1/key); no vendor API the
      relay speaks has a /v1/key.

Authenticated like GET /v1/models (proxy.gate.Gate.check_listing): the key, its status and
expiry, the client's IP; nothing charged, no rate limit counted, no usage recorded. Each answer
is one database read in a worker thread (proxy.store.run_db), never on the event loop: these
are not the relay's hot path, and the limits must be the gate's own totals.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

from billing import windows
from billing.limits import LimitStatus, key_limits, tightest
from billing.selectors import key_daily_charges
from keys.models import ApiKey

from . import errors
from .exchange import Exchange
from .keystate import KeyState
from .prices import PriceTable
from .store import run_db

SUBSCRIPTION_PATH = "/v1/dashboard/billing/subscription"
USAGE_PATH = "/v1/dashboard/billing/usage"
KEY_PATH = "/v1/key"
# The billing paths as OpenAI's legacy API had them, without /v1: some clients ask there
# (hcai.asgi sends them to the relay).
LEGACY_PREFIX = "/dashboard/billing/"

# hard_limit_usd of a key with no limit in force: one-api's and new-api's for an unlimited
# token ($100,000,000), which clients read as "no limit" rather than as a balance of zero.
NO_LIMIT_USD = 100_000_000
# The longest range the usage endpoint answers, in days: OpenAI's legacy API's bound.
MAX_USAGE_DAYS = 100

_JSON = [(b"content-type", b"application/json")]
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CENTS = Decimal(100)


@dataclass(frozen=True, slots=True)
class Balance:
    key: ApiKey
    limits: list[LimitStatus]


def _balance(key_id: int) -> Balance | None:
    """The key and its limits, read as the gate sees them (sync: run in a thread)."""
    key = ApiKey.objects.select_related("team", "group", "owner").filter(pk=key_id).first()
    if key is None:
        return None
    return Balance(key, key_limits(key))


async def _read_balance(state: KeyState) -> Balance:
    balance = await run_db(_balance, state.key_id)
    if balance is None:
        # Deleted since its snapshot was read: what any later request gets.
        raise errors.invalid_key().for_key(state.key_id)
    return balance


async def subscription(exchange: Exchange, state: KeyState, prices: PriceTable) -> None:
    """The tightest limit in force as OpenAI's legacy subscription: new-api answers a token's
    used + remaining quota, so a client's hard_limit_usd - total_usage is what is left; ours is
    the tightest limit's spent + remaining (its limit, unless the last request overshot it).
    That subtraction is exact when the client asks for usage over that limit's window (a
    monthly limit, this month). No limit: NO_LIMIT_USD. access_until: the key's expiry in
    seconds since the epoch, 0 if it never expires."""
    balance = await _read_balance(state)
    limit = tightest(balance.limits)
    hard = NO_LIMIT_USD if limit is None else float(limit.spent_usd + limit.remaining_usd)
    expires_at = balance.key.expires_at
    answer = {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": hard,
        "hard_limit_usd": hard,
        "system_hard_limit_usd": hard,
        "access_until": int(expires_at.timestamp()) if expires_at else 0,
    }
    await exchange.respond(200, _JSON, json.dumps(answer).encode())


async def usage(exchange: Exchange, state: KeyState, prices: PriceTable) -> None:
    """The key's charges from start_date (inclusive) to end_date (exclusive, as OpenAI's legacy
    API read it), days of its team's time zone: total_usage in cents, and daily_costs with one
    entry per day (timestamp: the day's local midnight) and a line item per model used."""
    try:
        start, end = usage_range(exchange.scope.get("query_string", b""))
    except errors.RelayError as error:
        raise error.for_key(state.key_id) from None
    key, charges = await run_db(_usage, state.key_id, start, end)
    if key is None:
        raise errors.invalid_key().for_key(state.key_id)
    zone = windows.zone(key.team.time_zone)
    daily_costs = []
    total = Decimal(0)
    day = start
    while day < end:
        by_model = charges.get(day, {})
        total += sum(by_model.values(), Decimal(0))
        midnight = datetime.combine(day, time(), tzinfo=zone)
        daily_costs.append(
            {
                "timestamp": midnight.timestamp(),
                "line_items": [
                    {"name": model, "cost": float(charged * _CENTS)}
                    for model, charged in by_model.items()
                ],
            }
        )
        day += timedelta(days=1)
    answer = {"object": "list", "total_usage": float(total * _CENTS), "daily_costs": daily_costs}
    await exchange.respond(200, _JSON, json.dumps(answer).encode())


def _usage(key_id: int, start: date, end: date) -> tuple[ApiKey | None, dict]:
    key = ApiKey.objects.select_related("team").filter(pk=key_id).first()
    if key is None:
        return None, {}
    return key, key_daily_charges(key=key, start=start, end=end)


def usage_range(query_string: bytes) -> tuple[date, date]:
    """start_date and end_date from the query; a 400 that says what is wrong otherwise."""
    query = parse_qs(query_string.decode("latin-1"))
    start = _query_date(query, "start_date")
    end = _query_date(query, "end_date")
    if end <= start:
        raise errors.invalid_request(
            "invalid_date_range", "end_date must be after start_date (end_date is not included)."
        )
    days = (end - start).days
    if days > MAX_USAGE_DAYS:
        raise errors.invalid_request(
            "invalid_date_range",
            f"The range from start_date to end_date is {days} days; "
            f"at most {MAX_USAGE_DAYS} days can be asked for at once.",
        )
    return start, end


def _query_date(query: dict[str, list[str]], name: str) -> date:
    values = query.get(name)
    if not values or not values[0].strip():
        raise errors.invalid_request(
            "missing_date",
            f"Missing {name}: give start_date and end_date as YYYY-MM-DD "
            "(end_date is not included).",
        )
    value = values[0].strip()
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise errors.invalid_request(
            "invalid_date", f"{name} must be a date as YYYY-MM-DD, not “{value[:40]}”."
        ) from None


async def key_info(exchange: Exchange, state: KeyState, prices: PriceTable) -> None:
    """GET /v1/key: the key's name, group, status, expiry, concurrency and rate limit, and every
    limit in force with what is spent and left and when it resets (in the team's time zone)."""
    balance = await _read_balance(state)
    key = balance.key
    zone = windows.zone(key.team.time_zone)
    answer = {
        "name": key.name,
        "prefix": key.prefix,
        "team": key.team.name,
        "group": key.group.name,
        "status": key.state,
        "expires_at": key.expires_at.astimezone(UTC).isoformat() if key.expires_at else None,
        "time_zone": key.team.time_zone,
        "max_concurrency": key.max_concurrency,
        "rate_limit": key.rate_limit or None,
        "limits": [
            {
                "kind": str(limit.kind),
                "label": limit.label,
                "spent_usd": str(limit.spent_usd),
                "limit_usd": str(limit.limit_usd),
                "remaining_usd": str(limit.remaining_usd),
                "resets_at": limit.resets_at.astimezone(zone).isoformat()
                if limit.resets_at
                else None,
            }
            for limit in balance.limits
        ],
    }
    await exchange.respond(200, _JSON, json.dumps(answer).encode())
