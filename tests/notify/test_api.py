"""/api/v1/teams/<slug>/webhooks/: who may reach it, what it answers, what it writes."""

import pytest
from django.test import override_settings

from keys.models import AuditEvent
from notify import delivery, services
from notify.models import Delivery, Event, Webhook

from ..factories import UserFactory, grant

pytestmark = pytest.mark.django_db

BASE = "/api/v1/teams/acme/webhooks/"


def test_lead_creates_and_the_secret_is_in_that_response_only(api, lead, receiver):
    client = api(lead)

    response = client.post(
        BASE, {"url": receiver.url, "event_types": ["key.expiring", "key.expired"]}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    webhook = Webhook.objects.get()
    assert body["secret"].startswith("whsec_")
    assert body == {
        "id": webhook.pk,
        "url": receiver.url,
        "event_types": ["key.expiring", "key.expired"],
        "is_active": True,
        "created_by": "lead",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
        "last_delivery_status": None,
        "last_delivery_at": None,
        "secret": body["secret"],
    }
    for later in (client.get(BASE), client.get(f"{BASE}{webhook.pk}/")):
        assert later.status_code == 200
        assert body["secret"] not in later.content.decode()


def test_list_retrieve_patch_delete(api, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")
    client = api(lead)

    listed = client.get(BASE).json()
    assert listed["count"] == 1
    assert listed["results"][0]["url"] == "http://127.0.0.1/a"

    response = client.patch(
        f"{BASE}{webhook.pk}/",
        {"url": "http://127.0.0.1/b", "is_active": False, "event_types": ["*"]},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["url"], response.json()["is_active"]) == ("http://127.0.0.1/b", False)
    update = AuditEvent.objects.get(action="webhook.updated")
    assert update.changes == {
        "url": ["http://127.0.0.1/a", "http://127.0.0.1/b"],
        "is_active": [True, False],
    }

    assert client.delete(f"{BASE}{webhook.pk}/").status_code == 204
    assert not Webhook.objects.exists()
    assert AuditEvent.objects.filter(action="webhook.deleted", subject_id=webhook.pk).exists()


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"url": ["This field is required."], "event_types": ["This field is required."]}),
        (
            {"url": "ftp://example.com/", "event_types": ["*"]},
            {"url": ["Enter an http:// or https:// URL."]},
        ),
        (
            {"url": "http://example.com/" + "a" * 500, "event_types": ["*"]},
            {"url": ["Keep the URL to 500 characters at most."]},
        ),
        (
            {"url": "http://127.0.0.1/", "event_types": "key.expiring"},
            {"event_types": ['Send a list of event types, e.g. ["key.expiring"] or ["*"].']},
        ),
        (
            {"url": "http://127.0.0.1/", "event_types": []},
            {"event_types": ['Choose at least one event type, or "*" for all of them.']},
        ),
        (
            {"url": "http://127.0.0.1/", "event_types": ["key.expiring", "webhook.test", 7]},
            {
                "event_types": [
                    "“webhook.test” is not an event type. Choose from key.limit.threshold, "
                    "team.budget.threshold, member.limit.threshold, key.expiring, key.expired, "
                    "key.disabled, key.created, key.rotated, or “*” for all.",
                    "“7” is not an event type. Choose from key.limit.threshold, "
                    "team.budget.threshold, member.limit.threshold, key.expiring, key.expired, "
                    "key.disabled, key.created, key.rotated, or “*” for all.",
                ]
            },
        ),
        (
            {"url": "http://127.0.0.1/", "event_types": ["*", "key.expired"]},
            {"event_types": ['"*" already means every type: send it alone.']},
        ),
    ],
)
def test_bad_input_is_a_400_with_field_errors_and_writes_nothing(api, lead, body, errors):
    response = api(lead).post(BASE, body, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert not Webhook.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="webhook.").exists()


def test_private_address_is_a_400(api, lead):
    with override_settings(WEBHOOKS_ALLOW_PRIVATE=False):
        response = api(lead).post(
            BASE, {"url": "http://10.0.0.1/hook", "event_types": ["*"]}, format="json"
        )

    assert response.status_code == 400
    assert response.json() == {
        "url": [
            "10.0.0.1 is a loopback, private, link-local or reserved address; "
            "webhooks may only reach public addresses."
        ]
    }
    assert not Webhook.objects.exists()


def test_bad_patch_is_a_400_and_changes_nothing(api, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")

    response = api(lead).patch(
        f"{BASE}{webhook.pk}/", {"is_active": "no", "event_types": []}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"is_active": ["Must be true or false."]}
    webhook.refresh_from_db()
    assert webhook.is_active
    assert not AuditEvent.objects.filter(action="webhook.updated").exists()


def test_twenty_webhooks_at_most(api, lead, make_webhook):
    for number in range(20):
        make_webhook(f"http://127.0.0.1/{number}")

    response = api(lead).post(
        BASE, {"url": "http://127.0.0.1/21", "event_types": ["*"]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ["A team can have at most 20 webhooks. Delete one to add another."]
    }
    assert Webhook.objects.count() == 20


@pytest.mark.parametrize("who", ["member", "outsider", "staff_without_permission"])
def test_only_leads_and_staff_reach_a_teams_webhooks(api, who, member, outsider, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")
    actor = {
        "member": member,
        "outsider": outsider,
        "staff_without_permission": grant(
            UserFactory(username="ops", is_staff=True), "keys.view_team"
        ),
    }[who]
    client = api(actor)
    one = f"{BASE}{webhook.pk}/"

    answers = [
        client.get(BASE),
        client.post(BASE, {"url": "http://127.0.0.1/b", "event_types": ["*"]}, format="json"),
        client.get(one),
        client.patch(one, {"is_active": False}, format="json"),
        client.delete(one),
        client.post(f"{one}test/"),
        client.get(f"{one}deliveries/"),
    ]

    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert answers[0].json() == {"detail": "Not found."}
    webhook.refresh_from_db()
    assert webhook.is_active
    assert Webhook.objects.count() == 1
    assert not Event.objects.exists()


def test_staff_with_the_notify_permissions_manage_any_teams_webhooks(api, staff, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")
    client = api(staff)

    assert client.get(BASE).json()["count"] == 1
    created = client.post(BASE, {"url": "http://127.0.0.1/b", "event_types": ["*"]}, format="json")
    assert created.status_code == 201
    assert (
        client.patch(f"{BASE}{webhook.pk}/", {"is_active": False}, format="json").status_code == 200
    )
    assert client.delete(f"{BASE}{webhook.pk}/").status_code == 204


def test_another_teams_webhook_is_not_found_and_stays(api, outsider, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")

    response = api(outsider).delete(f"/api/v1/teams/globex/webhooks/{webhook.pk}/")

    assert response.status_code == 404
    assert Webhook.objects.filter(pk=webhook.pk).exists()


def test_test_delivery_log_and_redeliver(api, lead, make_webhook, receiver):
    receiver.answers = [(503, b"down"), (200, b"thanks")]
    webhook, _ = make_webhook(receiver.url)
    client = api(lead)
    one = f"{BASE}{webhook.pk}/"

    queued = client.post(f"{one}test/")
    assert queued.status_code == 202
    test_delivery = Delivery.objects.get()
    assert queued.json()["uuid"] == str(test_delivery.uuid)
    assert queued.json()["status"] == "pending"

    delivery.deliver_due()
    log = client.get(f"{one}deliveries/").json()
    assert log["count"] == 1
    (entry,) = log["results"]
    assert (entry["uuid"], entry["event_type"], entry["status"], entry["attempt_count"]) == (
        str(test_delivery.uuid),
        "webhook.test",
        "pending",
        1,
    )
    (attempt,) = entry["attempts"]
    assert (attempt["status_code"], attempt["error"], attempt["response_excerpt"]) == (
        503,
        "",
        "down",
    )
    assert client.get(BASE).json()["results"][0]["last_delivery_status"] == "pending"

    redelivered = client.post(f"{one}deliveries/{test_delivery.uuid}/redeliver/")
    assert redelivered.status_code == 202
    assert redelivered.json()["uuid"] == str(test_delivery.uuid)
    delivery.deliver_due()

    test_delivery.refresh_from_db()
    assert test_delivery.status == Delivery.Status.DELIVERED
    assert [r.headers["X-HCAI-Delivery"] for r in receiver.requests] == [
        str(test_delivery.uuid)
    ] * 2
    log = client.get(f"{one}deliveries/").json()
    assert [a["status_code"] for a in log["results"][0]["attempts"]] == [200, 503]


def test_redeliver_of_an_unknown_or_another_webhooks_delivery_is_404(
    api, lead, make_webhook, receiver
):
    first, _ = make_webhook(receiver.url)
    second, _ = make_webhook(receiver.url + "&2")
    test_delivery = services.webhook_test(actor=lead, webhook=first)
    Delivery.objects.filter(pk=test_delivery.pk).update(
        status=Delivery.Status.FAILED, next_attempt_at=None
    )
    client = api(lead)

    for path in (
        f"{BASE}{second.pk}/deliveries/{test_delivery.uuid}/redeliver/",
        f"{BASE}{first.pk}/deliveries/not-a-uuid/redeliver/",
        f"{BASE}{first.pk}/deliveries/00000000-0000-0000-0000-000000000000/redeliver/",
    ):
        assert client.post(path).status_code == 404, path
    test_delivery.refresh_from_db()
    assert test_delivery.status == Delivery.Status.FAILED


def test_a_turned_off_webhook_refuses_a_test(api, lead, make_webhook):
    webhook, _ = make_webhook("http://127.0.0.1/a")
    services.webhook_update(actor=lead, webhook=webhook, is_active=False)

    response = api(lead).post(f"{BASE}{webhook.pk}/test/")

    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ["This webhook is turned off: turn it on to send a test."]
    }
    assert not Event.objects.exists()
