"""Template helpers of the portal: money, key states, audit values and the team switcher."""

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import template
from django.core.exceptions import FieldDoesNotExist
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.timesince import timesince

from keys.forms import STATE_LABELS, STATUS_CHOICE_HELP, plain_decimal
from keys.models import ApiKey
from keys.selectors import team_list

register = template.Library()
register.filter("plain_decimal", plain_decimal)

CENT = Decimal("0.01")
# Sub-cent amounts (a single cheap request) would all read "$0.00"; show them to 1/100 cent.
SMALL_AMOUNT = Decimal("0.0001")


@register.filter
def usd(amount: Decimal | int | None) -> str:
    amount = Decimal(amount or 0)
    if 0 < abs(amount) < CENT:
        return f"${amount.quantize(SMALL_AMOUNT, rounding=ROUND_HALF_UP)}"
    return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"


@register.filter
def thousands(number: int | None) -> str:
    """A count with thousands separators: 1,379,400 tokens."""
    return f"{number or 0:,}"


@register.filter
def ago(moment: datetime | None) -> str:
    """ "just now" under a minute, else "3 minutes ago" (timesince's wording)."""
    if moment is None:
        return ""
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"


@register.filter
def state_label(state: str) -> str:
    return STATE_LABELS.get(state, state)


@register.filter
def status_help(status: str) -> str:
    return STATUS_CHOICE_HELP.get(status, "")


@register.filter
def spend_percent(key: ApiKey) -> int:
    """How much of its quota the key has used, 0-100, for the bar in the key list."""
    if not key.quota_limit_usd:
        return 0
    return min(100, int(key.spent_usd * 100 / key.quota_limit_usd))


@register.filter
def field_label(field_name: str) -> str:
    """The name a form shows for a key field, so the audit trail uses the same words."""
    if field_name == "prefix":
        return "Key prefix"
    try:
        label = str(ApiKey._meta.get_field(field_name).verbose_name)
    except FieldDoesNotExist:
        # A team's trail also names members' and the team's fields (role, allowed_groups).
        return field_name
    return label[:1].upper() + label[1:]


@register.filter
def audit_value(value: Any, field_name: str) -> str:
    """One side of an audit entry (old or new) as people read it."""
    if value is None or value == "" or value == []:
        return {"quota_limit_usd": "0 (unlimited)", "expires_at": "never"}.get(field_name, "—")
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if field_name == "quota_limit_usd":
        return "0 (unlimited)" if Decimal(value) == 0 else f"${value}"
    if field_name == "status":
        return STATE_LABELS.get(value, value)
    if field_name == "expires_at":
        moment: datetime | None = parse_datetime(value)
        if moment is not None:
            return f"{timezone.localtime(moment):%Y-%m-%d %H:%M %Z}"
    return str(value)


@register.inclusion_tag("keys/_team_switcher.html", takes_context=True)
def team_switcher(context: template.Context) -> dict:
    request = context["request"]
    return {
        "teams": team_list(actor=request.user).only("name", "slug"),
        "current": context.get("team"),
    }


@register.filter
def lock_reason(form: Any, field_name: str) -> str:
    """Why a field of `form` is read-only for the signed-in member (KeyForm.locked), if it is."""
    return getattr(form, "locked", {}).get(field_name, "")
