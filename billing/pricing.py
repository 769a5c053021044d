"""What a request costs: list price per token class, then the key's group multiplier.

    cost   = (input x input price + output x output price
              + (cache-write - 1-hour cache-write) x cache-write price
              + 1-hour cache-write x 1-hour cache-write price
              + cache-read x cache-read price) / 1,000,000
    charge = cost x multiplier

Cache writes: Anthropic reports how many of a response's cache writes are kept for an hour
(`usage.cache_creation.ephemeral_1h_input_tokens`) beside the total; those are billed at the
1-hour rate (list price: twice the input price), the rest at the 5-minute rate (1.25 times).
A response without the split is all 5-minute writes, priced as before the split existed.
A price with no 1-hour rate (0) while 5-minute writes cost something is a price nobody set
(ModelPrice.clean refuses to save one, and migration billing/0008 filled in the rows made
before): its 1-hour writes are priced at the 5-minute rate, as before, never as free and never
at a guessed multiple. Where cache writes cost nothing at all (0 and 0), they stay free.

Prices are USD per million tokens. Everything is Decimal; a float anywhere would make totals
drift by fractions of a cent that no one can explain later.

Rounding: cost and charge are each computed exactly (in a context wide enough that nothing is
lost), then rounded once, ROUND_HALF_UP, to 8 decimal places: the precision of the money
columns (`UsageEvent.cost_usd`, `charged_usd`, `ApiKey.spent_usd`). The charge is taken from
the exact cost, not the rounded one, so the multiplier never amplifies a rounding step. Sums
of rounded per-request amounts are exact in the database, so settlement adds them unchanged.

Model names: a name is priced by its own `ModelPrice` row if there is one. A dated snapshot
name the vendors publish, such as `claude-sonnet-4-5-20250929` or `gpt-4o-2024-08-06`, falls
back to the same name without that suffix (`claude-sonnet-4-5`, `gpt-4o`), so one price
covers every snapshot. Any other extension is not a match: `gpt-4o-mini` is a different model
with its own price, and pricing it as `gpt-4o` would bill the wrong amount. Unpriced means
`None`, and the relay refuses such a model rather than serve it for free.

`price_usage` and `lookup_price` touch no database, so the relay can price from an in-memory
table built once by `load_price_table`.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from .models import ModelPrice

MONEY_PLACES = Decimal("0.00000001")
TOKENS_PER_PRICE_UNIT = 1_000_000
# Enough significant digits for billions of tokens times any stored price times a multiplier,
# so the only rounding is the one described above.
_EXACT_PRECISION = 60

# Anthropic dates snapshots as -YYYYMMDD, OpenAI as -YYYY-MM-DD.
_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


@dataclass
class TokenCounts:
    """Tokens by the classes they are priced in (price_usage): one request's, or a sum's."""

    input_tokens: int = 0
    output_tokens: int = 0
    # All cache writes; cache_creation_1h_tokens is the part of them kept for an hour.
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_tokens: int = 0


TOKEN_FIELDS = tuple(field.name for field in fields(TokenCounts))


@dataclass(frozen=True, slots=True)
class PriceRow:
    """A model's list prices (USD per million tokens), detached from the database."""

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    max_output_tokens: int = 128_000
    # When the price was last set (the relay's model list shows it); None for a row made by hand.
    updated_at: datetime | None = None
    # Last, with a default: a row made by hand without it prices 1-hour writes as 5-minute
    # ones (see one_hour_write_rate).
    cache_write_1h_per_mtok: Decimal = Decimal(0)

    @classmethod
    def from_model_price(cls, price: ModelPrice) -> "PriceRow":
        """The row's prices as the database holds them (every field is a ModelPrice column)."""
        return cls(**{field.name: getattr(price, field.name) for field in fields(cls)})


def one_hour_write_rate(prices: PriceRow | ModelPrice) -> Decimal:
    """The price of a 1-hour cache write: the row's, or the 5-minute one where the row has
    none (see the module's docstring)."""
    return prices.cache_write_1h_per_mtok or prices.cache_write_per_mtok


def price_usage(
    *,
    prices: PriceRow | ModelPrice,
    input_tokens: int,
    output_tokens: int,
    cache_creation_tokens: int = 0,
    cache_creation_1h_tokens: int = 0,
    cache_read_tokens: int = 0,
    multiplier: Decimal | int,
) -> tuple[Decimal, Decimal]:
    """Return (cost_usd, charged_usd) for one request, each rounded as the module says.
    `cache_creation_1h_tokens` is the part of `cache_creation_tokens` kept for an hour."""
    token_counts = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_tokens": cache_creation_tokens,
        "cache_creation_1h_tokens": cache_creation_1h_tokens,
        "cache_read_tokens": cache_read_tokens,
    }
    for name, count in token_counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{name} must be a whole number of at least 0, not {count!r}.")
    if cache_creation_1h_tokens > cache_creation_tokens:
        raise ValueError(
            f"cache_creation_1h_tokens ({cache_creation_1h_tokens}) is part of "
            f"cache_creation_tokens ({cache_creation_tokens}) and cannot exceed it."
        )
    if isinstance(multiplier, bool) or not isinstance(multiplier, Decimal | int):
        raise TypeError(f"multiplier must be a Decimal or an int, not {multiplier!r}.")
    with localcontext() as context:
        context.prec = _EXACT_PRECISION
        exact_cost = (
            input_tokens * prices.input_per_mtok
            + output_tokens * prices.output_per_mtok
            + (cache_creation_tokens - cache_creation_1h_tokens) * prices.cache_write_per_mtok
            + cache_creation_1h_tokens * one_hour_write_rate(prices)
            + cache_read_tokens * prices.cache_read_per_mtok
        ) / TOKENS_PER_PRICE_UNIT
        exact_charge = exact_cost * multiplier
        return _round_money(exact_cost), _round_money(exact_charge)


def _round_money(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)


def candidate_names(model: str) -> list[str]:
    """The priced names that may stand for `model`, best first."""
    names = [model]
    undated = _SNAPSHOT_SUFFIX.sub("", model)
    if undated and undated != model:
        names.append(undated)
    return names


def lookup_price(table: Mapping[str, PriceRow], model: str) -> PriceRow | None:
    """Price `model` from an in-memory table (see `load_price_table`); None when unpriced."""
    for name in candidate_names(model):
        if name in table:
            return table[name]
    return None


def load_price_table() -> dict[str, PriceRow]:
    return {price.model: PriceRow.from_model_price(price) for price in ModelPrice.objects.all()}


def price_for_model(model: str) -> ModelPrice | None:
    """The ModelPrice that prices `model`, or None when it has no price."""
    names = candidate_names(model)
    found = {price.model: price for price in ModelPrice.objects.filter(model__in=names)}
    return next((found[name] for name in names if name in found), None)
