from decimal import Decimal

import pytest

from billing.models import ModelPrice
from billing.pricing import (
    PriceRow,
    load_price_table,
    lookup_price,
    price_for_model,
    price_usage,
)

from .factories import ModelPriceFactory

SONNET = PriceRow(
    model="claude-sonnet-4-5",
    input_per_mtok=Decimal("3"),
    output_per_mtok=Decimal("15"),
    cache_write_per_mtok=Decimal("3.75"),
    cache_read_per_mtok=Decimal("0.30"),
    cache_write_1h_per_mtok=Decimal("6"),
)


def flat_price(per_mtok: str) -> PriceRow:
    value = Decimal(per_mtok)
    return PriceRow("test-model", value, value, value, value)


def tokens(**counts: int) -> dict[str, int]:
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_tokens": 0,
        "cache_creation_1h_tokens": 0,
        "cache_read_tokens": 0,
        **counts,
    }


@pytest.mark.parametrize(
    ("counts", "cost"),
    [
        ({"input_tokens": 1_000_000}, "3.00000000"),
        ({"output_tokens": 1000}, "0.01500000"),
        ({"cache_creation_tokens": 2000}, "0.00750000"),
        ({"cache_read_tokens": 10_000}, "0.00300000"),
        # All four together: 0.036 + 0.0315 + 0.0375 + 0.0024.
        (
            {
                "input_tokens": 12_000,
                "output_tokens": 2100,
                "cache_creation_tokens": 10_000,
                "cache_read_tokens": 8000,
            },
            "0.10740000",
        ),
        ({}, "0.00000000"),
    ],
    ids=["input", "output", "cache-write", "cache-read", "all-four", "nothing"],
)
def test_each_token_class_uses_its_own_price(counts, cost):
    assert price_usage(prices=SONNET, multiplier=1, **tokens(**counts)) == (
        Decimal(cost),
        Decimal(cost),
    )


@pytest.mark.parametrize(
    ("cache_creation", "one_hour", "cost"),
    [
        # All 5-minute writes (no split reported): 2,000 x 3.75, as before the split.
        (2000, 0, "0.00750000"),
        # All 1-hour writes: 2,000 x 6.
        (2000, 2000, "0.01200000"),
        # 1,200 x 3.75 + 800 x 6 = 4,500 + 4,800.
        (2000, 800, "0.00930000"),
        # One token of each: 3.75 + 6 (exact, then rounded once).
        (2, 1, "0.00000975"),
        (0, 0, "0.00000000"),
    ],
    ids=["five-minutes", "one-hour", "both", "one-each", "none"],
)
def test_one_hour_cache_writes_are_priced_apart(cache_creation, one_hour, cost):
    counts = tokens(cache_creation_tokens=cache_creation, cache_creation_1h_tokens=one_hour)

    assert price_usage(prices=SONNET, multiplier=1, **counts) == (Decimal(cost), Decimal(cost))


def test_one_hour_writes_with_the_rest_and_a_multiplier():
    counts = tokens(
        input_tokens=12_000,
        output_tokens=2100,
        cache_creation_tokens=10_000,
        cache_creation_1h_tokens=4000,
        cache_read_tokens=8000,
    )
    # 0.036 + 0.0315 + 6,000 x 3.75 (0.0225) + 4,000 x 6 (0.024) + 0.0024 = 0.1164; x 1.5
    assert price_usage(prices=SONNET, multiplier=Decimal("1.5"), **counts) == (
        Decimal("0.11640000"),
        Decimal("0.17460000"),
    )


@pytest.mark.parametrize(
    ("write_5m", "write_1h", "cost"),
    [
        # A price without a 1-hour rate (made by hand, never saved through validation):
        # priced as 5-minute writes, as before the split, never as free.
        ("3.75", "0", "0.00375000"),
        # Cache writes free altogether (OpenAI): free.
        ("0", "0", "0.00000000"),
        # A 1-hour rate where 5-minute writes are free: its own rate.
        ("0", "2", "0.00200000"),
    ],
    ids=["no-one-hour-rate", "writes-free", "only-one-hour-rate"],
)
def test_a_price_without_a_one_hour_rate(write_5m, write_1h, cost):
    price = PriceRow(
        "m",
        Decimal(0),
        Decimal(0),
        Decimal(write_5m),
        Decimal(0),
        cache_write_1h_per_mtok=Decimal(write_1h),
    )
    counts = tokens(cache_creation_tokens=1000, cache_creation_1h_tokens=1000)

    assert price_usage(prices=price, multiplier=1, **counts) == (Decimal(cost), Decimal(cost))


def test_a_price_row_made_without_a_one_hour_rate_prices_as_five_minute_writes():
    """PriceRow's 1-hour rate comes last, with a default, so rows made by position still work."""
    assert flat_price("2").cache_write_1h_per_mtok == 0
    counts = tokens(cache_creation_tokens=10, cache_creation_1h_tokens=10)
    assert price_usage(prices=flat_price("2"), multiplier=1, **counts)[0] == Decimal("0.00002")


def test_one_hour_writes_cannot_exceed_all_cache_writes():
    counts = tokens(cache_creation_tokens=10, cache_creation_1h_tokens=11)

    with pytest.raises(
        ValueError,
        match=r"^cache_creation_1h_tokens \(11\) is part of cache_creation_tokens \(10\) and "
        r"cannot exceed it\.$",
    ):
        price_usage(prices=SONNET, multiplier=1, **counts)


@pytest.mark.parametrize(
    ("multiplier", "charge"),
    [("0.25", "0.02685000"), ("1", "0.10740000"), ("1.5", "0.16110000")],
)
def test_charge_is_cost_times_group_multiplier(multiplier, charge):
    cost, charged = price_usage(
        prices=SONNET,
        multiplier=Decimal(multiplier),
        **tokens(
            input_tokens=12_000,
            output_tokens=2100,
            cache_creation_tokens=10_000,
            cache_read_tokens=8000,
        ),
    )
    assert cost == Decimal("0.10740000")
    assert charged == Decimal(charge)


@pytest.mark.parametrize(
    ("per_mtok", "multiplier", "cost", "charge"),
    [
        # Exactly half at the 9th place rounds up (half-even would give ...02).
        ("0.025", 1, "0.00000003", "0.00000003"),
        # Just under half rounds down.
        ("0.0249", 1, "0.00000002", "0.00000002"),
        # Half in the charge alone: 0.0000001 x 0.25 = 0.000000025.
        ("0.1", Decimal("0.25"), "0.00000010", "0.00000003"),
        # The charge comes from the exact cost (0.000000016 x 0.25 = 0.000000004), not from
        # the rounded one (0.00000002 x 0.25 = 0.000000005, which would round up).
        ("0.016", Decimal("0.25"), "0.00000002", "0.00000000"),
    ],
)
def test_cost_and_charge_round_half_up_to_eight_places(per_mtok, multiplier, cost, charge):
    result = price_usage(
        prices=flat_price(per_mtok), multiplier=multiplier, **tokens(input_tokens=1)
    )
    assert result == (Decimal(cost), Decimal(charge))
    assert all(amount.as_tuple().exponent == -8 for amount in result)


def test_large_counts_stay_exact():
    result = price_usage(
        prices=flat_price("123.456789"),
        multiplier=Decimal("1.2345"),
        **tokens(input_tokens=4_000_000_000, output_tokens=3_999_999_999),
    )
    # 7,999,999,999 x 123.456789 / 1e6 = 987654.311876543211, x 1.2345 = 1219259.24801159259...
    assert result == (Decimal("987654.31187654"), Decimal("1219259.24801159"))


def test_a_model_price_row_prices_like_its_detached_copy(db):
    price = ModelPriceFactory()
    counts = tokens(input_tokens=1234, output_tokens=567, cache_read_tokens=89)
    assert price_usage(prices=price, multiplier=Decimal("1.5"), **counts) == price_usage(
        prices=PriceRow.from_model_price(price), multiplier=Decimal("1.5"), **counts
    )


@pytest.mark.parametrize("multiplier", [1.5, "1.5", True])
def test_multiplier_must_be_decimal_or_int(multiplier):
    with pytest.raises(TypeError, match="multiplier must be a Decimal or an int"):
        price_usage(prices=SONNET, multiplier=multiplier, **tokens(input_tokens=1))


@pytest.mark.parametrize("count", [-1, 1.0, "10", None])
def test_token_counts_must_be_whole_and_not_negative(count):
    with pytest.raises(ValueError, match="output_tokens must be a whole number of at least 0"):
        price_usage(prices=SONNET, multiplier=1, **tokens(output_tokens=count))


@pytest.mark.parametrize("count", [-1, 1.0, "10", None, True])
def test_one_hour_counts_must_be_whole_and_not_negative(count):
    with pytest.raises(
        ValueError, match="cache_creation_1h_tokens must be a whole number of at least 0"
    ):
        price_usage(
            prices=SONNET,
            multiplier=1,
            **tokens(cache_creation_tokens=5, cache_creation_1h_tokens=count),
        )


@pytest.fixture
def priced_models(db):
    for model in ["claude-sonnet-4-5", "claude-sonnet-4", "gpt-4o", "claude-opus-4-1-20250805"]:
        ModelPriceFactory(model=model)
    ModelPriceFactory(model="claude-opus-4-1", input_per_mtok=Decimal("15"))


@pytest.mark.parametrize(
    ("requested", "priced_as"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4", "claude-sonnet-4"),
        # Anthropic's dated snapshot falls back to the undated name, not the shorter
        # "claude-sonnet-4" that it also starts with.
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        # OpenAI's date style.
        ("gpt-4o-2024-08-06", "gpt-4o"),
        # A snapshot with its own price keeps it.
        ("claude-opus-4-1-20250805", "claude-opus-4-1-20250805"),
        ("claude-opus-4-1-20250101", "claude-opus-4-1"),
        # Different models that merely start with a priced name are unpriced.
        ("gpt-4o-mini", None),
        ("gpt-4o-mini-2024-07-18", None),
        ("claude-sonnet-4-5-preview", None),
        ("claude-sonnet-4-5-2025", None),
        ("claude-sonnet", None),
        ("CLAUDE-SONNET-4-5", None),
        ("unknown-model", None),
        ("", None),
    ],
)
def test_price_for_model(priced_models, requested, priced_as):
    price = price_for_model(requested)
    assert (price.model if price else None) == priced_as
    row = lookup_price(load_price_table(), requested)
    assert (row.model if row else None) == priced_as


def test_price_for_model_without_any_prices(db):
    assert price_for_model("claude-sonnet-4-5") is None
    assert load_price_table() == {}


def test_the_loaded_table_keeps_when_each_price_was_set(priced_models):
    table = load_price_table()

    assert {model: row.updated_at for model, row in table.items()} == dict(
        ModelPrice.objects.values_list("model", "updated_at")
    )
    assert all(row.updated_at is not None for row in table.values())
