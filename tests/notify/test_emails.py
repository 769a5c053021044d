"""notify.emails: who hears of an event by email, and the message a real SMTP server receives.

The server is aiosmtpd on 127.0.0.1 (a free port), reached through Django's SMTP backend; events
are emitted through event_emit and sent by the one delivery loop, deliver_due."""

import email
import email.policy
import uuid
from datetime import timedelta
from email.header import decode_header, make_header

import pytest
from aiosmtpd.controller import Controller
from django.test import override_settings
from django.utils import timezone

from keys.models import Membership
from notify import emails
from notify.delivery import deliver_due
from notify.models import (
    Attempt,
    Delivery,
    EmailPreference,
    EventType,
    NotificationSettings,
)
from notify.services import Due, event_emit, notify_due

from ..factories import MembershipFactory, UserFactory, make_key


class Inbox:
    """What the SMTP server received; it refuses the next `refuse` recipients with a 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.subjects: list[str] = []
        self.refuse = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if self.refuse:
            self.refuse -= 1
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))
        # As a mail client shows it: Python's default policy keeps the space that folding a
        # long encoded header puts before its first word.
        raw_subject = email.message_from_bytes(envelope.content)["Subject"]
        self.subjects.append(str(make_header(decode_header(raw_subject))))
        return "250 Message accepted for delivery"


class FreePortController(Controller):
    """aiosmtpd's threaded server, bound to a port the system picks (port 0)."""

    def _create_server(self):
        async def create():
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=0
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


@pytest.fixture
def inbox():
    received = Inbox()
    controller = FreePortController(received, hostname="127.0.0.1")
    controller.start()
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=controller.port,
        EMAIL_HOST_USER="",
        EMAIL_HOST_PASSWORD="",
        EMAIL_USE_TLS=False,
        EMAIL_USE_SSL=False,
        DEFAULT_FROM_EMAIL="HCAI Keys <keys@example.com>",
        PUBLIC_BASE_URL="http://keys.example",
    ):
        yield received
    controller.stop()


@pytest.fixture
def owner(team):
    return MembershipFactory(
        team=team, user__username="alice", user__email="alice@example.com"
    ).user


@pytest.fixture
def key(team, owner, group):
    return make_key(team=team, owner=owner, group=group, actor=owner).key


def threshold_payload(key) -> dict:
    return {
        "key_id": key.pk,
        "key_name": key.name,
        "key_prefix": key.prefix,
        "limit": "daily",
        "threshold": 80,
        "spent_usd": "4.0000",
        "limit_usd": "5.00",
        "window": "2026-12-07",
    }


def emit(team, type, payload, key=None, dedupe_key=None):
    return event_emit(
        team=team,
        type=type,
        dedupe_key=dedupe_key or f"{type}:{uuid.uuid4()}",
        payload=payload,
        key=key,
    )


def parts(message) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


# --- the message, through a real SMTP server ------------------------------------------------


def test_a_threshold_email_reaches_the_lead_and_the_owner(inbox, team, lead, key):
    event = emit(team, EventType.KEY_LIMIT_THRESHOLD, threshold_payload(key), key=key)

    assert deliver_due() == 2

    assert sorted(to for to, _ in inbox.messages) == [["alice@example.com"], ["lead@example.com"]]
    _, message = inbox.messages[0]
    assert inbox.subjects[0] == "[Acme] Key “claude-code-main” reached 80% of its daily limit"
    assert message["From"] == "HCAI Keys <keys@example.com>"
    assert message["X-HCAI-Event"] == "key.limit.threshold"
    link = f"http://keys.example/t/acme/keys/{key.pk}/"
    text, html = parts(message)
    assert text == (
        f"The key “claude-code-main” ({key.prefix}…) has spent $4.00 of its daily limit of "
        "$5.00 (2026-12-07): 80%.\n\n"
        "Requests go on as before; at 100% the relay refuses them.\n\n"
        f"The key's page: {link}\n\n"
        "--\n"
        "You get this email as a lead of Acme or as the key's owner. Leads choose who gets these "
        "emails, and each member can turn off emails about their own keys, on the team's "
        "Notifications page: http://keys.example/t/acme/notifications/\n"
    )
    assert f'<a href="{link}" style="color: #0b5cad;">The key&#x27;s page</a>' in html
    assert "has spent $4.00 of its daily limit of $5.00 (2026-12-07): 80%.</p>" in html
    deliveries = Delivery.objects.filter(event=event)
    assert {(d.status, d.attempts) for d in deliveries} == {(Delivery.Status.DELIVERED, 1)}
    assert Attempt.objects.filter(delivery__event=event, error="").count() == 2
    assert deliver_due() == 0
    assert len(inbox.messages) == 2


def test_notify_due_tells_the_owner_of_a_new_key_in_the_same_run(inbox, team, owner, group):
    issued = make_key(team=team, owner=owner, group=group, actor=owner, name="laptop")

    due = notify_due()

    assert (due.events, due.tried) == (1, 1)
    assert [to for to, _ in inbox.messages] == [["alice@example.com"]]
    assert inbox.subjects == ["[Acme] Key “laptop” was created"]
    text, _ = parts(inbox.messages[0][1])
    assert text.startswith(f"The key “laptop” ({issued.key.prefix}…) was created by alice in Acme.")
    assert notify_due() == Due(events=0, tried=0)
    assert len(inbox.messages) == 1


def test_a_member_s_cap_links_to_the_team_page(team, owner, key):
    message = rendered(
        team,
        EventType.MEMBER_LIMIT_THRESHOLD,
        {"user_id": owner.pk, "limit": "member_monthly", "threshold": 80, "window": "2026-12"},
        key=key,
    )

    assert message.subject == "[Acme] Alice reached 80% of their monthly cap"
    assert "Acme's team page: http://keys.example/t/acme/team/" in message.text


def test_a_refused_recipient_is_logged_and_retried_later(inbox, team, key):
    NotificationSettings.objects.create(team=team, email_recipients="owner")
    inbox.refuse = 1
    emit(team, EventType.KEY_LIMIT_THRESHOLD, threshold_payload(key), key=key)
    now = timezone.now()

    assert deliver_due(now=now) == 1

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Delivery.Status.PENDING, 1)
    assert delivery.next_attempt_at == now + timedelta(seconds=30)
    attempt = Attempt.objects.get()
    assert attempt.error == "SMTP 550: 5.1.1 Mailbox unavailable"
    assert inbox.messages == []
    assert deliver_due(now=now + timedelta(seconds=10)) == 0

    assert deliver_due(now=now + timedelta(seconds=31)) == 1

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (Delivery.Status.DELIVERED, 2)
    assert [to for to, _ in inbox.messages] == [["alice@example.com"]]
    assert list(Attempt.objects.order_by("at").values_list("error", flat=True)) == [
        "SMTP 550: 5.1.1 Mailbox unavailable",
        "",
    ]


def test_an_unreachable_server_is_an_attempt_that_failed_not_an_exception(team, key):
    NotificationSettings.objects.create(team=team, email_recipients="owner")
    emit(team, EventType.KEY_EXPIRED, {"key_id": key.pk}, key=key)
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=_closed_port(),
        EMAIL_USE_TLS=False,
        EMAIL_USE_SSL=False,
    ):
        outcome = emails.send(Delivery.objects.get())

    assert outcome.delivered is False
    assert outcome.error.startswith("ConnectionRefusedError: ")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- wording of each type -------------------------------------------------------------------


def rendered(team, type, payload, key=None):
    event = emit(team, type, payload, key=key)
    with override_settings(PUBLIC_BASE_URL="http://keys.example"):
        return emails.render(event)


def test_expiry_warning_in_the_team_s_time_zone(team, key):
    team.time_zone = "Europe/Berlin"
    team.save(update_fields=["time_zone"])
    message = rendered(
        team,
        EventType.KEY_EXPIRING,
        {"key_id": key.pk, "days": 3, "expires_at": "2026-12-10T08:00:00+00:00"},
        key=key,
    )

    assert message.subject == "[Acme] Key “claude-code-main” expires in 3 days"
    assert message.text.startswith(
        f"The key “claude-code-main” ({key.prefix}…) expires on 2026-12-10 09:00 CET, in 3 days."
    )


def test_a_deleted_key_is_named_from_the_payload_and_links_to_the_team(team):
    message = rendered(
        team,
        EventType.KEY_DISABLED,
        {"key_name": "old-key", "key_prefix": "sk-hc-AbCd", "by": "spike", "reason": "spend spike"},
    )

    assert message.subject == "[Acme] Key “old-key” was disabled"
    assert message.text.startswith(
        "The key “old-key” (sk-hc-AbCd…) was disabled by the spend-spike guard (reason: spend "
        "spike). The relay refuses its requests until it is enabled again.\n\n"
        "Acme's team page: http://keys.example/t/acme/team/\n"
    )


def test_a_key_nothing_is_known_of_is_a_key(team):
    message = rendered(team, EventType.KEY_DISABLED, {})

    assert message.subject == "[Acme] A key was disabled"
    assert message.text.startswith("A key was disabled. The relay refuses")


@pytest.mark.parametrize(
    ("type", "payload", "subject", "first"),
    [
        (
            EventType.TEAM_BUDGET_THRESHOLD,
            {"limit": "team_monthly", "threshold": 100, "spent_usd": "1234.5", "limit_usd": "1200"},
            "[Acme] The team reached 100% of its monthly budget",
            "Acme has spent $1,234.50 of its monthly budget of $1,200.00: 100%.",
        ),
        (
            EventType.MEMBER_LIMIT_THRESHOLD,
            {"limit": "member_monthly", "threshold": 50, "username": "bob"},
            "[Acme] Bob reached 50% of their monthly cap",
            "Bob has reached 50% of their monthly cap in Acme.",
        ),
        (
            EventType.KEY_LIMIT_THRESHOLD,
            {"limit": "quota", "threshold": 100, "spent_usd": "10", "limit_usd": "10"},
            "[Acme] A key reached 100% of its lifetime quota",
            "A key has spent $10.00 of its lifetime quota of $10.00: 100%. The relay refuses its "
            "requests until a lead raises the quota.",
        ),
        (
            EventType.KEY_ROTATED,
            {"key_name": "ci", "actor": "lead"},
            "[Acme] Key “ci” was rotated",
            "The key “ci” was rotated by lead: its old secret stopped working at once",
        ),
    ],
)
def test_the_wording_of_each_type(team, type, payload, subject, first):
    message = rendered(team, type, payload)

    assert message.subject == subject
    assert " ".join(message.text.split()).startswith(first)


def test_html_escapes_what_people_typed(team):
    message = rendered(team, EventType.KEY_DISABLED, {"key_name": "<b>x</b> & co"})

    assert "“&lt;b&gt;x&lt;/b&gt; &amp; co”" in message.html
    assert "“<b>x</b> & co”" in message.text


# --- who ------------------------------------------------------------------------------------


@pytest.fixture
def people(team, lead, owner, key):
    """A second lead, a plain member, an inactive lead and a lead without an address."""
    MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="lead2")
    MembershipFactory(team=team, user__username="bystander")
    MembershipFactory(
        team=team, role=Membership.Role.LEAD, user__username="gone", user__is_active=False
    )
    MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="nomail", user__email="")
    return key


def addresses(team, type, payload, key=None) -> list[str]:
    event = emit(team, type, payload, key=key)
    return sorted(Delivery.objects.filter(event=event).values_list("email", flat=True))


LEADS = ["lead2@example.com", "lead@example.com"]
OWNER = ["alice@example.com"]


@pytest.mark.parametrize(
    ("choice", "type", "expected"),
    [
        ("leads", EventType.KEY_LIMIT_THRESHOLD, LEADS),
        ("owner", EventType.KEY_LIMIT_THRESHOLD, OWNER),
        ("both", EventType.KEY_LIMIT_THRESHOLD, sorted(LEADS + OWNER)),
        ("leads", EventType.KEY_EXPIRING, LEADS),
        ("owner", EventType.KEY_DISABLED, OWNER),
        ("both", EventType.KEY_EXPIRED, sorted(LEADS + OWNER)),
        # A security notice: the owner hears of it whatever the team chose.
        ("leads", EventType.KEY_CREATED, sorted(LEADS + OWNER)),
        ("owner", EventType.KEY_ROTATED, OWNER),
        ("both", EventType.KEY_ROTATED, sorted(LEADS + OWNER)),
        # The team's budget concerns its leads only.
        ("owner", EventType.TEAM_BUDGET_THRESHOLD, LEADS),
        ("both", EventType.WEBHOOK_TEST, []),
    ],
)
def test_recipients_follow_the_team_s_choice(team, people, choice, type, expected):
    NotificationSettings.objects.create(team=team, email_recipients=choice)

    assert addresses(team, type, {"key_id": people.pk}, key=people) == expected


def test_without_saved_settings_leads_and_owner_are_told(team, people):
    assert addresses(team, EventType.KEY_EXPIRED, {}, key=people) == sorted(LEADS + OWNER)


def test_an_owner_who_opted_out_is_not_told_of_their_keys(team, people, owner):
    EmailPreference.objects.create(
        membership=Membership.objects.get(team=team, user=owner), own_key_emails=False
    )

    assert addresses(team, EventType.KEY_LIMIT_THRESHOLD, {}, key=people) == LEADS
    assert addresses(team, EventType.KEY_CREATED, {}, key=people) == LEADS


def test_a_lead_who_opted_out_still_gets_what_leads_get(team, lead, group):
    key = make_key(team=team, owner=lead, group=group, actor=lead).key
    EmailPreference.objects.create(
        membership=Membership.objects.get(team=team, user=lead), own_key_emails=False
    )

    assert addresses(team, EventType.KEY_EXPIRED, {}, key=key) == ["lead@example.com"]
    NotificationSettings.objects.create(team=team, email_recipients="owner")
    assert addresses(team, EventType.KEY_DISABLED, {}, key=key) == []


def test_a_lead_who_owns_the_key_gets_one_email(team, lead, group):
    lead.email = "Lead@Example.com"
    lead.save(update_fields=["email"])
    key = make_key(team=team, owner=lead, group=group, actor=lead).key

    assert addresses(team, EventType.KEY_ROTATED, {}, key=key) == ["Lead@Example.com"]


@pytest.mark.parametrize("how", ["inactive", "no_email", "left_the_team"])
def test_an_owner_who_cannot_be_told_is_skipped(team, lead, owner, key, how):
    if how == "inactive":
        owner.is_active = False
        owner.save(update_fields=["is_active"])
    elif how == "no_email":
        owner.email = ""
        owner.save(update_fields=["email"])
    else:
        Membership.objects.filter(team=team, user=owner).delete()
    NotificationSettings.objects.create(team=team, email_recipients="owner")

    assert addresses(team, EventType.KEY_CREATED, {}, key=key) == []
    assert addresses(team, EventType.KEY_EXPIRED, {}, key=key) == []


def test_a_member_s_cap_goes_to_the_leads_and_that_member(team, people, owner):
    NotificationSettings.objects.create(team=team, email_recipients="leads")
    payload = {"user_id": owner.pk, "limit": "member_monthly", "threshold": 80}

    assert addresses(team, EventType.MEMBER_LIMIT_THRESHOLD, payload) == sorted(LEADS + OWNER)

    EmailPreference.objects.create(
        membership=Membership.objects.get(team=team, user=owner), own_key_emails=False
    )
    assert addresses(team, EventType.MEMBER_LIMIT_THRESHOLD, {**payload, "threshold": 100}) == LEADS


def test_a_member_of_another_team_is_never_told(team, people, other_team):
    stranger = UserFactory(username="stranger")
    MembershipFactory(team=other_team, user=stranger)
    payload = {"user_id": stranger.pk, "limit": "member_monthly", "threshold": 80}

    assert addresses(team, EventType.MEMBER_LIMIT_THRESHOLD, payload) == LEADS


def test_no_address_no_delivery(team, owner, key):
    NotificationSettings.objects.create(team=team, email_recipients="leads")

    assert addresses(team, EventType.KEY_EXPIRED, {}, key=key) == []
