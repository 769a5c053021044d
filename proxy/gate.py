"""The gate: every check a request passes before it is forwarded, in the order the relay
issue's table gives them, each a step below that refuses with its own status and message
(proxy.errors); Gate.check runs them in this order:

    credentials                  credential (proxy.app), key_digest
    known key                    Snapshots.state (proxy.snapshots)
    enabled                      check_enabled
    not expired                  check_not_expired
    client IP                    check_client_ip
    model allowed and priced     check_model
    money limits                 admit, in one atomic step of the store (proxy.quota): the
      (quota, key's windows,       first limit that cannot pay the request's estimate refuses
      member cap, team budget)
    concurrency                    then a full concurrency
    rate limit                     then a used-up rate limit
    well-formed body             check_body

The body is read before the model check (the model is in it), but a malformed or oversized
body is refused only in its row of the table, after the admission. For a key this
process has seen before, the body is read before the snapshot (see Guess): the refusals and
their order are the same.
"""

from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone

from billing.pricing import PriceRow
from billing.windows import Targets
from keys.secret_formats import RELAY_KEY

from . import errors
from .body import Body, read_body
from .keystate import KeyState
from .prices import PriceTable
from .quota import Admission, Plan, admission_plan, lower_output, new_hold_id, refusal
from .snapshots import Snapshots
from .store import Store, rebuild_counters

# --- the steps, in the table's order ------------------------------------------------------


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


def check_enabled(state: KeyState) -> None:
    if not state.enabled:
        if state.disabled_by_expiry and state.expires_at is not None:
            raise errors.key_disabled(expired_at=_expiry_text(state.expires_at))
        raise errors.key_disabled()


def check_not_expired(state: KeyState, now: datetime) -> None:
    # Checked here, at request time: the expire_keys task flips the status only every minute.
    if state.expires_at is not None and state.expires_at <= now:
        raise errors.key_expired(_expiry_text(state.expires_at))


def _expiry_text(expires_at: datetime) -> str:
    shown = timezone.localtime(expires_at)
    return f"{shown:%Y-%m-%d %H:%M} {shown.tzname()}"


def check_client_ip(state: KeyState, address: str) -> None:
    if not state.allows_ip(address):
        raise errors.ip_not_allowed(address)


def check_key_and_ip(state: KeyState, address: str) -> None:
    """The rows on the key alone: enabled, not expired, this client IP allowed."""
    check_enabled(state)
    # datetime.now(UTC) is timezone.now() without its settings look-up (USE_TZ is on).
    check_not_expired(state, datetime.now(UTC))
    check_client_ip(state, address)


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


async def admit(
    store: Store,
    state: KeyState,
    price: PriceRow | None,
    body: Body,
    output_field: str | None,
    guess: "Guess | None",
    hold_id: str,
) -> tuple[Admission | None, Plan]:
    """The admission rows (money limits, concurrency, rate limit) in one atomic step: reserve
    the request's estimate against every money limit of the key (nothing for a key without
    any limit), and refuse naming the first limit that cannot pay, else a full concurrency,
    else a used-up rate. The guessed admission is kept when the snapshot and price just
    checked make the same plan; otherwise it is given back first."""
    if guess is not None and guess.state is state and guess.price is price:
        plan = guess.plan  # The same snapshot (parsed once per process) and price.
    else:
        plan = admission_plan(state, price, body, output_field=output_field)
    if guess is not None and guess.admission is not None and plan == guess.plan:
        admission = guess.admission
    else:
        if guess is not None:
            await guess.give_back(store, hold_id)
        try:
            admission = await _admit(store, plan, hold_id)
        except BaseException:
            # Cancelled or failed with the admission sent: it may have been made, so it is
            # given back (releasing nothing changes nothing).
            if plan.admits:
                with suppress(Exception):
                    await store.release(plan, hold_id)
            raise
    if admission is not None and not admission.admitted:
        raise refusal(state, plan, admission)
    return admission, plan


async def _admit(store: Store, plan: Plan, hold_id: str) -> Admission | None:
    if not plan.admits:
        return None
    for _ in range(3):
        admission = await store.admit(plan, hold_id)
        if not admission.missing:
            return admission
        # Running totals not in the cache (first use, a new window, eviction, flush): rebuilt
        # from the database, then the admission is asked again.
        await rebuild_counters([plan.limits[index].counter for index in admission.missing])
    raise RuntimeError(f"Running totals of key {plan.key_id} vanished while they were rebuilt.")


def check_body(body: Body) -> None:
    """Refused only here, in the last row (see the module's docstring)."""
    if body.error is not None:
        raise body.error


@dataclass(frozen=True, slots=True)
class Passed:
    """A request the gate let through (holding its admission under `hold_id` if its key has
    any limit; recording its usage releases it)."""

    state: KeyState
    body: Body
    price: PriceRow
    hold_id: str
    # The output limit the request was sent with when its key's limits paid for no more than
    # that (the client's own limit, or the model's maximum, was higher).
    output_lowered_to: int | None = None

    def targets(self, at: datetime) -> Targets:
        """What recording its charge at `at` raises and releases (billing.windows)."""
        return self.state.account.targets(at)


class Gate:
    """The checks of a model request (/v1/messages, count_tokens, /v1/chat/completions,
    /v1/responses), in the table's order, against the key's snapshot as the cache holds it now.

    A key with any limit costs one Redis round trip, not two: this process remembers the last
    snapshot it saw for each digest (a digest always belongs to the same key) and works out
    from it the admission the request would make (a Guess), sent together with the snapshot
    read. The guess decides nothing: every row runs on the snapshot just read, and the
    admission row keeps the guessed admission only if that snapshot and its price make the
    same plan (else it is given back and the admission made again)."""

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
        body: Body | None = None
        guess = self._guess(digest, client_ip)
        if guess is None:
            raw = await store.get_key_state(digest)
        else:
            body = await read_body(receive, headers, max_body_bytes)
            raw = await guess.read_snapshot(store, digest, hold_id, body, self.prices, output_field)
        state: KeyState | None = None
        admission: Admission | None = None
        try:
            state = await self.snapshots.state(store, digest, raw)
            self._remember(digest, state)
            check_key_and_ip(state, client_ip)
            if body is None:
                body = await read_body(receive, headers, max_body_bytes)
            price = await check_model(state, body.model, self.prices) if body.model else None
            admission, plan = await admit(store, state, price, body, output_field, guess, hold_id)
            lowered_to = None
            lowered = plan.limits and admission.held_units < plan.estimate_units
            if lowered and output_field is not None:
                body, lowered_to = lower_output(state, price, body, output_field, admission)
            check_body(body)
        # BaseException: a task cancelled here (a worker shutting down, a server timeout) gives
        # its reservation back too, instead of blocking the key until the hold expires.
        except BaseException as error:
            if admission is not None:  # The admission row reserved (or kept the guess's).
                await store.release(plan, hold_id)
            elif guess is not None:
                await guess.give_back(store, hold_id)
            if isinstance(error, errors.RelayError) and state is not None:
                raise error.for_key(state.key_id) from None  # Named for the log line.
            raise
        return Passed(state, body, price, hold_id, lowered_to)

    async def check_listing(self, store: Store, *, plaintext: str, client_ip: str) -> KeyState:
        """The checks of GET /v1/models: the key, its status and expiry, and the client's IP.
        Not the quota or the rate limit: the listing costs nothing, and Claude Code fills its
        model picker from it."""
        digest = key_digest(plaintext)
        state = await self.snapshots.state(store, digest, await store.get_key_state(digest))
        try:
            check_key_and_ip(state, client_ip)
        except errors.RelayError as error:
            raise error.for_key(state.key_id) from None
        return state

    def _guess(self, digest: str, client_ip: str) -> "Guess | None":
        """A guess for a key remembered with a limit and that its remembered snapshot would let
        through. A key seen for the first time in this process, one without limits, and one
        its remembered snapshot would refuse (disabled, expired, another IP: refused without
        its body being read or a reservation made and given back) read the snapshot first."""
        remembered = self._recent.get(digest)
        if remembered is None or not remembered.admits:
            return None
        try:
            check_key_and_ip(remembered, client_ip)
        except errors.RelayError:
            return None
        return Guess(remembered)

    def _remember(self, digest: str, state: KeyState) -> None:
        if len(self._recent) >= self.RECENT_LIMIT and digest not in self._recent:
            self._recent.clear()
        self._recent[digest] = state


@dataclass(slots=True)
class Guess:
    """A request's admission worked out from the snapshot this process saw last for its
    key (`state`), sent with the snapshot read (see Gate)."""

    state: KeyState
    price: PriceRow | None = None
    # None: the remembered snapshot would refuse the model, so no admission goes with the read.
    plan: Plan | None = None
    # The answer to the admission sent with the read.
    admission: Admission | None = None

    async def read_snapshot(
        self,
        store: Store,
        digest: str,
        hold_id: str,
        body: Body,
        prices: PriceTable,
        output_field: str | None,
    ) -> bytes | None:
        """The key's snapshot as the cache holds it, with the admission the remembered snapshot
        makes for `body` in the same round trip (none if its model row would refuse)."""
        try:
            self.price = await check_model(self.state, body.model, prices) if body.model else None
        except errors.RelayError:
            return await store.get_key_state(digest)
        self.plan = admission_plan(self.state, self.price, body, output_field=output_field)
        try:
            raw, admission = await store.get_key_state_and_admit(digest, self.plan, hold_id)
        except BaseException:
            # Cancelled or failed with the admission sent: it may have been made, so it is
            # given back (releasing nothing changes nothing; on the one connection the
            # release runs after the admission).
            with suppress(Exception):
                await store.release(self.plan, hold_id)
            raise
        # Totals missing: nothing was admitted; the admission row rebuilds them and asks again.
        self.admission = None if admission.missing else admission
        return raw

    async def give_back(self, store: Store, hold_id: str) -> None:
        """Release the guessed reservation, if it was made."""
        if self.admission is not None and self.admission.admitted:
            await store.release(self.plan, hold_id)
            self.admission = None
