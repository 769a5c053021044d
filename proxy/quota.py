"""What a request is admitted against: every money limit that applies to it (its key's lifetime
quota and windows, its owner's monthly cap, its team's budget), its key's concurrency and rate
limit. The admission Plan carries them with a deliberately high estimate of the request's
charge; the store makes the admission in one atomic step (Store.admit in proxy.store); the
output limit is lowered to what the tightest limit still pays for. The gate's admission row
(proxy.gate) uses these.
"""

import enum
import functools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from billing.ledger import SPEND_UNITS_PER_USD, units_to_usd, usd_to_units
from billing.pricing import TOKENS_PER_PRICE_UNIT, PriceRow, one_hour_write_rate, price_usage
from billing.windows import Counter, LimitKind, Period, window, zone
from core import keyspace

from . import errors
from .body import OUTPUT_LIMITS, Body
from .keystate import KeyState


class Refused(enum.IntEnum):
    """Why an admission was refused (none: admitted)."""

    NONE = 0
    SPEND = 1  # a money limit: Admission.limit says which
    CONCURRENCY = 2
    RATE = 3


@dataclass(frozen=True, slots=True)
class Admission:
    """What the admission answered: whether the request may go and what it holds now; when a
    money limit refused it, which (`limit`, an index into Plan.limits) and what that limit's
    total had spent and others held; when its concurrency did, how many were in flight
    (`in_flight`); when its rate did, how long until a request would pass (`retry_after_ms`)."""

    admitted: bool
    spent_units: int = 0
    reserved_units: int = 0
    # What was reserved: the plan's estimate, or less when only that much was left (at least
    # the plan's minimum); 0 when refused.
    held_units: int = 0
    refused: Refused = Refused.NONE
    limit: int = 0
    in_flight: int = 0
    retry_after_ms: int = 0
    # The limits (indexes into Plan.limits) whose running totals are not in the cache: the
    # caller rebuilds them and asks again.
    missing: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Limit:
    """One money limit a request is admitted against: a running total (billing.windows) and
    what it may reach."""

    kind: LimitKind
    counter: Counter
    limit_units: int


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit as the admission counts it (GCRA): `count` requests per `period_ms`."""

    count: int
    period_ms: int
    text: str  # As the key's settings spell it, e.g. "60/m".


@dataclass(frozen=True, slots=True)
class Plan:
    """An admission: reserve `estimate_units` against every limit in `limits` for at most
    `hold_seconds` (the longest the request may take). When less is left under one of them,
    that much is reserved if it is at least `minimum_units` (the request's output limit is
    then lowered to what it pays for), else the request is refused. The reservation is held
    in each of `holds` (the key's, its owner's, its team's reservations), and the key's counts
    the requests in flight against `max_concurrency`; `rate` is counted last, once the rest
    admit. Every name it touches carries the hash tag of the key's team, `team_id`
    (core.keyspace): one Redis Cluster slot."""

    key_id: int
    team_id: int
    limits: tuple[Limit, ...]
    estimate_units: int
    minimum_units: int
    hold_seconds: int
    holds: tuple[str, ...] = ()
    max_concurrency: int = 0
    rate: Rate | None = None

    @property
    def admits(self) -> bool:
        return bool(self.limits or self.max_concurrency or self.rate)


# The fewest output tokens a request is sent upstream with when its key's quota cannot pay for
# its own limit (which is then lowered to what the quota pays for); with less left, a 402.
MIN_OUTPUT_TOKENS = 64
# How long a reservation may outlive its request's longest timeout before it is dropped.
_HOLD_MARGIN_SECONDS = 60


def estimate_charge_units(
    state: KeyState, price: PriceRow, body: Body, *, output_field: str | None
) -> tuple[int, int]:
    """A deliberately high estimate of the request's charge, reserved at admission: (that
    estimate, its input part), in spend units.

    Input: the whole request body's approximate tokens (Body.input_tokens; its JSON syntax
    makes that generous), priced as the dearest class the upstream may bill them in (plain
    input, 5-minute or 1-hour cache writes), since the relay cannot know which it will.
    Output (for an endpoint that has an output limit, `output_field`): the request's limit,
    never above what the model can write, which is also what a request without a limit is
    reserved for; the upstream never exceeds either."""
    input_tokens = body.input_tokens
    _, input_charge = price_usage(
        prices=price,
        output_tokens=0,
        multiplier=state.multiplier,
        **_dearest_input(price, input_tokens),
    )
    input_units = usd_to_units(input_charge)
    if output_field is None:
        return input_units, input_units
    output = min(body.output_limit or price.max_output_tokens, price.max_output_tokens)
    return input_units + output_units(state, price, output), input_units


def _dearest_input(price: PriceRow, tokens: int) -> dict[str, int]:
    """`tokens` of input as the dearest of the classes the upstream may bill them in: plain
    input, 5-minute or 1-hour cache writes (price_usage's keyword arguments)."""
    one_hour = one_hour_write_rate(price)
    if one_hour > price.input_per_mtok and one_hour >= price.cache_write_per_mtok:
        return {
            "input_tokens": 0,
            "cache_creation_tokens": tokens,
            "cache_creation_1h_tokens": tokens,
        }
    if price.cache_write_per_mtok > price.input_per_mtok:
        return {"input_tokens": 0, "cache_creation_tokens": tokens}
    return {"input_tokens": tokens}


def output_units(state: KeyState, price: PriceRow, tokens: int) -> int:
    """The charge of `tokens` output tokens, in spend units, rounded up."""
    exact = tokens * price.output_per_mtok * state.multiplier * SPEND_UNITS_PER_USD
    return int((exact / TOKENS_PER_PRICE_UNIT).to_integral_value(rounding=ROUND_CEILING))


def affordable_output(state: KeyState, price: PriceRow, units: int) -> int | None:
    """The most output tokens `units` pays for; None when output costs nothing."""
    per_million = price.output_per_mtok * state.multiplier * SPEND_UNITS_PER_USD
    if not per_million:
        return None
    return int((units * TOKENS_PER_PRICE_UNIT / per_million).to_integral_value(ROUND_FLOOR))


def admission_plan(
    state: KeyState,
    price: PriceRow | None,
    body: Body,
    *,
    output_field: str | None,
    now: datetime | None = None,
) -> Plan:
    estimate = minimum = 0
    if price is not None and body.error is None:
        estimate, input_units = estimate_charge_units(state, price, body, output_field=output_field)
        # What remains must pay for the input and a useful answer; a request whose output
        # cannot be lowered (count_tokens) is admitted while anything is left, as before.
        minimum = 1
        if output_field is not None and price.output_per_mtok:
            minimum = min(estimate, input_units + output_units(state, price, MIN_OUTPUT_TOKENS))
    hold = max((channel.timeout_seconds for channel in state.channels), default=600)
    limits = spend_limits(state, now or clock())
    # The key's own reservations first, always: they are what its concurrency counts.
    holds = ()
    if limits or state.max_concurrency:
        key_holds = keyspace.reservations(state.team_id, state.key_id)
        holds = tuple(dict.fromkeys([key_holds, *(limit.counter.holds for limit in limits)]))
    return Plan(
        state.key_id,
        state.team_id,
        limits,
        estimate,
        minimum,
        hold + _HOLD_MARGIN_SECONDS,
        holds,
        state.max_concurrency,
        _rate(state.rate_limit),
    )


def clock() -> datetime:
    """The time the admission reads its windows by (tests move it across a midnight)."""
    return datetime.now(UTC)


def spend_limits(state: KeyState, now: datetime) -> tuple[Limit, ...]:
    """The key's money limits in force at `now`, in the order a refusal names the first
    that cannot pay: the key's lifetime quota, its day, week and month, its owner's monthly
    cap in the team, the team's monthly budget."""
    zone_name = state.time_zone
    day = window(Period.DAY, zone_name, now)[0]
    week = window(Period.WEEK, zone_name, now)[0]
    month = window(Period.MONTH, zone_name, now)[0]
    # Worked out once per snapshot and window, not per request: snapshots are parsed once per
    # process, so `state` is the same object request after request, and it is found here by
    # identity (hashing a whole snapshot showed in the relay's profile).
    known = _known_limits.get(id(state))
    if known is not None and known[0] is state and known[1] == (day, week, month):
        return known[2]
    limits = _spend_limits(state, day)
    if len(_known_limits) >= 10_000:
        _known_limits.clear()
    _known_limits[id(state)] = (state, (day, week, month), limits)
    return limits


_known_limits: dict[int, tuple[KeyState, tuple[datetime, ...], tuple["Limit", ...]]] = {}


def _spend_limits(state: KeyState, at: datetime) -> tuple[Limit, ...]:
    account = state.account
    units = {
        LimitKind.QUOTA: state.quota_limit_units,
        LimitKind.DAILY: state.daily_limit_units,
        LimitKind.WEEKLY: state.weekly_limit_units,
        LimitKind.MONTHLY: state.monthly_limit_units,
        LimitKind.MEMBER_MONTHLY: state.member_monthly_limit_units,
        LimitKind.TEAM_MONTHLY: state.team_monthly_budget_units,
    }
    return tuple(
        Limit(kind, account.counter(kind, at), units[kind]) for kind in LimitKind if units[kind]
    )


_PERIOD_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@functools.lru_cache(maxsize=1024)
def _rate(text: str) -> Rate | None:
    if not text:
        return None
    count, _, period = text.partition("/")
    return Rate(int(count), _PERIOD_MS[period], text)


_RATE_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def refusal(state: KeyState, plan: Plan, admission: Admission) -> errors.RelayError:
    """The refusal of an admission, naming the limit that refused it."""
    if admission.refused is Refused.CONCURRENCY:
        return errors.too_many_in_flight(admission.in_flight, plan.max_concurrency)
    if admission.refused is Refused.RATE:
        count, _, period = plan.rate.text.partition("/")
        retry_after = max(1, -(-admission.retry_after_ms // 1000))
        return errors.rate_limited(f"{count} requests per {_RATE_NAMES[period]}", retry_after)
    limit = plan.limits[admission.limit]
    cents = Decimal("0.01")
    spent = units_to_usd(admission.spent_units).quantize(cents)
    held = units_to_usd(admission.reserved_units).quantize(cents)
    held_text = f"{held:.2f}" if held else None
    if limit.kind is LimitKind.QUOTA:
        return errors.quota_used_up(f"{spent:.2f}", state.quota_limit_usd, held=held_text)
    limit_usd = units_to_usd(limit.limit_units).quantize(cents)
    return errors.spend_limit_reached(
        _LIMIT_NAMES[limit.kind].format(team=state.team_name),
        reason=f"{limit.kind}_limit_reached",
        spent=f"{spent:.2f}",
        limit=f"{limit_usd:.2f}",
        held=held_text,
        resets_at=limit.counter.end.astimezone(zone(state.time_zone)),
    )


# What a refusal calls each limit (its first word capitalised when it opens a sentence).
_LIMIT_NAMES = {
    LimitKind.DAILY: "the daily limit of this key",
    LimitKind.WEEKLY: "the weekly limit of this key",
    LimitKind.MONTHLY: "the monthly limit of this key",
    LimitKind.MEMBER_MONTHLY: "your monthly cap in team {team}",
    LimitKind.TEAM_MONTHLY: "team {team}'s monthly budget",
}


def lower_output(
    state: KeyState, price: PriceRow, body: Body, output_field: str, admission: Admission
) -> tuple[Body, int | None]:
    """The body with its output limit lowered to what the reservation pays for beside what
    its input may cost: the key had less left than the request's own limit would cost. The
    limit is set under the name the request used, else the endpoint's own (`output_field`)."""
    input_units, _ = estimate_charge_units(state, price, body, output_field=None)
    tokens = affordable_output(state, price, admission.held_units - input_units)
    if tokens is None:
        return body, None
    tokens = max(tokens, 1)
    name = next((n for n in OUTPUT_LIMITS if body.fields.get(n) is not None), output_field)
    return body.with_field(name, tokens), tokens


def new_hold_id() -> str:
    """A reservation's own id. Not the request id: a client's X-Request-Id becomes the request
    id and may repeat, and concurrent requests sharing one reservation would each be admitted
    as if the others reserved nothing."""
    return secrets.token_hex(8)
