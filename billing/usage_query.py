"""What the usage explorer and the CSV exports are asked for, read from query parameters.

One reading for the portal and the API: `read_usage_query` checks each parameter as sent and
returns the query with a message per parameter it could not read (that parameter falls back
to its default), so the portal shows the messages above the default view and the API answers
400 naming them. Dates are days in the team's time zone; `until` is inclusive.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from keys import selectors as key_selectors
from keys.models import Team

from .refusals import ENDPOINT_LABELS
from .status_filter import StatusFilter, status_filter

GROUPINGS = ("member", "key", "model", "day", "session")
# Each grouping's name: a column's title and, lowercased, in a sentence ("By member").
GROUPING_TITLES = {
    "member": gettext_lazy("Member"),
    "key": gettext_lazy("Key"),
    "model": gettext_lazy("Model"),
    "day": gettext_lazy("Day"),
    "session": gettext_lazy("Session"),
}
METRICS = {
    "cost": gettext_lazy("Cost"),
    "charge": gettext_lazy("Charge"),
    "requests": gettext_lazy("Requests"),
    "tokens": gettext_lazy("Tokens"),
}
RANGES = {
    "today": gettext_lazy("Today"),
    "7d": gettext_lazy("7 days"),
    "30d": gettext_lazy("30 days"),
    "month": gettext_lazy("This month"),
    "custom": gettext_lazy("Custom"),
}
DEFAULT_RANGE = "30d"
# A custom range spans at most this many days: enough for a year's books, and the chart
# stays readable.
MAX_RANGE_DAYS = 366
STATUS_HELP = gettext_lazy(
    "success, error, a class such as 4xx, a status code such as 529, or refused: the requests "
    "the relay refused itself, which are counted apart (no usage, listed among the latest)."
)
DAY_MESSAGE = gettext_lazy("Enter a date as YYYY-MM-DD.")
STATUS_MESSAGE = gettext_lazy(
    "Enter success, error, a class such as 4xx, a code such as 529, or refused."
)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MODEL = re.compile(r"[A-Za-z0-9._:/@+-]{1,200}")


@dataclass(frozen=True)
class UsageQuery:
    """Days `since` to `until` (both inclusive) in `zone`, filters, and how rows are grouped.
    `member` is a user id, `key` a key id; empty filters are None or ""."""

    since: date
    until: date
    zone: ZoneInfo
    range: str = DEFAULT_RANGE
    member: int | None = None
    key: int | None = None
    model: str = ""
    status: StatusFilter | None = None
    status_text: str = ""
    endpoint: str = ""
    group_by: str = "member"
    metric: str = "cost"

    @property
    def start(self) -> datetime:
        """The first instant of `since` (a midnight a DST jump skips: the instant it jumps
        from, as billing.windows reads them)."""
        return datetime.combine(self.since, time(), tzinfo=self.zone)

    @property
    def end(self) -> datetime:
        """The first instant after `until` (exclusive)."""
        return datetime.combine(self.until + timedelta(days=1), time(), tzinfo=self.zone)

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def per_event_filters(self) -> bool:
        """Whether a filter needs the usage events (the rollups keep neither)."""
        return self.status is not None or bool(self.endpoint)

    def params(self, **changes) -> dict[str, str]:
        """The query as query parameters (explicit days), with `changes` applied."""
        query = replace(self, **changes) if changes else self
        values = {
            "range": query.range,
            "since": query.since.isoformat(),
            "until": query.until.isoformat(),
            "member": "" if query.member is None else str(query.member),
            "key": "" if query.key is None else str(query.key),
            "model": query.model,
            "status": query.status_text,
            "endpoint": query.endpoint,
            "group_by": query.group_by,
            "metric": query.metric,
        }
        if query.range != "custom":
            del values["since"], values["until"]
        return {name: value for name, value in values.items() if value}


@dataclass
class QueryReading:
    query: UsageQuery
    errors: dict[str, str] = field(default_factory=dict)


def member_may_see_all(*, actor: User, team: Team) -> bool:
    """Leads (and staff who may view usage) see the whole team's usage; members their keys'."""
    return key_selectors.is_team_lead(
        actor=actor, team=team, staff_permission="billing.view_usageevent"
    )


def preset_days(name: str, today: date) -> tuple[date, date]:
    if name == "today":
        return today, today
    if name == "7d":
        return today - timedelta(days=6), today
    if name == "month":
        return today.replace(day=1), today
    return today - timedelta(days=29), today


def read_usage_query(
    params: Mapping[str, str],
    *,
    actor: User,
    team: Team,
    today: date,
    default_range: str | None = DEFAULT_RANGE,
) -> QueryReading:
    """The query `params` ask for, for `actor` in `team`. Every parameter is optional; one that
    cannot be read gets a message in `errors` and its default. With `default_range` None (the
    exports), no range means every day up to today."""
    errors: dict[str, str] = {}
    sees_all = member_may_see_all(actor=actor, team=team)

    def text(name: str) -> str:
        return (params.get(name) or "").strip()

    range_name = text("range") or ("custom" if text("since") or text("until") else "")
    if range_name and range_name not in RANGES:
        errors["range"] = _("Choose a range among: %(choices)s.") % {"choices": ", ".join(RANGES)}
        range_name = ""
    range_name = range_name or default_range or "custom"
    if range_name == "custom":
        since, until = _custom_days(text("since"), text("until"), today, errors, default_range)
        if since is None:
            range_name = default_range or "custom"
            since, until = (
                preset_days(range_name, today) if default_range else (date(2000, 1, 1), today)
            )
    else:
        since, until = preset_days(range_name, today)

    groupings = GROUPINGS if sees_all else tuple(g for g in GROUPINGS if g != "member")
    group_by = text("group_by") or groupings[0]
    if group_by not in groupings:
        errors["group_by"] = _("Group by one of: %(choices)s.") % {"choices": ", ".join(groupings)}
        group_by = groupings[0]
    metric = text("metric") or "cost"
    if metric not in METRICS:
        errors["metric"] = _("Chart one of: %(choices)s.") % {"choices": ", ".join(METRICS)}
        metric = "cost"

    member = _member(text("member"), actor=actor, team=team, sees_all=sees_all, errors=errors)
    key = _key(text("key"), actor=actor, team=team, errors=errors)
    model = text("model")
    if model and not _MODEL.fullmatch(model):
        errors["model"] = _("Enter a model name such as claude-sonnet-4-5.")
        model = ""
    status_text = text("status").lower()
    status = None
    if status_text:
        status = usage_status_filter(status_text)
        if status is None:
            errors["status"] = str(STATUS_MESSAGE)
            status_text = ""
    endpoint = text("endpoint")
    if endpoint and endpoint not in ENDPOINT_LABELS:
        errors["endpoint"] = _("Choose an endpoint among: %(choices)s.") % {
            "choices": ", ".join(ENDPOINT_LABELS)
        }
        endpoint = ""
    query = UsageQuery(
        since=since,
        until=until,
        zone=ZoneInfo(team.time_zone),
        range=range_name,
        member=member,
        key=key,
        model=model,
        status=status,
        status_text=status_text,
        endpoint=endpoint,
        group_by=group_by,
        metric=metric,
    )
    return QueryReading(query, errors)


def usage_status_filter(text: str) -> StatusFilter | None:
    """success (below 400), error (400 and up), or what billing.status_filter reads
    (a class, a code, "refused"); None if none of those."""
    if text == "success":
        return StatusFilter(100, 400)
    if text == "error":
        return StatusFilter(400, 600)
    try:
        return status_filter(text)
    except ValidationError:
        return None


def _custom_days(
    since_text: str, until_text: str, today: date, errors: dict[str, str], default: str | None
) -> tuple[date | None, date | None]:
    since = _day(since_text, "since", errors) if since_text else None
    until = _day(until_text, "until", errors) if until_text else None
    if default is not None:
        for name, value, text in (("since", since, since_text), ("until", until, until_text)):
            if value is None and not text:
                errors[name] = _("Enter both days of a custom range.")
    if errors.keys() & {"since", "until"}:
        return None, None
    since = since or date(2000, 1, 1)
    until = until or today
    if since > until:
        errors["until"] = _("The range ends before it starts.")
        return None, None
    if default is not None and (until - since).days >= MAX_RANGE_DAYS:
        errors["since"] = _("A range spans at most %(days)s days.") % {"days": MAX_RANGE_DAYS}
        return None, None
    return since, until


def _day(text: str, name: str, errors: dict[str, str]) -> date | None:
    try:
        if _DAY.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    errors[name] = str(DAY_MESSAGE)
    return None


def _member(text: str, *, actor: User, team: Team, sees_all: bool, errors) -> int | None:
    if not text:
        return None
    if text.isdigit() and len(text) < 12:
        user_id = int(text)
        if user_id == actor.pk or (
            sees_all and key_selectors.owner_list(team=team).filter(pk=user_id).exists()
        ):
            return user_id
    errors["member"] = _("No such member in this team.")
    return None


def _key(text: str, *, actor: User, team: Team, errors) -> int | None:
    """A key the actor may see in `team`; another member's key reads as no key at all."""
    if not text:
        return None
    if text.isdigit() and len(text) < 12:
        visible = key_selectors.api_key_list(
            actor=actor, team=team, staff_permission="billing.view_usageevent"
        )
        if visible.filter(pk=int(text)).exists():
            return int(text)
    errors["key"] = _("No such key in this team.")
    return None
