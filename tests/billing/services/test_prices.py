"""billing.services.prices: every write to a price is validated and audited, once."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from billing.models import ModelPrice
from billing.services import model_price_delete, model_price_save
from keys.models import AuditEvent
from tests.audit_trail import audit_rows

from ...factories import UserFactory

SONNET = {
    "input_per_mtok": Decimal("3"),
    "output_per_mtok": Decimal("15"),
    "cache_write_per_mtok": Decimal("3.75"),
    "cache_write_1h_per_mtok": Decimal("6"),
    "cache_read_per_mtok": Decimal("0.30"),
    "max_output_tokens": 64_000,
}


@pytest.fixture
def staff(db):
    return UserFactory(username="pricer", is_staff=True)


def test_creating_a_price_writes_one_row_with_every_field(staff):
    saved = model_price_save(price=ModelPrice(model="claude-sonnet-4-5", **SONNET), actor=staff)

    assert saved.created
    assert ModelPrice.objects.get().cache_write_1h_per_mtok == Decimal("6")
    assert audit_rows() == [
        (
            "price.created",
            "pricer",
            None,
            "claude-sonnet-4-5",
            {
                "model": [None, "claude-sonnet-4-5"],
                "input_per_mtok": [None, "3"],
                "output_per_mtok": [None, "15"],
                "cache_write_per_mtok": [None, "3.75"],
                "cache_write_1h_per_mtok": [None, "6"],
                "cache_read_per_mtok": [None, "0.3"],
                "max_output_tokens": [None, 64000],
            },
        )
    ]
    event = AuditEvent.objects.get()
    assert (event.subject_type, event.subject_id) == ("price", saved.price.pk)


def test_changing_a_price_records_only_what_changed(staff):
    price = model_price_save(price=ModelPrice(model="m", **SONNET), actor=None).price
    price = ModelPrice.objects.get(pk=price.pk)
    price.input_per_mtok = "2.50"  # as a form would give it: compared as the Decimal it is
    price.cache_read_per_mtok = Decimal("0.300")  # the same value

    saved = model_price_save(price=price, actor=staff)

    assert not saved.created
    assert saved.changes == {"input_per_mtok": ["3", "2.5"]}
    assert audit_rows()[1:] == [
        ("price.updated", "pricer", None, "m", {"input_per_mtok": ["3", "2.5"]})
    ]


def test_a_save_that_changes_nothing_writes_nothing(staff):
    price = model_price_save(price=ModelPrice(model="m", **SONNET), actor=None).price
    updated_at = ModelPrice.objects.get().updated_at

    saved = model_price_save(price=ModelPrice.objects.get(pk=price.pk), actor=staff)

    assert saved.changes == {}
    assert ModelPrice.objects.get().updated_at == updated_at
    assert [row[0] for row in audit_rows()] == ["price.created"]


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"cache_write_1h_per_mtok": Decimal(0)},
            {
                "cache_write_1h_per_mtok": [
                    "Set the 1-hour cache write price too: 5-minute cache writes cost "
                    "something, so 1-hour ones cannot be free (Anthropic bills them at twice "
                    "the input price)."
                ]
            },
        ),
        (
            {"input_per_mtok": Decimal("-1")},
            {"input_per_mtok": ["Ensure this value is greater than or equal to 0."]},
        ),
        ({"model": ""}, {"model": ["This field cannot be blank."]}),
    ],
    ids=["one-hour-price-missing", "negative", "no-model"],
)
def test_a_refused_price_writes_nothing(staff, fields, errors):
    with pytest.raises(ValidationError) as refused:
        model_price_save(price=ModelPrice(**{"model": "m", **SONNET, **fields}), actor=staff)

    assert refused.value.message_dict == errors
    assert not ModelPrice.objects.exists()
    assert audit_rows() == []


def test_free_cache_writes_need_no_one_hour_price(staff):
    gpt = {**SONNET, "cache_write_per_mtok": Decimal(0), "cache_write_1h_per_mtok": Decimal(0)}

    model_price_save(price=ModelPrice(model="gpt-4o", **gpt), actor=staff)

    assert ModelPrice.objects.get().cache_write_1h_per_mtok == 0


def test_a_model_that_has_a_price_cannot_get_a_second(staff):
    model_price_save(price=ModelPrice(model="m", **SONNET), actor=staff)

    with pytest.raises(ValidationError) as refused:
        model_price_save(price=ModelPrice(model="m", **SONNET), actor=staff)

    assert refused.value.message_dict == {"model": ["Model price with this Model already exists."]}
    assert len(audit_rows()) == 1


def test_deleting_a_price_keeps_what_it_was_in_the_trail(staff):
    price = model_price_save(price=ModelPrice(model="m", **SONNET), actor=None).price
    price_id = price.pk

    model_price_delete(price=price, actor=staff)

    assert not ModelPrice.objects.exists()
    assert audit_rows()[1:] == [
        (
            "price.deleted",
            "pricer",
            None,
            "m",
            {
                "model": ["m", None],
                "input_per_mtok": ["3", None],
                "output_per_mtok": ["15", None],
                "cache_write_per_mtok": ["3.75", None],
                "cache_write_1h_per_mtok": ["6", None],
                "cache_read_per_mtok": ["0.3", None],
                "max_output_tokens": [64000, None],
            },
        )
    ]
    assert AuditEvent.objects.get(action="price.deleted").subject_id == price_id
