"""Usage pages of the portal. Teams and keys are resolved through keys.selectors, as on the key
pages (keys.views.scope), so another team's usage is a 404 like everything else of another team."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from keys.selectors import is_team_lead, team_list
from keys.views.pages import render_team_page
from keys.views.scope import team_and_key

from .forms import RequestFilterForm

RECENT_REQUESTS_ON_PAGE = 100
TEAM_REQUESTS_ON_PAGE = 50


@login_required
def team_usage(request: HttpRequest, team_slug: str) -> HttpResponse:
    """The team's spend per day, key and model, and its latest requests (refused ones too),
    filtered by status. Leads only: it names every member's keys. A status the filter cannot
    read is shown as the form's error, with the requests unfiltered."""
    team = get_object_or_404(team_list(actor=request.user), slug=team_slug)
    if not is_team_lead(actor=request.user, team=team, staff_permission="billing.view_usagedaily"):
        raise Http404("Only the team's leads see its usage.")
    filters = RequestFilterForm(request.GET or None)
    status = filters.cleaned_data["status"] if filters.is_valid() else None
    context = {"filters": filters, "request_status": status, "limit": TEAM_REQUESTS_ON_PAGE}
    return render_team_page(request, "billing/team_usage.html", team, context, is_lead=True)


@login_required
def key_usage(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team, key = team_and_key(request, team_slug, key_id, staff_permission="billing.view_usageevent")
    return render_team_page(
        request, "billing/key_usage.html", team, {"key": key, "limit": RECENT_REQUESTS_ON_PAGE}
    )
