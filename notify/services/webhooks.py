"""Writes to a team's webhooks: create (the signing secret returned once), update, delete (one
audit row each), a test delivery, and a new try of a delivery. Team leads do these, and staff
with the notify app's permission of the action; anyone else is refused (PermissionDenied).

`webhook_validate` is the pure check every interface shares: the portal's form, the API's
serializer (through the services) and the admin's form see the same messages, and a refused
change writes nothing.
"""

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core import credentials
from keys.models import AuditEvent, Team
from keys.selectors import is_team_lead
from keys.services import audit_record

from ..addresses import webhook_addresses
from ..models import Delivery, EventType, Webhook
from ..webhooks import new_secret
from .events import event_emit

MAX_WEBHOOKS_PER_TEAM = 20
MAX_URL_LENGTH = Webhook._meta.get_field("url").max_length
ALL_TYPES = "*"
# What a webhook may subscribe to: every event type but the test, which goes to the webhook it
# is sent from whatever its types.
SUBSCRIBABLE_TYPES = [value for value in EventType.values if value != EventType.WEBHOOK_TEST]
UPDATABLE_FIELDS = ("url", "event_types", "is_active")

# The staff permission of each action, the admin's own.
STAFF_ADD = "notify.add_webhook"
STAFF_CHANGE = "notify.change_webhook"
STAFF_DELETE = "notify.delete_webhook"

URL_REQUIRED = gettext_lazy("Enter the URL the events are posted to.")
URL_TOO_LONG = format_lazy(
    gettext_lazy("Keep the URL to {length} characters at most."), length=MAX_URL_LENGTH
)
URL_INVALID = gettext_lazy("Enter an http:// or https:// URL.")
TYPES_REQUIRED = format_lazy(
    gettext_lazy('Choose at least one event type, or "{all}" for all of them.'), all=ALL_TYPES
)
TYPES_ALL_ALONE = format_lazy(
    gettext_lazy('"{all}" already means every type: send it alone.'), all=ALL_TYPES
)
TOO_MANY = format_lazy(
    gettext_lazy("A team can have at most {most} webhooks. Delete one to add another."),
    most=MAX_WEBHOOKS_PER_TEAM,
)


@dataclass(frozen=True)
class CreatedWebhook:
    """A new webhook and its signing secret: returned once by webhook_create, stored only
    encrypted."""

    webhook: Webhook
    secret: str = dataclasses.field(repr=False)

    def __iter__(self):
        # (webhook, secret) = webhook_create(...)
        return iter((self.webhook, self.secret))


def unknown_type(value: Any) -> str:
    known = ", ".join(SUBSCRIBABLE_TYPES)
    return _("“%(value)s” is not an event type. Choose from %(known)s, or “%(all)s” for all.") % {
        "value": value,
        "known": known,
        "all": ALL_TYPES,
    }


def audited_url(url: str) -> str:
    """The URL as the audit trail keeps it: a password in it (https://user:pw@host/) is a
    credential, written as "***" like every credential there."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _require_lead(*, actor: User, team: Team, staff_permission: str) -> None:
    if not is_team_lead(actor=actor, team=team, staff_permission=staff_permission):
        raise PermissionDenied(
            _("Only a lead of %(team)s can manage its webhooks.") % {"team": team.name}
        )


def clean_event_types(event_types: Any) -> list[str]:
    """The event types as stored: a list of known types without repeats, or ["*"]."""
    if not isinstance(event_types, list | tuple) or not event_types:
        raise ValidationError(TYPES_REQUIRED, code="required")
    errors = [
        ValidationError(unknown_type(value), code="invalid_choice")
        for value in event_types
        if value != ALL_TYPES and (not isinstance(value, str) or value not in SUBSCRIBABLE_TYPES)
    ]
    if errors:
        raise ValidationError(errors)
    types = list(dict.fromkeys(event_types))
    if ALL_TYPES in types and len(types) > 1:
        raise ValidationError(TYPES_ALL_ALONE, code="invalid")
    return types


def clean_url(url: Any, *, check_address: bool = True) -> str:
    """The URL as stored, checked: http(s), at most 500 characters, and (when `check_address`)
    a host that resolves to allowed addresses only (notify.addresses)."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(URL_REQUIRED, code="required")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(URL_TOO_LONG, code="max_length")
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ValidationError(URL_INVALID, code="invalid_url") from None
    if check_address:
        webhook_addresses(url)
    return url


def webhook_validate(
    *, team: Team, url: Any = None, event_types: Any = None, webhook: Webhook | None = None
) -> dict[str, Any]:
    """The cleaned values of a new webhook (webhook None) or of the changes sent for `webhook`
    (None: not sent); raises the ValidationError the service would raise, writes nothing.

    The address is checked at creation and when the URL changes, not when a change leaves the
    URL as it was (delivery checks it anyway)."""
    errors: dict[str, list] = {}
    cleaned: dict[str, Any] = {}
    if webhook is None or url is not None:
        try:
            unchanged = webhook is not None and isinstance(url, str) and url.strip() == webhook.url
            cleaned["url"] = clean_url(url, check_address=not unchanged)
        except ValidationError as error:
            errors["url"] = error.error_list
    if webhook is None or event_types is not None:
        try:
            cleaned["event_types"] = clean_event_types(event_types)
        except ValidationError as error:
            errors["event_types"] = error.error_list
    if webhook is None and Webhook.objects.filter(team=team).count() >= MAX_WEBHOOKS_PER_TEAM:
        errors.setdefault("__all__", []).append(ValidationError(TOO_MANY, code="too_many"))
    if errors:
        raise ValidationError(errors)
    return cleaned


@transaction.atomic(durable=True)
def webhook_create(
    *, actor: User, team: Team, url: str, event_types: Sequence[str]
) -> CreatedWebhook:
    """A new active webhook of `team` and its signing secret, which is never shown again."""
    _require_lead(actor=actor, team=team, staff_permission=STAFF_ADD)
    # Two leads adding the team's 20th webhook at once queue up here, so the second is refused.
    Team.objects.select_for_update().filter(pk=team.pk).first()
    cleaned = webhook_validate(team=team, url=url, event_types=list(event_types))
    secret = new_secret()
    webhook = Webhook.objects.create(
        team=team,
        url=cleaned["url"],
        event_types=cleaned["event_types"],
        secret_encrypted=credentials.encrypt(secret),
        created_by=actor,
    )
    audit_record(
        action=AuditEvent.Action.WEBHOOK_CREATED,
        actor=actor,
        subject=webhook,
        changes={
            "url": [None, audited_url(webhook.url)],
            "event_types": [None, webhook.event_types],
            "is_active": [None, True],
        },
    )
    return CreatedWebhook(webhook=webhook, secret=secret)


@transaction.atomic(durable=True)
def webhook_update(*, actor: User, webhook: Webhook, **fields: Any) -> Webhook:
    """Change the URL, event types or whether it is active; one audit row if anything changed."""
    _require_lead(actor=actor, team=webhook.team, staff_permission=STAFF_CHANGE)
    unknown = set(fields) - set(UPDATABLE_FIELDS)
    if unknown:
        raise TypeError(f"webhook_update() cannot change {', '.join(sorted(unknown))}")
    cleaned = webhook_validate(
        team=webhook.team,
        url=fields.get("url"),
        event_types=fields.get("event_types"),
        webhook=webhook,
    )
    if "is_active" in fields:
        if not isinstance(fields["is_active"], bool):
            raise ValidationError({"is_active": [_("Must be true or false.")]})
        cleaned["is_active"] = fields["is_active"]
    changes = {
        field: [getattr(webhook, field), value]
        for field, value in cleaned.items()
        if getattr(webhook, field) != value
    }
    if not changes:
        return webhook
    for field, (_old, value) in changes.items():
        setattr(webhook, field, value)
    webhook.save(update_fields=[*changes, "updated_at"])
    if "url" in changes:
        changes["url"] = [audited_url(url) for url in changes["url"]]
    audit_record(
        action=AuditEvent.Action.WEBHOOK_UPDATED, actor=actor, subject=webhook, changes=changes
    )
    return webhook


@transaction.atomic(durable=True)
def webhook_delete(*, actor: User, webhook: Webhook) -> None:
    """Delete the webhook with its deliveries and their log; its audit trail stays."""
    _require_lead(actor=actor, team=webhook.team, staff_permission=STAFF_DELETE)
    audit_record(
        action=AuditEvent.Action.WEBHOOK_DELETED,
        actor=actor,
        subject=webhook,
        changes={
            "url": [audited_url(webhook.url), None],
            "event_types": [webhook.event_types, None],
            "is_active": [webhook.is_active, None],
        },
    )
    webhook.delete()


@transaction.atomic(durable=True)
def webhook_test(*, actor: User, webhook: Webhook) -> Delivery:
    """A `webhook.test` event for this webhook alone; its delivery is due now."""
    _require_lead(actor=actor, team=webhook.team, staff_permission=STAFF_CHANGE)
    if not webhook.is_active:
        raise ValidationError(
            _("This webhook is turned off: turn it on to send a test."), code="inactive"
        )
    event = event_emit(
        team=webhook.team,
        type=EventType.WEBHOOK_TEST,
        # Every test is an event of its own.
        dedupe_key=f"webhook.test:{webhook.pk}:{secrets.token_hex(16)}",
        payload={
            "webhook_id": webhook.pk,
            "message": "A test delivery from HCAI Keys.",
            "sent_by": actor.get_username(),
        },
    )
    return event.deliveries.get(webhook=webhook)


@transaction.atomic(durable=True)
def delivery_redeliver(*, actor: User, delivery: Delivery) -> Delivery:
    """A new try of `delivery`, now, under its same UUID: a failed or delivered delivery is
    pending again; a pending one is moved up. Each try is logged as an Attempt."""
    delivery = (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("event__team", "webhook")
        .get(pk=delivery.pk)
    )
    _require_lead(actor=actor, team=delivery.event.team, staff_permission=STAFF_CHANGE)
    delivery.status = Delivery.Status.PENDING
    delivery.next_attempt_at = timezone.now()
    delivery.save(update_fields=["status", "next_attempt_at"])
    return delivery
