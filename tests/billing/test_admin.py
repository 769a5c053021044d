"""The staff admin for prices (editable, audited) and usage events (read-only)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import ModelPrice, RefusalCount, UsageDaily, UsageEvent
from billing.services import model_price_save
from keys.models import AuditEvent
from tests.admin_pages import assert_sent_to_login, url
from tests.audit_trail import audit_rows
from tests.factories import UserFactory

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


# --- prices: written through the service, audited, "last changed" from the trail ----------

PRICE_FORM = {
    "model": "claude-haiku-4-5",
    "input_per_mtok": "1",
    "output_per_mtok": "5",
    "cache_write_per_mtok": "1.25",
    "cache_write_1h_per_mtok": "2",
    "cache_read_per_mtok": "0.10",
    "max_output_tokens": "64000",
}
AT_NINE_THIRTY = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_a_price_added_in_the_admin_is_audited_as_its_staff_user(admin_client):
    response = admin_client.post(url("billing_modelprice_add"), PRICE_FORM)

    assert response.status_code == 302
    price = ModelPrice.objects.get()
    assert price.cache_write_1h_per_mtok == Decimal("2")
    [(action, actor, team, label, changes)] = audit_rows()
    assert (action, actor, team, label) == ("price.created", "admin", None, "claude-haiku-4-5")
    assert changes["cache_write_1h_per_mtok"] == [None, "2"]


def test_a_price_without_its_one_hour_rate_is_refused_in_the_admin(admin_client):
    response = admin_client.post(
        url("billing_modelprice_add"), {**PRICE_FORM, "cache_write_1h_per_mtok": "0"}
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "cache_write_1h_per_mtok": [
            "Set the 1-hour cache write price too: 5-minute cache writes cost something, so "
            "1-hour ones cannot be free (Anthropic bills them at twice the input price)."
        ]
    }
    assert not ModelPrice.objects.exists()
    assert audit_rows() == []


def test_a_price_changed_in_the_admin_shows_when_and_by_whom(admin_client, price):
    response = admin_client.post(
        url("billing_modelprice_change", price.pk),
        {**PRICE_FORM, "model": price.model, "input_per_mtok": "2.5"},
    )
    assert response.status_code == 302
    assert audit_rows() == [
        (
            "price.updated",
            "admin",
            None,
            price.model,
            {
                "input_per_mtok": ["3", "2.5"],
                "output_per_mtok": ["15", "5"],
                "cache_write_per_mtok": ["3.75", "1.25"],
                "cache_write_1h_per_mtok": ["6", "2"],
                "cache_read_per_mtok": ["0.3", "0.1"],
                "max_output_tokens": [128000, 64000],
            },
        )
    ]
    AuditEvent.objects.update(created_at=AT_NINE_THIRTY)

    listing = admin_client.get(url("billing_modelprice_changelist")).content.decode()
    detail = admin_client.get(url("billing_modelprice_change", price.pk)).content.decode()

    assert '<td class="field-last_changed">2026-03-01 09:30 UTC by admin</td>' in listing
    assert '<div class="readonly">2026-03-01 09:30 UTC by admin</div>' in detail


def test_last_changed_is_the_latest_row_and_the_system_when_no_one_acted(admin_client, price):
    staff = UserFactory(username="pricer", is_staff=True)
    model_price_save(price=ModelPrice(model="gpt-4o", input_per_mtok=1), actor=staff)
    gpt = ModelPrice.objects.get(model="gpt-4o")
    gpt.input_per_mtok = Decimal(2)
    model_price_save(price=gpt, actor=None)
    AuditEvent.objects.filter(action="price.created").update(created_at=AT_NINE_THIRTY)
    AuditEvent.objects.filter(action="price.updated").update(
        created_at=AT_NINE_THIRTY + timedelta(hours=5)
    )
    ModelPrice.objects.filter(pk=price.pk).update(updated_at=AT_NINE_THIRTY - timedelta(days=1))

    listing = admin_client.get(url("billing_modelprice_changelist")).content.decode()

    assert '<td class="field-last_changed">2026-03-01 14:30 UTC by the system</td>' in listing
    # Set before prices were audited.
    assert (
        '<td class="field-last_changed">2026-02-28 09:30 UTC (not in the audit trail)</td>'
        in listing
    )


def test_a_price_deleted_in_the_admin_is_audited(admin_client, price):
    other = ModelPriceFactory(model="gpt-4o")

    response = admin_client.post(url("billing_modelprice_delete", price.pk), {"post": "yes"})
    assert response.status_code == 302
    response = admin_client.post(
        url("billing_modelprice_changelist"),
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert response.status_code == 302

    assert not ModelPrice.objects.exists()
    assert [(row[0], row[1], row[3]) for row in audit_rows()] == [
        ("price.deleted", "admin", price.model),
        ("price.deleted", "admin", "gpt-4o"),
    ]
