"""The objects a portal URL names, looked up within the signed-in person's scope.

Each lookup goes through keys.selectors, so anything outside that scope is a 404, the same
answer as for an id that does not exist.
"""

from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _

from keys.models import ApiKey, ApiToken, Invitation, Membership, Team
from keys.selectors import (
    api_key_get,
    api_token_list,
    invitation_list,
    is_team_lead,
    member_list,
    team_list,
)


def _team(request: HttpRequest, team_slug: str) -> Team:
    return get_object_or_404(team_list(actor=request.user), slug=team_slug)


def _lead_team(request: HttpRequest, team_slug: str) -> Team:
    """The team, if the signed-in person leads it. Members get the same 404 as strangers, and
    so do staff who are not its leads: they manage members in the admin, under its permissions."""
    team = _team(request, team_slug)
    if not is_team_lead(actor=request.user, team=team):
        raise Http404(_("Only the team's leads manage its members."))
    return team


def team_and_key(
    request: HttpRequest, team_slug: str, key_id: int, staff_permission: str = "keys.view_apikey"
) -> tuple[Team, ApiKey]:
    """The team and its key, if the signed-in person may see the key, or act on it with
    `staff_permission`. The pages of one key use it, billing's usage page of a key too."""
    team = _team(request, team_slug)
    try:
        key = api_key_get(
            actor=request.user, key_id=key_id, team=team, staff_permission=staff_permission
        )
    except ApiKey.DoesNotExist:
        raise Http404(_("No such key.")) from None
    return team, key


def _membership(request: HttpRequest, team: Team, membership_id: int) -> Membership:
    return get_object_or_404(member_list(actor=request.user, team=team), pk=membership_id)


def _invitation(request: HttpRequest, team: Team, invitation_id: int) -> Invitation:
    """A pending invitation of `team`; another team's, or one no longer pending, is a 404."""
    return get_object_or_404(invitation_list(actor=request.user, team=team), pk=invitation_id)


def _token(request: HttpRequest, token_id: int) -> ApiToken:
    """One of the signed-in person's tokens; anyone else's is a 404, like a guessed id."""
    return get_object_or_404(api_token_list(actor=request.user), pk=token_id)
