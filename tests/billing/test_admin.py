"""The staff admin for prices (editable) and usage events (read-only)."""

from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import ModelPrice, RefusalCount, UsageDaily, UsageEvent
from tests.admin_pages import assert_sent_to_login, url

from .factories import ModelPriceFactory, RefusalCountFactory, UsageEventFactory


@pytest.fixture
def price(db) -> ModelPrice:
    return ModelPriceFactory()


@pytest.fixture
def usage(issued) -> UsageEvent:
    return UsageEventFactory(key=issued.key)


@pytest.fixture
def daily(issued) -> UsageDaily:
    return UsageDaily.objects.create(
        team=issued.key.team,
        key=issued.key,
        model="claude-sonnet-4-5",
        day=timezone.localdate(),
        requests=3,
        charged_usd=Decimal("0.018"),
    )


@pytest.fixture
def refusals(issued) -> RefusalCount:
    return RefusalCountFactory(key=issued.key, count=3)


@pytest.fixture
def admin_pages(price, usage, daily, refusals):
    return [
        url("billing_refusalcount_changelist"),
        url("billing_refusalcount_change", refusals.pk),
        url("billing_usagedaily_changelist"),
        url("billing_usagedaily_change", daily.pk),
        url("billing_modelprice_changelist"),
        url("billing_modelprice_add"),
        url("billing_modelprice_change", price.pk),
        url("billing_usageevent_changelist"),
        url("billing_usageevent_change", usage.pk),
    ]


def test_every_page_renders_for_staff(admin_client, admin_pages):
    for page in admin_pages:
        assert admin_client.get(page).status_code == 200, page


def test_usage_pages_show_amounts_as_money(admin_client, usage, daily):
    UsageEvent.objects.filter(pk=usage.pk).update(
        cost_usd=Decimal("0.0042"), charged_usd=Decimal("1234.5")
    )
    listing = admin_client.get(url("billing_usageevent_changelist")).content.decode()
    assert '<td class="field-charged">$1,234.50</td>' in listing
    detail = admin_client.get(url("billing_usageevent_change", usage.pk)).content.decode()
    assert '<div class="readonly">$0.0042</div>' in detail
    assert '<div class="readonly">$1,234.50</div>' in detail
    daily_list = admin_client.get(url("billing_usagedaily_changelist")).content.decode()
    assert '<td class="field-charged">$0.02</td>' in daily_list
    for page in (listing, detail, daily_list):
        assert "usd" not in page.lower()
        assert "1234.50000000" not in page


def test_non_staff_member_is_sent_to_login(client, member, admin_pages):
    client.force_login(member)
    assert_sent_to_login(client, admin_pages)


def test_anonymous_is_sent_to_login(client, admin_pages):
    assert_sent_to_login(client, admin_pages)


def price_data(**overrides) -> dict:
    data = {
        "model": "claude-opus-4-1",
        "input_per_mtok": "15",
        "output_per_mtok": "75",
        "cache_write_per_mtok": "18.75",
        "cache_write_1h_per_mtok": "30",
        "cache_read_per_mtok": "1.5",
        "max_output_tokens": "32000",
    }
    data.update(overrides)
    return data


def test_add_a_price(admin_client, db):
    response = admin_client.post(url("billing_modelprice_add"), price_data())

    assert response.status_code == 302
    price = ModelPrice.objects.get()
    assert (
        price.model,
        price.input_per_mtok,
        price.output_per_mtok,
        price.max_output_tokens,
    ) == ("claude-opus-4-1", Decimal("15"), Decimal("75"), 32_000)


def test_change_a_price(admin_client, price):
    response = admin_client.post(
        url("billing_modelprice_change", price.pk),
        price_data(model=price.model, input_per_mtok="2.5"),
    )

    assert response.status_code == 302
    price.refresh_from_db()
    assert price.input_per_mtok == Decimal("2.5")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"output_per_mtok": "-1"},
            "output_per_mtok",
            "Ensure this value is greater than or equal to 0.",
        ),
        ({"input_per_mtok": "cheap"}, "input_per_mtok", "Enter a number."),
        ({"model": ""}, "model", "This field is required."),
        (
            {"max_output_tokens": "0"},
            "max_output_tokens",
            "Ensure this value is greater than or equal to 1.",
        ),
        ({"max_output_tokens": "lots"}, "max_output_tokens", "Enter a whole number."),
        ({"max_output_tokens": ""}, "max_output_tokens", "This field is required."),
        ({"model": "claude-sonnet-4-5"}, "model", "Model price with this Model already exists."),
    ],
)
def test_bad_price_is_refused(admin_client, price, overrides, field, message):
    response = admin_client.post(url("billing_modelprice_add"), price_data(**overrides))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}
    assert list(ModelPrice.objects.all()) == [price]


@pytest.mark.parametrize(
    ("model_name", "fixture", "bulk_status"),
    [
        # Lists with an action (the CSV export) send an unknown one back to the list.
        ("usageevent", "usage", 302),
        ("usagedaily", "daily", 302),
        ("refusalcount", "refusals", 200),
    ],
)
def test_usage_rows_are_read_only(admin_client, request, model_name, fixture, bulk_status):
    row = request.getfixturevalue(fixture)
    model = type(row)
    before = model.objects.filter(pk=row.pk).values().get()

    assert admin_client.get(url(f"billing_{model_name}_add")).status_code == 403
    view = admin_client.get(url(f"billing_{model_name}_change", row.pk))
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    changed = admin_client.post(url(f"billing_{model_name}_change", row.pk), {"model": "free"})
    assert changed.status_code == 403
    deleted = admin_client.post(url(f"billing_{model_name}_delete", row.pk), {"post": "yes"})
    assert deleted.status_code == 403
    bulk = admin_client.post(
        url(f"billing_{model_name}_changelist"),
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert bulk.status_code == bulk_status
    assert "delete_selected" not in bulk.content.decode()
    assert (
        "delete_selected"
        not in admin_client.get(url(f"billing_{model_name}_changelist")).content.decode()
    )
    assert model.objects.filter(pk=row.pk).values().get() == before


def test_usage_list_shows_the_key_but_never_its_digest(admin_client, usage):
    response = admin_client.get(url("billing_usageevent_changelist"))

    content = response.content.decode()
    assert usage.key.prefix in content
    assert usage.key.digest not in content
    assert (
        usage.key.digest
        not in admin_client.get(url("billing_usageevent_change", usage.pk)).content.decode()
    )
