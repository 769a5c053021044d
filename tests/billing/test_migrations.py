"""billing's data migrations: 0008 fills in the 1-hour cache write price of the prices made
before it existed."""

from decimal import Decimal

import pytest

from keys.models import AuditEvent
from tests.migrating import at_migration, migrate

BEFORE = ("billing", "0007_usage_cache_write_1h")
FILLED = ("billing", "0008_fill_cache_write_1h_prices")


@pytest.fixture
def before_filling(transactional_db):
    yield from at_migration(BEFORE)


def test_one_hour_cache_write_prices_are_filled_in(before_filling):
    price_model = before_filling.get_model("billing", "ModelPrice")

    def price(model: str, input_price: str, cache_write: str, one_hour: str = "0"):
        return price_model.objects.create(
            model=model,
            input_per_mtok=Decimal(input_price),
            output_per_mtok=Decimal("1"),
            cache_write_per_mtok=Decimal(cache_write),
            cache_write_1h_per_mtok=Decimal(one_hour),
        )

    price("claude-sonnet-4-5", "3", "3.75")
    price("claude-3-5-haiku-20241022", "0.80", "1")
    price("us.anthropic.claude-opus-4-1", "15", "18.75")  # a Bedrock name: still Claude
    price("claude-haiku-4-5", "1", "1.25", one_hour="2.10")  # set by hand: kept
    price("gpt-4o", "2.50", "0")  # OpenAI: writing the cache is free
    price("deepseek-chat", "0.27", "0.27")
    versions = dict(price_model.objects.values_list("model", "updated_at"))

    filled_apps = migrate(FILLED)

    price_model = filled_apps.get_model("billing", "ModelPrice")
    assert dict(price_model.objects.values_list("model", "cache_write_1h_per_mtok")) == {
        "claude-sonnet-4-5": Decimal("6"),
        "claude-3-5-haiku-20241022": Decimal("1.6"),
        "us.anthropic.claude-opus-4-1": Decimal("30"),
        "claude-haiku-4-5": Decimal("2.1"),
        "gpt-4o": Decimal("0"),
        "deepseek-chat": Decimal("0.27"),
    }
    # When the list prices were set (the relay's model list shows it) is left alone.
    assert dict(price_model.objects.values_list("model", "updated_at")) == versions
    rows = AuditEvent.objects.order_by("id").values_list(
        "action", "actor", "team", "subject_type", "subject_label", "changes"
    )
    assert list(rows) == [
        (
            "price.updated",
            None,
            None,
            "price",
            "claude-3-5-haiku-20241022",
            {"cache_write_1h_per_mtok": ["0", "1.6"]},
        ),
        (
            "price.updated",
            None,
            None,
            "price",
            "claude-sonnet-4-5",
            {"cache_write_1h_per_mtok": ["0", "6"]},
        ),
        (
            "price.updated",
            None,
            None,
            "price",
            "deepseek-chat",
            {"cache_write_1h_per_mtok": ["0", "0.27"]},
        ),
        (
            "price.updated",
            None,
            None,
            "price",
            "us.anthropic.claude-opus-4-1",
            {"cache_write_1h_per_mtok": ["0", "30"]},
        ),
    ]
    ids = dict(price_model.objects.values_list("model", "pk"))
    assert (
        AuditEvent.objects.get(subject_label="claude-sonnet-4-5").subject_id
        == ids["claude-sonnet-4-5"]
    )
