"""The notify admin: webhooks changed and deleted through the services (the secret never shown),
deliveries and attempts read-only with a redeliver action."""

import pytest

from keys.models import AuditEvent
from notify import services
from notify.models import Delivery, Webhook

from ..admin_pages import url
from ..factories import UserFactory, grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, db):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_change_page_never_shows_the_secret(admin_client, make_webhook):
    webhook, secret = make_webhook("http://127.0.0.1/a")

    page = admin_client.get(url("notify_webhook_change", webhook.pk)).content.decode()

    assert "http://127.0.0.1/a" in page
    assert secret not in page
    assert webhook.secret_encrypted not in page
    assert "secret" not in page.lower().replace("csrfmiddlewaretoken", "")
    assert admin_client.get(url("notify_webhook_add")).status_code == 403


def test_change_goes_through_the_service(admin_client, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a", ["key.created"])

    response = admin_client.post(
        url("notify_webhook_change", webhook.pk),
        {"url": "http://127.0.0.1/b", "event_types": ["*"], "is_active": "on"},
    )

    assert response.status_code == 302
    webhook.refresh_from_db()
    assert (webhook.url, webhook.event_types) == ("http://127.0.0.1/b", ["*"])
    row = AuditEvent.objects.get(action="webhook.updated")
    assert row.actor.username == "root"
    assert row.changes == {
        "url": ["http://127.0.0.1/a", "http://127.0.0.1/b"],
        "event_types": [["key.created"], ["*"]],
    }


def test_refused_change_shows_the_services_message(admin_client, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")

    response = admin_client.post(
        url("notify_webhook_change", webhook.pk),
        {"url": "ftp://127.0.0.1/b", "event_types": [], "is_active": "on"},
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors == {
        "url": ["Enter an http:// or https:// URL."],
        "event_types": ['Choose at least one event type, or "*" for all of them.'],
    }
    webhook.refresh_from_db()
    assert webhook.url == "http://127.0.0.1/a"
    assert not AuditEvent.objects.filter(action="webhook.updated").exists()


def test_delete_goes_through_the_service(admin_client, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")

    response = admin_client.post(url("notify_webhook_delete", webhook.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Webhook.objects.exists()
    assert AuditEvent.objects.get(action="webhook.deleted").actor.username == "root"


def test_deliveries_are_read_only_with_a_redeliver_action(admin_client, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")
    test_delivery = services.webhook_test(actor=lead, webhook=webhook)
    Delivery.objects.filter(pk=test_delivery.pk).update(
        status=Delivery.Status.FAILED, next_attempt_at=None
    )

    assert admin_client.get(url("notify_delivery_changelist")).status_code == 200
    assert admin_client.get(url("notify_delivery_change", test_delivery.pk)).status_code == 200
    assert admin_client.get(url("notify_attempt_changelist")).status_code == 200
    response = admin_client.post(
        url("notify_delivery_changelist"),
        {"action": "redeliver", "_selected_action": [test_delivery.pk]},
        follow=True,
    )

    assert "Queued 1 delivery for a new try." in response.content.decode()
    test_delivery.refresh_from_db()
    assert test_delivery.status == Delivery.Status.PENDING
    assert test_delivery.next_attempt_at is not None


def test_redeliver_needs_the_change_permission(client, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")
    test_delivery = services.webhook_test(actor=lead, webhook=webhook)
    Delivery.objects.filter(pk=test_delivery.pk).update(status=Delivery.Status.FAILED)
    viewer = grant(UserFactory(username="viewer", is_staff=True), "notify.view_delivery")
    client.force_login(viewer)

    response = client.post(
        url("notify_delivery_changelist"),
        {"action": "redeliver", "_selected_action": [test_delivery.pk]},
    )

    assert response.status_code == 403
    test_delivery.refresh_from_db()
    assert test_delivery.status == Delivery.Status.FAILED
