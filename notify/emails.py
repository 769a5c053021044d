"""The email channel: who hears of an event by email, and sending one message.

Who hears of it follows the team's `email_recipients` (its leads, the key's owner, or both),
with three exceptions by type: a new or rotated key is a security notice, so its owner always
hears of it; a member's cap concerns the leads and that member; the team's budget concerns the
leads. An owner who turned off emails about their own keys is not sent those (as a lead of the
team they still get what the leads get). Only active people with an address are written to,
each address once.

A message is a plain-text body with a small HTML part, both wrapped around one wording per
event type (templates/notify/email/<type>.txt: the subject line, a blank line, paragraphs), with
an absolute link (PUBLIC_BASE_URL, as invitations build theirs) to the key's page, or to the
team's page where there is no key.
"""

import re
import smtplib
import zoneinfo
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from keys.models import Membership
from keys.services import user_language

from .models import Delivery, EmailPreference, Event, EventType, NotificationSettings
from .outcome import Outcome
from .selectors import notification_settings_for

# How long one SMTP conversation may take when EMAIL_TIMEOUT is not set: the delivery loop holds
# the delivery's row meanwhile, and a server that never answers must not stall it.
SMTP_TIMEOUT_SECONDS = 10

Recipients = NotificationSettings.Recipients

# What each limit of a threshold event is called in a sentence ("80% of its daily limit").
LIMIT_LABELS = {
    "quota": gettext_lazy("lifetime quota"),
    "daily": gettext_lazy("daily limit"),
    "weekly": gettext_lazy("weekly limit"),
    "monthly": gettext_lazy("monthly limit"),
    "member_monthly": gettext_lazy("monthly cap"),
    "team_monthly": gettext_lazy("monthly budget"),
}
# Who disabled a key, as key.disabled's payload names them.
DISABLED_BY = {
    "owner": gettext_lazy("its owner"),
    "lead": gettext_lazy("a team lead"),
    "staff": gettext_lazy("staff"),
    "system": gettext_lazy("the system"),
    "expiry": gettext_lazy("the expiry task, when it expired"),
    "spike": gettext_lazy("the spend-spike guard"),
}
# Types told to the key's owner whatever the team chose (leads too, if the team chose them).
SECURITY_NOTICES = {EventType.KEY_CREATED, EventType.KEY_ROTATED}
# Types about more than one key, linked to the team's page (the budget and each member's cap).
TEAM_PAGE_EVENTS = {EventType.TEAM_BUDGET_THRESHOLD, EventType.MEMBER_LIMIT_THRESHOLD}


# --- who ------------------------------------------------------------------------------------


def deliveries_for(event: Event) -> list[Delivery]:
    return [
        Delivery(channel=Delivery.Channel.EMAIL, email=address) for address in recipients(event)
    ]


def recipients(event: Event) -> list[str]:
    """The addresses `event` is emailed to, each once (leads first, by username)."""
    if event.type == EventType.WEBHOOK_TEST:
        return []
    if event.type == EventType.TEAM_BUDGET_THRESHOLD:
        return _distinct(_lead_addresses(event))
    if event.type == EventType.MEMBER_LIMIT_THRESHOLD:
        member_id = event.payload.get("user_id")
        return _distinct([*_lead_addresses(event), *_owner_addresses(event, member_id)])
    chosen = notification_settings_for(event.team).email_recipients
    owner_id = event.key.owner_id if event.key is not None else None
    addresses = []
    if chosen in (Recipients.LEADS, Recipients.BOTH):
        addresses += _lead_addresses(event)
    if chosen in (Recipients.OWNER, Recipients.BOTH) or event.type in SECURITY_NOTICES:
        addresses += _owner_addresses(event, owner_id)
    return _distinct(addresses)


def _lead_addresses(event: Event) -> list[str]:
    return list(
        Membership.objects.filter(
            team_id=event.team_id, role=Membership.Role.LEAD, user__is_active=True
        )
        .exclude(user__email="")
        .order_by("user__username")
        .values_list("user__email", flat=True)
    )


def _owner_addresses(event: Event, user_id: Any) -> list[str]:
    """The owner's (or member's) address, while they are an active member of the team who has
    not turned off emails about their own keys."""
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        return []
    membership = (
        Membership.objects.filter(team_id=event.team_id, user_id=user_id, user__is_active=True)
        .exclude(user__email="")
        .select_related("user")
        .first()
    )
    if membership is None:
        return []
    opted_out = EmailPreference.objects.filter(membership=membership, own_key_emails=False).exists()
    return [] if opted_out else [membership.user.email]


def _distinct(addresses: list[str]) -> list[str]:
    """Each address once, whatever its case, in the order first met."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.strip().lower(), address.strip())
    return list(seen.values())


# --- what -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    text: str
    html: str


def recipient_language(user: AbstractBaseUser | None) -> str:
    """The language `user`'s emails are written in: the portal language they chose, else
    settings.LANGUAGE_CODE (also for an address that is nobody's)."""
    if user is None:
        return settings.LANGUAGE_CODE
    return user_language(user=user) or settings.LANGUAGE_CODE


def _recipient(address: str) -> AbstractBaseUser | None:
    """The active user an address belongs to (None if it is nobody's, or several people's)."""
    users = list(get_user_model().objects.filter(email__iexact=address.strip(), is_active=True)[:2])
    return users[0] if len(users) == 1 else None


def send(delivery: Delivery) -> Outcome:
    """Send the delivery's message once through Django's email framework (EMAIL_URL), in its
    recipient's language. A refusal or an unreachable server is reported in the Outcome, never
    raised."""
    message = render(delivery.event, language=recipient_language(_recipient(delivery.email)))
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        to=[delivery.email],
        headers={"X-HCAI-Event": delivery.event.type, "X-HCAI-Delivery": str(delivery.uuid)},
        connection=get_connection(
            timeout=getattr(settings, "EMAIL_TIMEOUT", None) or SMTP_TIMEOUT_SECONDS
        ),
    )
    email.attach_alternative(message.html, "text/html")
    try:
        email.send()
    except smtplib.SMTPRecipientsRefused as error:
        code, reason = next(iter(error.recipients.values()))
        return Outcome(delivered=False, error=_smtp_error(code, reason))
    except smtplib.SMTPResponseException as error:
        return Outcome(delivered=False, error=_smtp_error(error.smtp_code, error.smtp_error))
    except (smtplib.SMTPException, OSError) as error:
        return Outcome(delivered=False, error=f"{type(error).__name__}: {error}"[:200])
    return Outcome(delivered=True)


def _smtp_error(code: int, reason: bytes | str) -> str:
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return f"SMTP {code}: {' '.join(reason.split())}"[:200]


def render(event: Event, *, language: str | None = None) -> Message:
    """The subject, text and HTML of the message about `event`, for any recipient, in
    `language` (None: the active one). Money stays in US dollars ("$12.50") in every language."""
    if language is None:
        return _render(event)
    with translation.override(language):
        return _render(event)


def _render(event: Event) -> Message:
    context = _context(event)
    wording = _render_wording(event, context)
    blocks = [" ".join(block.split()) for block in re.split(r"\n\s*\n", wording.strip())]
    subject, paragraphs = blocks[0], [block for block in blocks[1:] if block]
    context |= {"subject": subject, "paragraphs": paragraphs}
    return Message(
        subject=subject,
        text=render_to_string("notify/email/base.txt", context).strip() + "\n",
        html=render_to_string("notify/email/base.html", context),
    )


def _render_wording(event: Event, context: dict[str, Any]) -> str:
    try:
        template = get_template(f"notify/email/{event.type.replace('.', '_')}.txt")
    except TemplateDoesNotExist:
        template = get_template("notify/email/event.txt")
    return template.render(context)


def _context(event: Event) -> dict[str, Any]:
    payload = event.payload or {}
    team = event.team
    key = event.key
    name = key.name if key is not None else payload.get("key_name")
    prefix = key.prefix if key is not None else payload.get("key_prefix")
    if name:
        shown = f"“{name}”" + (f" ({prefix}…)" if prefix else "")
        key_phrase = _("the key %(key)s") % {"key": shown}
        key_title = _("Key %(name)s") % {"name": f"“{name}”"}
    else:
        key_phrase, key_title = _("a key"), _("A key")
    base = settings.PUBLIC_BASE_URL
    if key is not None and event.type not in TEAM_PAGE_EVENTS:
        link = base + reverse("keys:detail", kwargs={"team_slug": team.slug, "key_id": key.pk})
        link_label = _("The key's page")
    else:
        link = base + reverse("keys:team", kwargs={"team_slug": team.slug})
        link_label = _("%(team)s's team page") % {"team": team.name}
    limit = payload.get("limit")
    return {
        "event": event,
        "team": team,
        "key_phrase": key_phrase,
        "key_title": key_title,
        "owner": key.owner.get_username() if key is not None else "",
        "limit": limit,
        "limit_label": LIMIT_LABELS.get(limit, _("limit")),
        "threshold": _number(payload.get("threshold")),
        "spent": _usd(payload.get("spent_usd")),
        "limit_amount": _usd(payload.get("limit_usd")),
        "window": payload.get("window") or "",
        "days": _number(payload.get("days")),
        "expires_at": _when(payload.get("expires_at"), team.time_zone),
        "disabled_by": _disabled_by(payload),
        "actor": _text(payload.get("actor")),
        "reason": _text(payload.get("reason")),
        "member": _member_name(payload.get("user_id"), payload),
        "link": link,
        "link_label": link_label,
        "settings_link": base + reverse("notify:notifications", kwargs={"team_slug": team.slug}),
    }


def _usd(value: Any) -> str:
    """ "$1,234.50" from the payload's decimal text; "" when it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return ""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return ""
    if not amount.is_finite():
        return ""
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _text(value: Any) -> str:
    return str(value).strip()[:200] if isinstance(value, str | int) else ""


def _when(value: Any, time_zone: str) -> str:
    """A payload's ISO datetime in the team's time zone, "2026-12-14 09:00 CET"."""
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None or moment.tzinfo is None:
        return ""
    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M %Z}"


def _disabled_by(payload: dict[str, Any]) -> str:
    by = _text(payload.get("by"))
    actor = _text(payload.get("actor"))
    if by in DISABLED_BY:
        phrase = DISABLED_BY[by]
        return f"{phrase} ({actor})" if actor and by in ("lead", "staff", "owner") else phrase
    return actor or by


def _member_name(user_id: Any, payload: dict[str, Any]) -> str:
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user = get_user_model().objects.filter(pk=user_id).first()
        if user is not None:
            return user.get_username()
    return _text(payload.get("username")) or _("a member")
