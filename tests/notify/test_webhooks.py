"""The webhook channel end to end: fan-out, the signed POST to a real receiver, retries through
notify.delivery.deliver_due, timeouts, and addresses refused at delivery."""

import hmac
import ipaddress
import json
import socket
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone

from core import credentials
from keys.models import Membership
from notify import delivery, services, webhooks
from notify.models import Attempt, Delivery, EventType, Webhook
from notify.services import event_emit

from ..factories import MembershipFactory
from .conftest import verify

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _webhooks_only(team, lead):
    """The webhook channel alone: the team's people have no email address, so an event's only
    deliveries are its webhooks' (notify.emails is tested on its own)."""
    get_user_model().objects.filter(memberships__team=team).update(email="")


PAYLOAD = {"key": {"id": 7, "name": "ci"}, "percent": 80}


def emit(team, type=EventType.KEY_LIMIT_THRESHOLD, dedupe_key="k7:80", payload=PAYLOAD):
    return event_emit(team=team, type=type, dedupe_key=dedupe_key, payload=payload)


def test_refused_first_try_is_retried_with_the_same_delivery_id_and_a_valid_signature(
    team, make_webhook, receiver
):
    receiver.answers = [(500, b"busy, try later"), (204, b"")]
    _, secret = make_webhook(receiver.url)
    event = emit(team)
    started = timezone.now()

    assert delivery.deliver_due(now=started) == 1
    the_delivery = Delivery.objects.get(event=event)
    assert the_delivery.status == Delivery.Status.PENDING
    assert the_delivery.next_attempt_at > started
    # Nothing is due again before the backoff has passed.
    assert delivery.deliver_due(now=started + timedelta(seconds=1)) == 0

    assert delivery.deliver_due(now=the_delivery.next_attempt_at + timedelta(seconds=1)) == 1
    the_delivery.refresh_from_db()
    assert the_delivery.status == Delivery.Status.DELIVERED
    assert the_delivery.attempts == 2
    assert the_delivery.delivered_at is not None

    failed, delivered = the_delivery.attempt_log.order_by("at", "id")
    assert (failed.status_code, failed.response_excerpt, failed.error) == (
        500,
        "busy, try later",
        "",
    )
    assert (delivered.status_code, delivered.error) == (204, "")

    first, second = receiver.requests
    assert first.path == second.path == "/hooks/hcai?token=t0p"
    for received in (first, second):
        assert received.headers["X-HCAI-Delivery"] == str(the_delivery.uuid)
        assert received.headers["X-HCAI-Event"] == "key.limit.threshold"
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["User-Agent"] == "HCAI-Keys-Webhooks/1"
        assert received.headers["Host"] == receiver.url.split("/")[2]
        assert verify(secret, received)
    assert first.body == second.body
    assert json.loads(second.body) == {
        "id": str(the_delivery.uuid),
        "type": "key.limit.threshold",
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "team": "acme",
        "data": PAYLOAD,
    }
    # A tampered body does not verify.
    first.body = first.body.replace(b"80", b"81")
    assert not verify(secret, first)


def test_signature_covers_timestamp_and_body():
    expected = hmac.new(b"whsec_x", b'1700000000.{"a":1}', "sha256").hexdigest()
    assert webhooks.signature("whsec_x", timestamp=1700000000, body=b'{"a":1}') == (
        f"t=1700000000,v1={expected}"
    )


def test_fan_out_to_active_webhooks_taking_the_type(team, other_team, make_webhook, receiver):
    everything, _ = make_webhook(receiver.url + "&all")
    limits, _ = make_webhook(receiver.url + "&limits", ["key.limit.threshold"])
    make_webhook(receiver.url + "&expiry", ["key.expiring", "key.expired"])
    paused, _ = make_webhook(receiver.url + "&paused")
    Webhook.objects.filter(pk=paused.pk).update(is_active=False)
    lead_elsewhere = MembershipFactory(team=other_team, role=Membership.Role.LEAD).user
    make_webhook(receiver.url + "&other", actor=lead_elsewhere, team=other_team)

    event = emit(team)

    deliveries = Delivery.objects.filter(event=event).order_by("webhook_id")
    assert [(d.channel, d.webhook_id) for d in deliveries] == [
        ("webhook", everything.pk),
        ("webhook", limits.pk),
    ]
    assert all(d.next_attempt_at is not None for d in deliveries)


def test_a_test_event_goes_only_to_its_webhook(team, lead, make_webhook, receiver):
    first, _ = make_webhook(receiver.url)
    make_webhook(receiver.url + "&second")

    test_delivery = services.webhook_test(actor=lead, webhook=first)

    assert Delivery.objects.filter(event=test_delivery.event).count() == 1
    assert test_delivery.webhook == first
    assert test_delivery.event.type == "webhook.test"
    assert delivery.deliver_due() == 1
    (received,) = receiver.requests
    assert received.headers["X-HCAI-Event"] == "webhook.test"
    assert json.loads(received.body)["data"]["webhook_id"] == first.pk


@pytest.mark.parametrize(
    ("status", "body", "excerpt"),
    [
        (302, b"moved", "moved"),
        (404, b"\xff\xfenot here", "\ufffd\ufffdnot here"),
        (500, b"x" * 3000, "x" * 500),
    ],
)
def test_non_2xx_is_a_failed_try_with_status_and_excerpt(
    team, make_webhook, receiver, status, body, excerpt
):
    receiver.answers = [(status, body)]
    make_webhook(receiver.url)
    emit(team)

    delivery.deliver_due()

    (attempt,) = Attempt.objects.all()
    assert (attempt.status_code, attempt.response_excerpt, attempt.error) == (status, excerpt, "")
    # A redirect is not followed: only the one request reached the receiver.
    assert len(receiver.requests) == 1
    assert Delivery.objects.get().status == Delivery.Status.PENDING


def test_no_answer_within_the_timeout_is_a_failed_try(
    team, make_webhook, silent_receiver, monkeypatch
):
    url, accepted = silent_receiver
    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 0.5)
    make_webhook(url)
    emit(team)

    delivery.deliver_due()

    (attempt,) = Attempt.objects.all()
    port = url.split(":")[2].split("/")[0]
    assert attempt.error == f"No answer from 127.0.0.1:{port} within 0.5 s."
    assert attempt.status_code is None
    assert 400 <= attempt.duration_ms < 5000
    assert len(accepted) == 1


def test_connection_refused_is_a_failed_try_without_the_query_string(team, make_webhook):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    make_webhook(f"http://127.0.0.1:{port}/hook?token=s3cret")
    emit(team)

    delivery.deliver_due()

    (attempt,) = Attempt.objects.all()
    assert attempt.error == f"Could not connect to 127.0.0.1:{port}: Connection refused."


REFUSED = (
    "a loopback, private, link-local or reserved address; webhooks may only reach public addresses."
)


@pytest.mark.parametrize(
    ("host", "refusal"),
    [
        ("127.0.0.1", f"127.0.0.1 is {REFUSED}"),
        ("localhost", f"localhost resolves to 127.0.0.1, {REFUSED}"),
    ],
)
def test_address_refused_at_delivery_is_never_connected_to(
    team, make_webhook, receiver, host, refusal
):
    """Created while private addresses were allowed (as a name re-pointed after its check
    would be), delivered when they are not."""
    port = receiver.url.split(":")[2].split("/")[0]
    make_webhook(f"http://{host}:{port}/hook")
    emit(team)

    with override_settings(WEBHOOKS_ALLOW_PRIVATE=False):
        delivery.deliver_due()

    (attempt,) = Attempt.objects.all()
    assert (attempt.error, attempt.status_code) == (refusal, None)
    assert receiver.requests == []
    assert Delivery.objects.get().status == Delivery.Status.PENDING


def test_connects_only_to_the_checked_addresses(team, make_webhook, receiver, monkeypatch):
    """The name is resolved once, by the check; the connection goes to what it returned (a name
    that does not resolve at all here), with the name kept in the Host header."""
    port = receiver.url.split(":")[2].split("/")[0]
    monkeypatch.setattr(
        webhooks, "webhook_addresses", lambda url: [ipaddress.ip_address("127.0.0.1")]
    )
    Webhook.objects.create(
        team=team,
        url=f"http://hooks.example.invalid:{port}/hook",
        event_types=["*"],
        secret_encrypted=credentials.encrypt("whsec_test"),
    )
    emit(team)

    delivery.deliver_due()

    (received,) = receiver.requests
    assert received.headers["Host"] == f"hooks.example.invalid:{port}"
    assert Delivery.objects.get().status == Delivery.Status.DELIVERED


def test_a_turned_off_webhook_is_not_posted_to(team, lead, make_webhook, receiver):
    webhook, _ = make_webhook(receiver.url)
    emit(team)
    services.webhook_update(actor=lead, webhook=webhook, is_active=False)

    delivery.deliver_due()

    assert Attempt.objects.get().error == "The webhook is turned off."
    assert receiver.requests == []


def test_secret_is_stored_encrypted(make_webhook):
    webhook, secret = make_webhook("http://127.0.0.1/hook")
    assert secret.startswith("whsec_")
    assert len(secret) == len("whsec_") + 43
    assert secret not in webhook.secret_encrypted
    assert credentials.decrypt(webhook.secret_encrypted, owner="test") == secret


def test_https_keeps_the_name_for_sni_and_checks_its_certificate(team, tls_receiver, monkeypatch):
    """Connected to the checked address, the TLS handshake still names the URL's host (SNI) and
    the certificate is verified for it: a self-signed one is refused before anything is sent."""
    port, server_names, answered = tls_receiver
    monkeypatch.setattr(
        webhooks, "webhook_addresses", lambda url: [ipaddress.ip_address("127.0.0.1")]
    )
    Webhook.objects.create(
        team=team,
        url=f"https://hooks.example.test:{port}/hook",
        event_types=["*"],
        secret_encrypted=credentials.encrypt("whsec_test"),
    )
    emit(team)

    delivery.deliver_due()

    (attempt,) = Attempt.objects.all()
    assert attempt.error == (
        f"hooks.example.test:{port}'s TLS certificate was not accepted: self-signed certificate."
    )
    assert server_names == ["hooks.example.test"]
    assert answered == []
