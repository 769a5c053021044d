"""notify.services.webhooks: validation, addresses refused at creation, permissions, audit rows,
test deliveries and redelivery."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings
from django.utils import timezone

from keys.models import AuditEvent
from notify import services
from notify.models import Delivery, Event, Webhook

pytestmark = pytest.mark.django_db

REFUSED = (
    "a loopback, private, link-local or reserved address; webhooks may only reach public addresses."
)


@pytest.mark.parametrize(
    ("url", "messages"),
    [
        ("http://127.0.0.1/", {f"127.0.0.1 is {REFUSED}"}),
        ("http://10.0.0.1/", {f"10.0.0.1 is {REFUSED}"}),
        ("http://169.254.169.254/latest/meta-data/", {f"169.254.169.254 is {REFUSED}"}),
        ("http://[::1]/", {f"::1 is {REFUSED}"}),
        (
            "http://localhost:8000/hook",
            # Whichever of its loopback addresses the resolver lists first.
            {
                f"localhost resolves to 127.0.0.1, {REFUSED}",
                f"localhost resolves to ::1, {REFUSED}",
            },
        ),
    ],
)
@override_settings(WEBHOOKS_ALLOW_PRIVATE=False)
def test_private_addresses_are_refused_at_creation(team, lead, url, messages):
    with pytest.raises(ValidationError) as refused:
        services.webhook_create(actor=lead, team=team, url=url, event_types=["*"])

    assert set(refused.value.message_dict) == {"url"}
    (message,) = refused.value.message_dict["url"]
    assert message in messages
    assert not Webhook.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="webhook.").exists()


@override_settings(WEBHOOKS_ALLOW_PRIVATE=False)
def test_an_unresolvable_name_is_refused(team, lead):
    with pytest.raises(ValidationError) as refused:
        services.webhook_create(
            actor=lead, team=team, url="https://hooks.example.invalid/x", event_types=["*"]
        )

    assert refused.value.message_dict == {
        "url": ["hooks.example.invalid does not resolve to an address."]
    }


def test_address_is_checked_again_when_the_url_changes(team, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")

    with override_settings(WEBHOOKS_ALLOW_PRIVATE=False):
        # The URL as it was is not checked again (delivery checks it)...
        services.webhook_update(actor=lead, webhook=webhook, url="http://127.0.0.1/a")
        # ...a new one is.
        with pytest.raises(ValidationError) as refused:
            services.webhook_update(actor=lead, webhook=webhook, url="http://10.1.2.3/b")

    assert refused.value.message_dict == {"url": [f"10.1.2.3 is {REFUSED}"]}
    webhook.refresh_from_db()
    assert webhook.url == "http://127.0.0.1/a"
    assert not AuditEvent.objects.filter(action="webhook.updated").exists()


def test_create_update_delete_write_one_audit_row_each_without_the_secret(team, lead, make_webhook):
    webhook, secret = make_webhook(
        "https://user:pw@127.0.0.1:8443/hooks/hcai?token=abc", ["key.created"]
    )
    webhook_id = webhook.pk
    services.webhook_update(actor=lead, webhook=webhook, event_types=["key.created", "key.rotated"])
    services.webhook_update(actor=lead, webhook=webhook, event_types=["key.created", "key.rotated"])
    services.webhook_delete(actor=lead, webhook=webhook)

    rows = list(AuditEvent.objects.filter(subject_type="webhook").order_by("id"))
    assert [(row.action, row.actor, row.team, row.subject_id) for row in rows] == [
        ("webhook.created", lead, team, webhook_id),
        ("webhook.updated", lead, team, webhook_id),
        ("webhook.deleted", lead, team, webhook_id),
    ]
    assert {row.subject_label for row in rows} == {"127.0.0.1:8443/hooks/hcai"}
    assert rows[0].changes == {
        "url": [None, "https://user:***@127.0.0.1:8443/hooks/hcai?token=abc"],
        "event_types": [None, ["key.created"]],
        "is_active": [None, True],
    }
    assert rows[1].changes == {
        "event_types": [["key.created"], ["key.created", "key.rotated"]],
    }
    for row in rows:
        assert secret not in str(row.changes)
        assert "pw" not in str(row.changes)
        assert "secret" not in str(row.changes)


def test_event_types_are_stored_without_repeats(team, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/", ["key.expired", "key.expiring", "key.expired"])
    assert webhook.event_types == ["key.expired", "key.expiring"]


@pytest.mark.parametrize("who", ["member", "outsider"])
def test_only_leads_manage_webhooks(team, lead, member, outsider, make_webhook, who):
    actor = {"member": member, "outsider": outsider}[who]
    webhook, _ = make_webhook("http://127.0.0.1/a")
    message = "Only a lead of Acme can manage its webhooks."
    test_delivery = services.webhook_test(actor=lead, webhook=webhook)

    calls = [
        lambda: services.webhook_create(
            actor=actor, team=team, url="http://127.0.0.1/b", event_types=["*"]
        ),
        lambda: services.webhook_update(actor=actor, webhook=webhook, is_active=False),
        lambda: services.webhook_delete(actor=actor, webhook=webhook),
        lambda: services.webhook_test(actor=actor, webhook=webhook),
        lambda: services.delivery_redeliver(actor=actor, delivery=test_delivery),
    ]
    for call in calls:
        with pytest.raises(PermissionDenied, match=message):
            call()

    assert Webhook.objects.count() == 1
    assert Event.objects.count() == 1
    assert AuditEvent.objects.filter(subject_type="webhook").count() == 1


def test_staff_with_the_permission_manage_webhooks(team, staff):
    webhook, _ = services.webhook_create(
        actor=staff, team=team, url="http://127.0.0.1/a", event_types=["*"]
    )
    services.webhook_delete(actor=staff, webhook=webhook)
    assert not Webhook.objects.exists()


def test_each_test_is_an_event_of_its_own(team, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a", ["key.expired"])

    first = services.webhook_test(actor=lead, webhook=webhook)
    second = services.webhook_test(actor=lead, webhook=webhook)

    assert first.uuid != second.uuid
    assert first.event.payload == {
        "webhook_id": webhook.pk,
        "message": "A test delivery from HCAI Keys.",
        "sent_by": "lead",
    }
    assert first.status == Delivery.Status.PENDING
    assert first.next_attempt_at <= timezone.now()


@pytest.mark.parametrize("status", [Delivery.Status.FAILED, Delivery.Status.DELIVERED])
def test_redeliver_makes_a_delivery_due_now_under_its_uuid(team, lead, make_webhook, status):
    webhook, _ = make_webhook("http://127.0.0.1/a")
    test_delivery = services.webhook_test(actor=lead, webhook=webhook)
    Delivery.objects.filter(pk=test_delivery.pk).update(
        status=status, next_attempt_at=None, attempts=3
    )
    before = timezone.now()

    again = services.delivery_redeliver(actor=lead, delivery=test_delivery)

    again.refresh_from_db()
    assert (again.uuid, again.status, again.attempts) == (
        test_delivery.uuid,
        Delivery.Status.PENDING,
        3,
    )
    assert before <= again.next_attempt_at <= timezone.now() + timedelta(seconds=1)
