"""How a team's portal pages are rendered, in the keys app and in billing's usage pages."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from keys.models import Team
from keys.selectors import is_team_lead


def render_team_page(
    request: HttpRequest,
    template_name: str,
    team: Team,
    context: dict | None = None,
    *,
    is_lead: bool | None = None,
    status: int = 200,
) -> HttpResponse:
    """A page of `team`. base.html shows the team's navigation, with the Team and Usage links
    for its leads only; `is_lead` is asked of the selectors unless the view already knows it."""
    if is_lead is None:
        is_lead = is_team_lead(actor=request.user, team=team)
    return render(
        request,
        template_name,
        {"team": team, "is_lead": is_lead, **(context or {})},
        status=status,
    )
