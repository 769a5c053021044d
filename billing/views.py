"""Usage pages of the portal. Teams and keys are resolved through keys.selectors, as on the key
pages (keys.views.scope), so another team's usage is a 404 like everything else of another team.
What a page shows within a team comes from billing.selectors (usage_scope): the whole team for
its leads, their own keys for members."""

from zoneinfo import ZoneInfo

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _

from keys.models import Team
from keys.selectors import api_key_list, owner_list, team_list
from keys.views.pages import render_team_page
from keys.views.scope import team_and_key

from . import selectors
from .charts import stacked_chart
from .export import csv_response, usage_event_csv
from .refusals import ENDPOINT_LABELS
from .usage_query import (
    GROUPING_TITLES,
    GROUPINGS,
    METRICS,
    RANGES,
    STATUS_HELP,
    QueryReading,
    member_may_see_all,
    read_usage_query,
)

RECENT_REQUESTS_ON_PAGE = 100
TEAM_REQUESTS_ON_PAGE = 50
SESSION_REQUESTS_ON_PAGE = 50
# Who may open a team's usage pages: its members (their own keys), its leads (everything) and
# staff who may view usage events.
USAGE_PERMISSION = "billing.view_usageevent"


def _usage_team(request: HttpRequest, team_slug: str) -> Team:
    return get_object_or_404(
        team_list(actor=request.user, staff_permission=USAGE_PERMISSION), slug=team_slug
    )


def _reading(request: HttpRequest, team: Team, **kwargs) -> QueryReading:
    today = timezone.localdate(timezone=ZoneInfo(team.time_zone))
    return read_usage_query(request.GET, actor=request.user, team=team, today=today, **kwargs)


@login_required
def team_usage(request: HttpRequest, team_slug: str) -> HttpResponse:
    """The usage explorer: a range of days, filters and a grouping, as a chart and a table. A
    parameter the page cannot read is named above the page, which shows its default instead."""
    team = _usage_team(request, team_slug)
    reading = _reading(request, team)
    query = reading.query
    sees_all = member_may_see_all(actor=request.user, team=team)
    report = selectors.usage_explorer(actor=request.user, team=team, query=query)
    links = {
        "member": lambda row: reverse("keys:list", args=[team.slug]) + f"?owner={row.value}",
        "key": lambda row: reverse("keys:detail", args=[team.slug, row.value]),
        "session": lambda row: reverse("billing:session_usage", args=[team.slug, row.value]),
        "day": lambda row: (
            "?"
            + urlencode(
                query.params(range="custom", since=row.value, until=row.value, group_by="session")
            )
        ),
    }
    for row in report.rows:
        has_target = row.value is not None and row.value != ""
        row.link = links[query.group_by](row) if has_target and query.group_by in links else ""
    groupings = GROUPINGS if sees_all else tuple(g for g in GROUPINGS if g != "member")
    context = {
        "query": query,
        "errors": reading.errors,
        "report": report,
        "chart": stacked_chart(report, metric=query.metric, group_by=query.group_by),
        "ranges": RANGES,
        "metrics": METRICS,
        "groupings": {value: GROUPING_TITLES[value] for value in groupings},
        "grouping_title": GROUPING_TITLES[query.group_by],
        "grouping_label": str(GROUPING_TITLES[query.group_by]).lower(),
        "members": owner_list(team=team) if sees_all else [],
        "keys": api_key_list(
            actor=request.user, team=team, staff_permission=USAGE_PERMISSION
        ).order_by("name", "id"),
        "models": selectors.team_model_list(actor=request.user, team=team),
        "endpoints": ENDPOINT_LABELS,
        "status_help": STATUS_HELP,
        "sees_all": sees_all,
        "csv_url": reverse("billing:team_usage_export", args=[team.slug])
        + "?"
        + urlencode(query.params(range="custom")),
        "metric_label": METRICS[query.metric],
        "request_status": query.status,
        "limit": TEAM_REQUESTS_ON_PAGE,
    }
    return render_team_page(request, "billing/team_usage.html", team, context)


@login_required
def team_usage_export(request: HttpRequest, team_slug: str) -> HttpResponse:
    """The explorer's requests as CSV (the API's export, for the signed-in browser)."""
    team = _usage_team(request, team_slug)
    reading = _reading(request, team, default_range=None)
    if reading.errors:
        lines = [f"{name}: {message}" for name, message in sorted(reading.errors.items())]
        return HttpResponse("\n".join(lines), status=400, content_type="text/plain")
    events = selectors.usage_explorer_events(actor=request.user, team=team, query=reading.query)
    query = reading.query
    filename = f"usage-{team.slug}-{query.since}-{query.until}.csv"
    return csv_response(usage_event_csv(events), filename=filename)


@login_required
def session_usage(request: HttpRequest, team_slug: str, session_id: str) -> HttpResponse:
    """One Claude Code session's requests, oldest first, with its totals and model mix. A
    session with no request the actor may see is a 404."""
    team = _usage_team(request, team_slug)
    events = selectors.usage_session_events(actor=request.user, team=team, session_id=session_id)
    summary = selectors.usage_session_summary(events=events)
    if not summary.requests:
        raise Http404(_("No such session."))
    page = Paginator(events, SESSION_REQUESTS_ON_PAGE).get_page(request.GET.get("page"))
    return render_team_page(
        request,
        "billing/session_usage.html",
        team,
        {"session_id": session_id, "summary": summary, "page": page},
    )


@login_required
def key_usage(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team, key = team_and_key(request, team_slug, key_id, staff_permission=USAGE_PERMISSION)
    return render_team_page(
        request, "billing/key_usage.html", team, {"key": key, "limit": RECENT_REQUESTS_ON_PAGE}
    )
