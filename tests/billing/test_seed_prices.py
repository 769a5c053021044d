"""manage.py seed_prices: the vendors' list prices, created; existing ones left alone unless
--update; each write audited, by the system."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.management.commands.seed_prices import LIST_PRICES
from billing.models import ModelPrice
from billing.pricing import load_price_table, lookup_price
from keys.models import AuditEvent
from tests.audit_trail import audit_rows

from .factories import ModelPriceFactory

PRICE_COLUMNS = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "cache_read_per_mtok",
    "max_output_tokens",
)


def run(*options: str) -> str:
    out = StringIO()
    call_command("seed_prices", *options, stdout=out)
    return out.getvalue()


def stored(model: str) -> tuple:
    return ModelPrice.objects.values_list(*PRICE_COLUMNS).get(model=model)


def test_creates_every_listed_price(db):
    out = run()

    assert (
        out.splitlines()[-1]
        == f"{len(LIST_PRICES)} created, 0 updated, 0 unchanged, 0 left as they are."
    )
    assert "Created claude-sonnet-4-5." in out.splitlines()
    assert sorted(ModelPrice.objects.values_list("model", flat=True)) == sorted(LIST_PRICES)
    assert stored("claude-opus-4-1") == (
        Decimal("15"),
        Decimal("75"),
        Decimal("18.75"),
        Decimal("30"),
        Decimal("1.5"),
        32_000,
    )
    assert stored("gpt-4o-mini") == (
        Decimal("0.15"),
        Decimal("0.6"),
        Decimal("0"),
        Decimal("0"),
        Decimal("0.075"),
        16_384,
    )
    assert AuditEvent.objects.filter(action="price.created", actor=None).count() == len(LIST_PRICES)


@pytest.mark.parametrize("model", sorted(LIST_PRICES))
def test_every_listed_price_is_valid_and_claude_writes_for_an_hour_at_twice_the_input(model):
    listed = LIST_PRICES[model].fields()

    ModelPrice(model=model, **listed).full_clean(validate_unique=False, validate_constraints=False)
    if model.startswith("claude"):
        assert listed["cache_write_1h_per_mtok"] == 2 * listed["input_per_mtok"]
        assert listed["cache_write_per_mtok"] == listed["input_per_mtok"] * Decimal("1.25")
        assert listed["cache_read_per_mtok"] == listed["input_per_mtok"] / 10
    else:
        assert listed["cache_write_per_mtok"] == listed["cache_write_1h_per_mtok"] == 0


def test_dated_snapshots_are_priced_by_their_alias(db):
    run()
    table = load_price_table()

    for snapshot, alias in [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("o4-mini-2025-04-16", "o4-mini"),
    ]:
        assert lookup_price(table, snapshot).model == alias


def test_an_existing_price_is_left_alone_and_reported(db):
    ModelPriceFactory(model="claude-sonnet-4-5", input_per_mtok=Decimal("2.5"))
    before = stored("claude-sonnet-4-5")

    out = run("--model", "claude-sonnet-4-5", "--model", "gpt-4o")

    assert out == (
        "Left claude-sonnet-4-5 as it is (the table has input_per_mtok 2.5 -> 3; "
        "max_output_tokens 128000 -> 64000).\n"
        "Created gpt-4o.\n"
        "1 created, 0 updated, 0 unchanged, 1 left as they are. Run with --update to set "
        "those to the table's prices.\n"
    )
    assert stored("claude-sonnet-4-5") == before
    assert [row[0] for row in audit_rows()] == ["price.created"]


def test_update_sets_the_table_price_and_audits_the_change(db):
    ModelPriceFactory(model="claude-sonnet-4-5", input_per_mtok=Decimal("2.5"))

    out = run("--update", "--model", "claude-sonnet-4-5")

    assert out == (
        "Updated claude-sonnet-4-5: input_per_mtok 2.5 -> 3; max_output_tokens 128000 -> 64000.\n"
        "0 created, 1 updated, 0 unchanged, 0 left as they are.\n"
    )
    assert stored("claude-sonnet-4-5") == tuple(
        LIST_PRICES["claude-sonnet-4-5"].fields()[column] for column in PRICE_COLUMNS
    )
    assert audit_rows() == [
        (
            "price.updated",
            None,
            None,
            "claude-sonnet-4-5",
            {"input_per_mtok": ["2.5", "3"], "max_output_tokens": [128000, 64000]},
        )
    ]


def test_a_second_run_changes_nothing(db):
    run()
    versions = dict(ModelPrice.objects.values_list("model", "updated_at"))

    out = run("--update")

    assert out == f"0 created, 0 updated, {len(LIST_PRICES)} unchanged, 0 left as they are.\n"
    assert dict(ModelPrice.objects.values_list("model", "updated_at")) == versions
    assert AuditEvent.objects.count() == len(LIST_PRICES)


def test_an_unknown_model_is_refused_and_nothing_is_written(db):
    with pytest.raises(CommandError) as error:
        run("--model", "gpt-4o", "--model", "claude-nope", "--model", "gpt-9")

    assert str(error.value) == (
        f"No list price for claude-nope, gpt-9 in the table. Known models: "
        f"{', '.join(LIST_PRICES)}. Nothing was written."
    )
    assert not ModelPrice.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model"], "Error: argument --model: expected one argument"),
        (["claude-sonnet-4-5"], "Error: unrecognized arguments: claude-sonnet-4-5"),
        (["--overwrite"], "Error: unrecognized arguments: --overwrite"),
    ],
    ids=["model-without-a-name", "positional", "unknown-option"],
)
def test_bad_arguments_are_refused_with_a_clear_message(db, options, message):
    with pytest.raises(CommandError) as error:
        run(*options)

    assert str(error.value) == message
    assert not ModelPrice.objects.exists()
