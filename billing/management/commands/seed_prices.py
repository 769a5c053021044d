"""`manage.py seed_prices`: the vendors' list prices for the current Claude and GPT models.

Source of LIST_PRICES (USD per million tokens):
  - Anthropic: "Pricing", https://platform.claude.com/docs/en/docs/about-claude/pricing (base
    input, 5-minute and 1-hour cache writes, cache hits, output), read (a stored copy) on
    2026-12-07; the most output tokens from "Models overview",
    https://docs.anthropic.com/en/docs/about-claude/models/overview, as published in 2025.
  - OpenAI: "Pricing", https://platform.openai.com/docs/pricing (input, cached input, output;
    "Standard" tier), as published in 2025 (o3 after its price cut of 2025-06-10), and the most
    output tokens from each model's page, https://platform.openai.com/docs/models. OpenAI does
    not bill writing its prompt cache: both cache write prices are 0, and a cached input is a
    cache read (proxy.dialects.openai counts it so).
Check these pages before relying on the table: vendors change prices.

Each model is named as the vendor's alias; its dated snapshots (claude-sonnet-4-5-20250929,
gpt-4o-2024-08-06) fall back to it (billing.pricing.candidate_names).
"""

from dataclasses import dataclass
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import ModelPrice
from billing.services import model_price_save


@dataclass(frozen=True)
class ListPrice:
    input_per_mtok: str
    output_per_mtok: str
    cache_write_per_mtok: str
    cache_write_1h_per_mtok: str
    cache_read_per_mtok: str
    max_output_tokens: int

    def fields(self) -> dict[str, Decimal | int]:
        return {
            "input_per_mtok": Decimal(self.input_per_mtok),
            "output_per_mtok": Decimal(self.output_per_mtok),
            "cache_write_per_mtok": Decimal(self.cache_write_per_mtok),
            "cache_write_1h_per_mtok": Decimal(self.cache_write_1h_per_mtok),
            "cache_read_per_mtok": Decimal(self.cache_read_per_mtok),
            "max_output_tokens": self.max_output_tokens,
        }


_OPUS_4_5 = ListPrice("5", "25", "6.25", "10", "0.50", 64_000)
_OPUS_4 = ListPrice("15", "75", "18.75", "30", "1.50", 32_000)
_SONNET_4 = ListPrice("3", "15", "3.75", "6", "0.30", 64_000)
_HAIKU_4_5 = ListPrice("1", "5", "1.25", "2", "0.10", 64_000)
_HAIKU_3_5 = ListPrice("0.80", "4", "1", "1.60", "0.08", 8_192)

LIST_PRICES: dict[str, ListPrice] = {
    "claude-opus-4-5": _OPUS_4_5,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4": _OPUS_4,
    "claude-opus-4-0": _OPUS_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-3-7-sonnet": _SONNET_4,
    "claude-3-7-sonnet-latest": _SONNET_4,
    "claude-haiku-4-5": _HAIKU_4_5,
    "claude-3-5-haiku": _HAIKU_3_5,
    "claude-3-5-haiku-latest": _HAIKU_3_5,
    "gpt-4.1": ListPrice("2", "8", "0", "0", "0.50", 32_768),
    "gpt-4.1-mini": ListPrice("0.40", "1.60", "0", "0", "0.10", 32_768),
    "gpt-4o": ListPrice("2.50", "10", "0", "0", "1.25", 16_384),
    "gpt-4o-mini": ListPrice("0.15", "0.60", "0", "0", "0.075", 16_384),
    "o3": ListPrice("2", "8", "0", "0", "0.50", 100_000),
    "o4-mini": ListPrice("1.10", "4.40", "0", "0", "0.275", 100_000),
}


class Command(BaseCommand):
    help = (
        "Create the list prices of the current Claude and GPT models (the table and its sources "
        "are in billing/management/commands/seed_prices.py). A model that already has a price "
        "is left as it is and reported, unless --update is given. Each price written is audited "
        "(by the system)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--update",
            action="store_true",
            help="Also overwrite existing prices that differ from the table.",
        )
        parser.add_argument(
            "--model",
            action="append",
            dest="models",
            metavar="MODEL",
            help="Only this model (repeatable). Default: every model in the table.",
        )

    def handle(self, *args, **options) -> None:
        names = options["models"] or list(LIST_PRICES)
        unknown = [name for name in names if name not in LIST_PRICES]
        if unknown:
            raise CommandError(
                f"No list price for {', '.join(unknown)} in the table. Known models: "
                f"{', '.join(LIST_PRICES)}. Nothing was written."
            )
        counts = {"created": 0, "updated": 0, "unchanged": 0, "left": 0}
        for name in dict.fromkeys(names):
            outcome = self._seed(name, LIST_PRICES[name].fields(), update=options["update"])
            counts[outcome] += 1
        summary = (
            f"{counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged, {counts['left']} left as they are."
        )
        if counts["left"]:
            summary += " Run with --update to set those to the table's prices."
        self.stdout.write(summary)

    def _seed(self, name: str, listed: dict[str, Decimal | int], *, update: bool) -> str:
        price = ModelPrice.objects.filter(model=name).first()
        if price is None:
            model_price_save(price=ModelPrice(model=name, **listed), actor=None)
            self.stdout.write(f"Created {name}.")
            return "created"
        differences = {
            field: (getattr(price, field), value)
            for field, value in listed.items()
            if getattr(price, field) != value
        }
        if not differences:
            return "unchanged"
        described = "; ".join(
            f"{field} {_shown(old)} -> {_shown(new)}" for field, (old, new) in differences.items()
        )
        if not update:
            self.stdout.write(f"Left {name} as it is (the table has {described}).")
            return "left"
        for field, (_, new) in differences.items():
            setattr(price, field, new)
        model_price_save(price=price, actor=None)
        self.stdout.write(f"Updated {name}: {described}.")
        return "updated"


def _shown(value: Decimal | int) -> str:
    return format(value.normalize(), "f") if isinstance(value, Decimal) else str(value)
