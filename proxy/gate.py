"""The gate: every check a request passes before it is forwarded, in the order the relay
issue's table gives them, each refusing with its own status and message (proxy.errors).

    credentials -> known key -> enabled -> not expired -> client IP -> model allowed and
    priced -> quota -> rate limit -> well-formed body

The body is read before the model check (the model is in it), but a malformed or oversized
body is refused only in its row of the table, after quota and rate limit. For a key this
process has seen before, the body is read before the snapshot (see Gate): the refusals and
their order are the same.
"""

import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from asgiref.sync import sync_to_async
from django.utils import timezone
from django_ratelimit.core import get_usage

from billing.ledger import SPEND_UNITS_PER_USD, units_to_usd, usd_to_units
from billing.pricing import TOKENS_PER_PRICE_UNIT, PriceRow, price_usage
from keys.secret_formats import RELAY_KEY

from . import errors
from .body import OUTPUT_LIMITS, Body, read_body
from .keystate import KeyState
from .prices import PriceTable
from .snapshots import Snapshots
from .store import Admission, Plan, Store, rebuild_spend_total

# The fewest output tokens a request is sent upstream with when its key's quota cannot pay for
# its own limit (which is then lowered to what the quota pays for); with less left, a 402.
MIN_OUTPUT_TOKENS = 64
# How long a reservation may outlive its request's longest timeout before it is dropped.
_HOLD_MARGIN_SECONDS = 60


def credential(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from x-api-key, else from Authorization: Bearer (Claude Code's
    ANTHROPIC_AUTH_TOKEN). None when neither carries anything."""
    api_key = bearer = None
    for name, value in headers:
        if name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
        elif name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            bearer = token.strip() if scheme.lower() == "bearer" else value.decode("latin-1")
    return api_key or bearer or None


def key_digest(plaintext: str) -> str:
    """The digest a key is looked up by; a credential not shaped like a key is refused here,
    without touching the cache or the database."""
    if RELAY_KEY.shape.fullmatch(plaintext) is None:
        raise errors.invalid_key()
    return RELAY_KEY.digest(plaintext)


def check_key(state: KeyState, now: datetime) -> None:
    if not state.enabled:
        raise errors.key_disabled()
    # Checked here, at request time: the expire_keys task flips the status only every minute.
    if state.expires_at is not None and state.expires_at <= now:
        shown = timezone.localtime(state.expires_at)
        raise errors.key_expired(f"{shown:%Y-%m-%d %H:%M} {shown.tzname()}")


def check_ip(state: KeyState, address: str) -> None:
    if not state.allows_ip(address):
        raise errors.ip_not_allowed(address)


def check_key_and_ip(state: KeyState, address: str) -> None:
    """The checks on the key alone: enabled, not expired, this client IP allowed. A refusal
    names the key for the log line."""
    try:
        check_key(state, timezone.now())
        check_ip(state, address)
    except errors.RelayError as error:
        error.key_id = state.key_id
        raise


async def check_model(state: KeyState, model: str, prices: PriceTable) -> PriceRow:
    if not state.group_usable:
        raise errors.model_not_allowed(
            f"Group “{state.group_name}” of this key is not active or no longer available to "
            "its team, so no model can be used. Ask your team lead to move the key to "
            "another group."
        )
    if not state.allows_model(model):
        allowed = ", ".join(state.model_patterns) or "none"
        raise errors.model_not_allowed(
            f"Model “{model}” is not allowed in group “{state.group_name}” (allowed: {allowed})."
        )
    price = await prices.lookup(model)
    if price is None:
        raise errors.model_not_allowed(
            f"Model “{model}” has no price yet, so group “{state.group_name}” cannot serve "
            "it. Ask an administrator to add a price for it."
        )
    return price


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


async def admit(store: Store, plan: Plan, hold_id: str) -> Admission | None:
    """Reserve the plan's estimate; None for a key without a quota (nothing to reserve)."""
    if not plan.limit_units:
        return None
    for _ in range(2):
        admission = await store.admit(plan, hold_id)
        if admission is not None:
            return admission
        # No running total in the cache (first use, eviction, flush): rebuild it from the
        # database, once, then admit against it.
        await rebuild_spend_total(plan.key_id)
    raise RuntimeError(f"Spend total of key {plan.key_id} vanished while it was rebuilt.")


_RATE_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


async def check_rate(state: KeyState) -> None:
    """django-ratelimit's counters, keyed by the key's id (so rotating a key does not reset
    it), in the shared cache. It is sync-only, so this thread hop is paid only by keys that
    have a rate limit."""
    if not state.rate_limit:
        return
    key_id = str(state.key_id)
    usage = await sync_to_async(get_usage, thread_sensitive=False)(
        None,
        group="relay",
        key=lambda group, request: key_id,
        rate=state.rate_limit,
        increment=True,
    )
    if usage is not None and usage["should_limit"]:
        count, _, period = state.rate_limit.partition("/")
        retry_after = max(1, usage["time_left"])
        raise errors.rate_limited(f"{count} requests per {_RATE_NAMES[period]}", retry_after)


@dataclass(frozen=True, slots=True)
class Passed:
    """A request the gate let through (holding a quota reservation under `hold_id` if its key
    has a quota; recording its usage releases it)."""

    state: KeyState
    body: Body
    price: PriceRow
    hold_id: str
    # The output limit the request was sent with when its key's quota paid for no more than
    # that (the client's own limit, or the model's maximum, was higher).
    output_lowered_to: int | None = None


def _quota_used_up(state: KeyState, admission: Admission) -> errors.RelayError:
    cents = Decimal("0.01")
    spent = units_to_usd(admission.spent_units).quantize(cents)
    held = units_to_usd(admission.reserved_units).quantize(cents)
    return errors.quota_used_up(
        f"{spent:.2f}", state.quota_limit_usd, held=f"{held:.2f}" if held else None
    )


def _lower_output(
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


class Gate:
    """The checks of a model request (/v1/messages, count_tokens, /v1/chat/completions,
    /v1/responses), in the table's order, against the key's snapshot as the cache holds it now.

    A key with a quota costs one Redis round trip, not two: this process remembers the last
    snapshot it saw for each digest (a digest always belongs to the same key) and uses it to
    guess the quota admission's inputs, so the snapshot read and the admission go out together.
    The guess decides nothing. Every check runs on the snapshot just read; where the admission
    worked out from it differs from the guess (the key, its group or its quota changed since),
    the guessed reservation is released and the admission is made again with it. A key seen
    for the first time in this process, one without a quota, and one its remembered snapshot
    would refuse (disabled, expired, another IP) read the snapshot first, as before."""

    # Digests remembered per process; past this the memory is simply started afresh.
    RECENT_LIMIT = 10_000

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self._recent: dict[str, KeyState] = {}
        self.snapshots = Snapshots()

    async def check(
        self,
        store: Store,
        *,
        plaintext: str,
        receive: Callable[[], Awaitable[dict]],
        headers: list[tuple[bytes, bytes]],
        client_ip: str,
        output_field: str | None,
        max_body_bytes: int,
    ) -> Passed:
        digest = key_digest(plaintext)
        hold_id = new_hold_id()
        guess = self._recent.get(digest)
        body: Body | None = None
        guessed: Plan | None = None
        guessed_price: PriceRow | None = None
        admission: Admission | None = None
        if guess is not None and guess.quota_limit_units and _would_pass(guess, client_ip):
            body = await read_body(receive, headers, max_body_bytes)
            guessed, guessed_price = await self._plan(guess, body, output_field=output_field)
        if guessed is None:
            raw = await store.get_key_state(digest)
        else:
            try:
                raw, admission = await store.get_key_state_and_admit(digest, guessed, hold_id)
            except BaseException:
                # Cancelled or failed with the admission sent: it may have been made, so it is
                # given back (releasing nothing changes nothing; on the one connection the
                # release runs after the admission).
                with suppress(Exception):
                    await store.release(key_id=guessed.key_id, hold_id=hold_id)
                raise
        held_by = guessed.key_id if admission is not None and admission.admitted else None
        state: KeyState | None = None
        try:
            state = await self.snapshots.state(store, digest, raw)
            self._remember(digest, state)
            check_key_and_ip(state, client_ip)
            if body is None:
                body = await read_body(receive, headers, max_body_bytes)
            price = await check_model(state, body.model, self.prices) if body.model else None
            if guessed is not None and state is guess and price is guessed_price:
                plan = guessed  # The same snapshot (parsed once per process) and price.
            else:
                plan = admission_plan(state, price, body, output_field=output_field)
            if admission is None or plan != guessed:
                if held_by is not None:
                    await store.release(key_id=held_by, hold_id=hold_id)
                    held_by = None
                admission = await admit(store, plan, hold_id)
            lowered_to = None
            if admission is not None:
                if not admission.admitted:
                    raise _quota_used_up(state, admission)
                held_by = plan.key_id
                if admission.held_units < plan.estimate_units and output_field is not None:
                    body, lowered_to = _lower_output(state, price, body, output_field, admission)
            await check_rate(state)
            if body.error is not None:
                raise body.error
        # BaseException: a task cancelled here (a worker shutting down, a server timeout) gives
        # its reservation back too, instead of blocking the key until the hold expires.
        except BaseException as error:
            if held_by is not None:
                await store.release(key_id=held_by, hold_id=hold_id)
            if isinstance(error, errors.RelayError) and state is not None:
                error.key_id = state.key_id
            raise
        return Passed(state, body, price, hold_id, lowered_to)

    async def check_listing(self, store: Store, *, plaintext: str, client_ip: str) -> KeyState:
        """The checks of GET /v1/models: the key, its status and expiry, and the client's IP.
        Not the quota or the rate limit: the listing costs nothing, and Claude Code fills its
        model picker from it."""
        digest = key_digest(plaintext)
        state = await self.snapshots.state(store, digest, await store.get_key_state(digest))
        check_key_and_ip(state, client_ip)
        return state

    async def _plan(
        self, guess: KeyState, body: Body, *, output_field: str | None
    ) -> tuple[Plan | None, PriceRow | None]:
        """The admission the remembered snapshot would make, and the price it used; no plan if
        its model check would refuse first."""
        try:
            price = await check_model(guess, body.model, self.prices) if body.model else None
        except errors.RelayError:
            return None, None
        return admission_plan(guess, price, body, output_field=output_field), price

    def _remember(self, digest: str, state: KeyState) -> None:
        if len(self._recent) >= self.RECENT_LIMIT and digest not in self._recent:
            self._recent.clear()
        self._recent[digest] = state


def _would_pass(state: KeyState, client_ip: str) -> bool:
    """Whether the key checks would let this request through on `state`: a key that was
    refused last time (disabled, expired, another IP) reads its snapshot first, as before, so
    it is refused without its body being read or a reservation being made and given back."""
    try:
        check_key_and_ip(state, client_ip)
    except errors.RelayError:
        return False
    return True
