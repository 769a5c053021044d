"""What a request reserves against its key's quota: a deliberately high estimate of its charge
(the admission Plan), the reservation itself (Store.admit in proxy.store), and the output limit
lowered to what the quota still pays for. The gate's quota row (proxy.gate) uses these.
"""

import secrets
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from billing.ledger import SPEND_UNITS_PER_USD, units_to_usd, usd_to_units
from billing.pricing import TOKENS_PER_PRICE_UNIT, PriceRow, price_usage

from . import errors
from .body import OUTPUT_LIMITS, Body
from .keystate import KeyState


@dataclass(frozen=True, slots=True)
class Admission:
    """What the quota admission answered: whether the request may go, what the key had spent
    and others held when it asked, and what it holds now."""

    admitted: bool
    spent_units: int
    reserved_units: int
    # What was reserved: the plan's estimate, or less when only that much was left (at least
    # the plan's minimum); 0 when refused.
    held_units: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """A quota admission: reserve `estimate_units` against the key's limit for at most
    `hold_seconds` (the longest the request may take). When less is left, the rest is
    reserved if it is at least `minimum_units` (the request's output limit is then lowered to
    what it pays for), else the request is refused."""

    key_id: int
    limit_units: int
    estimate_units: int
    minimum_units: int
    hold_seconds: int


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
    makes that generous), priced as cache writes when those cost more than plain input,
    since the relay cannot know which the upstream will bill. Output (for an endpoint that
    has an output limit, `output_field`): the request's limit, never above what the model
    can write, which is also what a request without a limit is reserved for; the upstream
    never exceeds either."""
    input_tokens = body.input_tokens
    as_cache_writes = price.cache_write_per_mtok > price.input_per_mtok
    _, input_charge = price_usage(
        prices=price,
        input_tokens=0 if as_cache_writes else input_tokens,
        cache_creation_tokens=input_tokens if as_cache_writes else 0,
        output_tokens=0,
        multiplier=state.multiplier,
    )
    input_units = usd_to_units(input_charge)
    if output_field is None:
        return input_units, input_units
    output = min(body.output_limit or price.max_output_tokens, price.max_output_tokens)
    return input_units + output_units(state, price, output), input_units


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
    state: KeyState, price: PriceRow | None, body: Body, *, output_field: str | None
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
    return Plan(
        state.key_id, state.quota_limit_units, estimate, minimum, hold + _HOLD_MARGIN_SECONDS
    )


def quota_used_up(state: KeyState, admission: Admission) -> errors.RelayError:
    """The refusal of an admission the key's quota could not pay for."""
    cents = Decimal("0.01")
    spent = units_to_usd(admission.spent_units).quantize(cents)
    held = units_to_usd(admission.reserved_units).quantize(cents)
    return errors.quota_used_up(
        f"{spent:.2f}", state.quota_limit_usd, held=f"{held:.2f}" if held else None
    )


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
