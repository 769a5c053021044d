"""The portal's webhook pages (Django's test client): leads only, the secret shown once, the
delivery log and redelivery."""

import pytest
from django.test import override_settings

from core import credentials
from keys.models import AuditEvent
from notify import delivery, services
from notify.models import Delivery, Event, Webhook

from ..factories import UserFactory

pytestmark = pytest.mark.django_db

PAGES = "/t/acme/notifications/webhooks/"


@pytest.fixture
def lead_client(client, lead):
    client.force_login(lead)
    return client


def test_list_shows_each_webhook_with_its_last_delivery(lead_client, lead, make_webhook, receiver):
    receiver.answers = [(500, b"no")]
    webhook, _ = make_webhook(receiver.url, ["key.expired"])
    make_webhook("http://127.0.0.1/quiet")
    services.webhook_test(actor=lead, webhook=webhook)
    delivery.deliver_due()

    response = lead_client.get(PAGES)

    assert response.status_code == 200
    page = response.content.decode()
    assert f'data-webhook-id="{webhook.pk}"' in page
    assert f"127.0.0.1:{receiver.url.split(':')[2].split('/')[0]}/hooks/hcai" in page
    assert "key.expired" in page
    assert "Pending" in page
    assert "none yet" in page


def test_create_shows_the_secret_once(lead_client, receiver):
    form = lead_client.get(f"{PAGES}new/")
    assert form.status_code == 200

    response = lead_client.post(
        f"{PAGES}new/", {"url": receiver.url, "event_types": ["key.expiring", "key.expired"]}
    )

    webhook = Webhook.objects.get()
    assert response.status_code == 303
    assert response["Location"].startswith(f"{PAGES}{webhook.pk}/created/")
    shown = lead_client.get(response["Location"])
    assert shown.status_code == 200
    assert "no-store" in shown["Cache-Control"]
    secret = shown.context["plaintext"]
    assert secret.startswith("whsec_")
    assert secret in shown.content.decode()
    assert credentials.decrypt(webhook.secret_encrypted, owner="test") == secret
    assert webhook.event_types == ["key.expiring", "key.expired"]

    again = lead_client.get(response["Location"])
    assert again.status_code == 410
    assert secret not in again.content.decode()
    assert "This secret was shown once." in again.content.decode()
    for page in (PAGES, f"{PAGES}{webhook.pk}/", f"{PAGES}{webhook.pk}/edit/"):
        assert secret not in lead_client.get(page).content.decode()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"url": "", "event_types": ["*"]}, "url", "Enter the URL the events are posted to."),
        ({"url": "gopher://x/", "event_types": ["*"]}, "url", "Enter an http:// or https:// URL."),
        (
            {"url": "http://127.0.0.1/"},
            "event_types",
            'Choose at least one event type, or "*" for all of them.',
        ),
        (
            {"url": "http://169.254.169.254/", "event_types": ["*"]},
            "url",
            "169.254.169.254 is a loopback, private, link-local or reserved address; webhooks "
            "may only reach public addresses.",
        ),
    ],
)
@override_settings(WEBHOOKS_ALLOW_PRIVATE=False)
def test_create_refused_shows_the_message_and_writes_nothing(lead_client, data, field, message):
    response = lead_client.post(f"{PAGES}new/", data)

    assert response.status_code == 400
    assert response.context["form"].errors[field] == [message]
    assert not Webhook.objects.exists()
    assert not AuditEvent.objects.filter(subject_type="webhook").exists()


def test_edit_and_delete(lead_client, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a", ["key.created"])

    assert lead_client.get(f"{PAGES}{webhook.pk}/edit/").status_code == 200
    response = lead_client.post(
        f"{PAGES}{webhook.pk}/edit/",
        {"url": "http://127.0.0.1/b", "event_types": ["key.created", "key.rotated"]},
    )
    assert response.status_code == 302
    webhook.refresh_from_db()
    assert (webhook.url, webhook.event_types, webhook.is_active) == (
        "http://127.0.0.1/b",
        ["key.created", "key.rotated"],
        False,  # the box was left unticked
    )

    confirm = lead_client.get(f"{PAGES}{webhook.pk}/delete/")
    assert confirm.status_code == 200
    assert "Delete webhook 127.0.0.1/b?" in confirm.content.decode()
    assert Webhook.objects.exists()
    assert lead_client.post(f"{PAGES}{webhook.pk}/delete/").status_code == 302
    assert not Webhook.objects.exists()
    assert list(
        AuditEvent.objects.filter(subject_type="webhook").values_list("action", flat=True)
    ) == ["webhook.deleted", "webhook.updated", "webhook.created"]


def test_send_test_delivery_log_and_redeliver(lead_client, make_webhook, receiver):
    receiver.answers = [(500, b"upstream exploded")]
    webhook, _ = make_webhook(receiver.url)
    detail = f"{PAGES}{webhook.pk}/"

    response = lead_client.post(f"{detail}test/", follow=True)
    test_delivery = Delivery.objects.get()
    assert f"Test delivery {test_delivery.uuid} queued" in response.content.decode()
    delivery.deliver_due()
    Delivery.objects.filter(pk=test_delivery.pk).update(
        status=Delivery.Status.FAILED, next_attempt_at=None
    )

    page = lead_client.get(detail).content.decode()
    assert str(test_delivery.uuid) in page
    assert "HTTP 500" in page
    assert "upstream exploded" in page
    assert "Failed" in page
    assert "Redeliver" in page

    receiver.answers = [(200, b"ok")]
    response = lead_client.post(f"{detail}deliveries/{test_delivery.uuid}/redeliver/")
    assert response.status_code == 302
    test_delivery.refresh_from_db()
    assert test_delivery.status == Delivery.Status.PENDING
    delivery.deliver_due()
    test_delivery.refresh_from_db()
    assert test_delivery.status == Delivery.Status.DELIVERED
    assert {r.headers["X-HCAI-Delivery"] for r in receiver.requests} == {str(test_delivery.uuid)}


@pytest.mark.parametrize("who", ["member", "outsider", "staff"])
def test_everyone_but_leads_gets_404_and_nothing_changes(
    client, who, member, outsider, make_webhook
):
    actor = {
        "member": member,
        "outsider": outsider,
        "staff": UserFactory(username="root", is_staff=True, is_superuser=True),
    }[who]
    webhook, _ = make_webhook("http://127.0.0.1/a")
    client.force_login(actor)
    one = f"{PAGES}{webhook.pk}/"

    answers = [
        client.get(PAGES),
        client.get(f"{PAGES}new/"),
        client.post(f"{PAGES}new/", {"url": "http://127.0.0.1/b", "event_types": ["*"]}),
        client.get(one),
        client.get(f"{one}edit/"),
        client.post(f"{one}edit/", {"url": "http://127.0.0.1/c", "event_types": ["*"]}),
        client.post(f"{one}delete/"),
        client.post(f"{one}test/"),
    ]

    assert [answer.status_code for answer in answers] == [404] * len(answers)
    webhook.refresh_from_db()
    assert webhook.url == "http://127.0.0.1/a"
    assert Webhook.objects.count() == 1
    assert not Event.objects.exists()


def test_another_teams_webhook_is_404_for_a_lead(lead_client, other_team, outsider):
    webhook, _ = services.webhook_create(
        actor=outsider, team=other_team, url="http://127.0.0.1/x", event_types=["*"]
    )

    assert lead_client.get(f"{PAGES}{webhook.pk}/").status_code == 404
    assert lead_client.post(f"{PAGES}{webhook.pk}/delete/").status_code == 404
    assert lead_client.get(f"/t/globex/notifications/webhooks/{webhook.pk}/").status_code == 404
    assert Webhook.objects.filter(pk=webhook.pk).exists()


def test_signed_out_goes_to_login(client):
    response = client.get(PAGES)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
