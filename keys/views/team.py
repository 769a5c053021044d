"""The team page, where a team's leads invite people, change members' roles and monthly caps and
remove them. Members see the team's monthly budget and their own cap there, read-only."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_POST

from core.money import usd
from keys import services
from keys.forms import InviteForm, MemberCapForm, RoleForm, TeamKeySettingsForm
from keys.models import ApiKey, Membership, Team
from keys.selectors import (
    api_key_search,
    invitation_list,
    is_team_lead,
    member_list_with_key_counts,
    membership_for,
    team_event_list,
)

from .pages import render_team_page
from .scope import _invitation, _lead_team, _membership, _team


def _team_page(
    request: HttpRequest,
    team: Team,
    invite_form: InviteForm,
    status: int = 200,
    settings_form: TeamKeySettingsForm | None = None,
    cap_form: MemberCapForm | None = None,
    cap_for: Membership | None = None,
):
    """The lead's team page; `cap_form` is a refused cap, shown on `cap_for`'s row as typed."""
    members = member_list_with_key_counts(actor=request.user, team=team)
    return render(
        request,
        "keys/team.html",
        {
            "team": team,
            "is_lead": True,
            "members": members,
            "invitations": invitation_list(actor=request.user, team=team),
            "invite_form": invite_form,
            "settings_form": settings_form or TeamKeySettingsForm(team=team),
            "roles": Membership.Role.choices,
            "cap_form": cap_form,
            "cap_for": cap_for.pk if cap_for is not None else None,
            "activity": Paginator(team_event_list(actor=request.user, team=team), 20).get_page(
                request.GET.get("activity_page")
            ),
        },
        status=status,
    )


def _back_to_team(request: HttpRequest, team: Team) -> HttpResponse:
    """The team page, unless the lead just stepped down or left: then their own keys."""
    if is_team_lead(actor=request.user, team=team):
        return redirect("keys:team", team_slug=team.slug)
    return redirect("keys:home")


@login_required
def team_detail(request: HttpRequest, team_slug: str) -> HttpResponse:
    """Leads manage the team here; a member sees its budget and their own cap, nothing of the
    others. Anyone else, staff who are not members included, gets a 404."""
    team = _team(request, team_slug)
    if is_team_lead(actor=request.user, team=team):
        return _team_page(request, team, InviteForm())
    membership = membership_for(actor=request.user, team=team)
    if membership is None:
        raise Http404(_("Only the team's members see its page."))
    return render_team_page(
        request, "keys/team_member.html", team, {"membership": membership}, is_lead=False
    )


@login_required
@require_POST
def team_key_settings(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _lead_team(request, team_slug)
    form = TeamKeySettingsForm(request.POST, team=team)
    if form.is_valid():
        try:
            services.team_key_settings_update(team=team, actor=request.user, **form.changes())
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            messages.success(request, _("Key settings saved. They apply to keys created from now."))
            return redirect("keys:team", team_slug=team.slug)
    return _team_page(request, team, InviteForm(), status=400, settings_form=form)


@login_required
@require_POST
def invitation_create(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _lead_team(request, team_slug)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation = services.invitation_create(
                team=team,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=request.user,
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            # The same answer whether or not the address has an account here.
            messages.success(
                request, _("Invitation sent to %(email)s.") % {"email": invitation.email}
            )
            return redirect("keys:team", team_slug=team.slug)
    return _team_page(request, team, form, status=400)


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, team_slug: str, invitation_id: int) -> HttpResponse:
    team = _lead_team(request, team_slug)
    invitation = _invitation(request, team, invitation_id)
    try:
        services.invitation_revoke(invitation=invitation, actor=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request, _("Invitation for %(email)s revoked.") % {"email": invitation.email}
        )
    return redirect("keys:team", team_slug=team.slug)


@login_required
@require_POST
def member_role(request: HttpRequest, team_slug: str, membership_id: int) -> HttpResponse:
    team = _lead_team(request, team_slug)
    membership = _membership(request, team, membership_id)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            services.membership_set_role(
                membership=membership, role=form.cleaned_data["role"], actor=request.user
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(
                request,
                _("%(member)s is now %(role)s.")
                % {"member": membership.user, "role": membership.get_role_display().lower()},
            )
    else:
        messages.error(request, _("Choose Lead or Member."))
    return _back_to_team(request, team)


@login_required
@require_POST
def member_cap(request: HttpRequest, team_slug: str, membership_id: int) -> HttpResponse:
    team = _lead_team(request, team_slug)
    membership = _membership(request, team, membership_id)
    form = MemberCapForm(request.POST)
    if form.is_valid():
        try:
            membership = services.membership_limit_update(
                actor=request.user,
                membership=membership,
                monthly_limit_usd=form.cleaned_data["monthly_limit_usd"],
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            cap = membership.monthly_limit_usd
            messages.success(
                request,
                _("%(member)s's monthly cap is now %(cap)s.")
                % {"member": membership.user, "cap": usd(cap)}
                if cap
                else _("%(member)s has no monthly cap now.") % {"member": membership.user},
            )
            return redirect("keys:team", team_slug=team.slug)
    return _team_page(request, team, InviteForm(), status=400, cap_form=form, cap_for=membership)


@login_required
@require_http_methods(["GET", "POST"])
def member_remove(request: HttpRequest, team_slug: str, membership_id: int) -> HttpResponse:
    team = _lead_team(request, team_slug)
    membership = _membership(request, team, membership_id)
    if request.method == "POST":
        try:
            disabled = services.membership_remove(membership=membership, actor=request.user)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(
                request,
                ngettext(
                    "%(member)s removed from %(team)s; %(count)d key disabled.",
                    "%(member)s removed from %(team)s; %(count)d keys disabled.",
                    disabled,
                )
                % {"member": membership.user, "team": team.name, "count": disabled},
            )
        return _back_to_team(request, team)
    enabled_keys = api_key_search(
        actor=request.user,
        team=team,
        filters={"owner_id": membership.user_id, "status": ApiKey.Status.ENABLED},
    ).count()
    return render(
        request,
        "keys/member_remove.html",
        {"team": team, "is_lead": True, "membership": membership, "enabled_keys": enabled_keys},
    )
