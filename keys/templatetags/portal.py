"""Template helpers of the portal: money, key states, audit values and the team switcher."""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django import template
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.utils import timezone, translation
from django.utils.dateformat import format as date_format
from django.utils.dateparse import parse_datetime
from django.utils.timesince import timesince
from django.utils.translation import gettext, gettext_lazy

from core.money import usd
from keys.forms import STATE_LABELS, STATUS_CHOICE_HELP, plain_decimal
from keys.models import ApiKey, Team
from keys.selectors import team_list

register = template.Library()
register.filter("plain_decimal", plain_decimal)

register.filter("usd", usd)


@register.filter
def thousands(number: int | None) -> str:
    """A count with thousands separators: 1,379,400 tokens (Chinese writes them alike)."""
    return f"{number or 0:,}"


@register.filter
def local_time(moment: datetime | None, precision: str = "minutes") -> str:
    """A moment as the portal shows every time: in settings.TIME_ZONE, with the zone's name,
    "2026-12-07 10:42 UTC" (precision "seconds": "2026-12-07 10:42:05 UTC"), so nobody has
    to guess whether it is their local time."""
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    shown = f"{local:%Y-%m-%d %H:%M:%S}" if precision == "seconds" else f"{local:%Y-%m-%d %H:%M}"
    return f"{shown} {local.tzname()}"


@register.filter
def zone_time(moment: datetime | None, time_zone: str) -> str:
    """A moment in a team's time zone, the way its limits reset: "Mon 8 Dec 00:00 CST" (a
    reset is at most a month away: no year). With the zone's name, as local_time's."""
    if moment is None:
        return ""
    local = moment.astimezone(ZoneInfo(time_zone))
    # Translators: a date format (Django's "date" filter): a weekday, the day, the month and the
    # time, no year, e.g. "Mon 8 Dec 00:00".
    shown = date_format(local, gettext("D j M H:i"))
    return f"{shown} {local.tzname()}"


@register.filter
def ago(moment: datetime | None) -> str:
    """ "just now" under a minute, else "3 minutes ago" (timesince's wording)."""
    if moment is None:
        return ""
    if timezone.now() - moment < timedelta(minutes=1):
        return gettext("just now")
    return gettext("%(time)s ago") % {"time": timesince(moment)}


@register.filter
def state_label(state: str) -> str:
    return STATE_LABELS.get(state, state)


@register.filter
def status_help(status: str) -> str:
    return STATUS_CHOICE_HELP.get(status, "")


# The names the forms show for the fields an audit entry names (the models' verbose names
# are English only).
FIELD_LABELS = {
    "prefix": gettext_lazy("Key prefix"),
    "name": gettext_lazy("Name"),
    "group": gettext_lazy("Group"),
    "status": gettext_lazy("Status"),
    "owner": gettext_lazy("Owner"),
    "allowed_ips": gettext_lazy("IP restriction"),
    "quota_limit_usd": gettext_lazy("Quota limit (USD)"),
    "rate_limit": gettext_lazy("Rate limit"),
    "expires_at": gettext_lazy("Key expiration"),
    "daily_limit_usd": gettext_lazy("Daily limit (USD)"),
    "weekly_limit_usd": gettext_lazy("Weekly limit (USD)"),
    "monthly_limit_usd": gettext_lazy("Monthly limit (USD)"),
    "max_concurrency": gettext_lazy("Max concurrent requests"),
    "role": gettext_lazy("role"),
    "members_can_create_keys": gettext_lazy("Members can create keys"),
    "default_group": gettext_lazy("Default group"),
    "default_quota_limit_usd": gettext_lazy("Default quota limit (USD)"),
    "default_rate_limit": gettext_lazy("Default rate limit"),
    "default_expiry_days": gettext_lazy("Default expiration period (days)"),
}


@register.filter
def field_label(field_name: str) -> str:
    """The name a form shows for a key field, so the audit trail uses the same words."""
    if field_name in FIELD_LABELS:
        return FIELD_LABELS[field_name]
    for model in (ApiKey, Team):
        try:
            label = str(model._meta.get_field(field_name).verbose_name)
        except FieldDoesNotExist:
            continue
        return label[:1].upper() + label[1:]
    # A team's trail also names members' fields (role).
    return field_name


# How the audit trail shows a limit of 0, and which limits are amounts of money.
ZERO_MEANS = {
    "quota_limit_usd": gettext_lazy("0 (unlimited)"),
    "daily_limit_usd": gettext_lazy("0 (no daily limit)"),
    "weekly_limit_usd": gettext_lazy("0 (no weekly limit)"),
    "monthly_limit_usd": gettext_lazy("0 (no monthly limit)"),
    "max_concurrency": gettext_lazy("0 (unlimited)"),
    "monthly_budget_usd": gettext_lazy("0 (no budget)"),
}
USD_LIMITS = (
    "quota_limit_usd",
    "daily_limit_usd",
    "weekly_limit_usd",
    "monthly_limit_usd",
    "monthly_budget_usd",
)


@register.filter
def audit_value(value: Any, field_name: str) -> str:
    """One side of an audit entry (old or new) as people read it."""
    if value is None or value == "" or value == []:
        return {**ZERO_MEANS, "expires_at": gettext("never")}.get(field_name, "—")
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if field_name in ZERO_MEANS and Decimal(value) == 0:
        return ZERO_MEANS[field_name]
    if field_name in USD_LIMITS:
        return f"${value}"
    if field_name == "status":
        return STATE_LABELS.get(value, value)
    if field_name == "expires_at":
        moment: datetime | None = parse_datetime(value)
        if moment is not None:
            return local_time(moment)
    return str(value)


@register.inclusion_tag("keys/_team_switcher.html", takes_context=True)
def team_switcher(context: template.Context) -> dict:
    request = context["request"]
    return {
        "teams": team_list(actor=request.user).only("name", "slug"),
        "current": context.get("team"),
    }


@register.inclusion_tag("keys/_language_switch.html", takes_context=True)
def language_switch(context: template.Context) -> dict:
    """The header's switch: a button for each language; the view goes back to the page."""
    return {
        "languages": settings.LANGUAGES,
        "current": translation.get_language(),
        "csrf_token": context.get("csrf_token"),
    }


@register.filter
def lock_reason(form: Any, field_name: str) -> str:
    """Why a field of `form` is read-only for the signed-in member (KeyForm.locked), if it is."""
    return getattr(form, "locked", {}).get(field_name, "")
