"""The page an invitation's emailed link opens: what it invites to, and the button to accept."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from keys import services
from keys.selectors import invitation_for_token


@login_required
@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    invitation = invitation_for_token(token=token)
    if invitation is None:
        raise Http404(_("No such invitation."))
    refusal = services.invitation_refusal(invitation=invitation, user=request.user)
    status = 200
    if request.method == "POST" and refusal is None:
        try:
            membership = services.invitation_accept(token=token, user=request.user)
        except ValidationError as error:
            refusal, status = " ".join(error.messages), 400
        else:
            messages.success(
                request,
                _("You joined %(team)s as %(role)s.")
                % {"team": membership.team.name, "role": membership.get_role_display().lower()},
            )
            return redirect("keys:list", team_slug=membership.team.slug)
    elif request.method == "POST":
        status = 400
    response = render(
        request,
        "keys/invitation_accept.html",
        {"invitation": invitation, "refusal": refusal},
        status=status,
    )
    # The page's address is the invitation's secret: keep it out of shared caches.
    add_never_cache_headers(response)
    return response
