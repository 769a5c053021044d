"""The portal's Notifications page of a team: its settings (its leads change them, members read
them) and the signed-in member's choice of emails about their own keys.

Only the team's members reach it; anyone else, staff who are not members included (they use
the admin or the API), gets a 404, as on the team page.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from keys.models import Membership, Team
from keys.selectors import is_team_lead, membership_for
from keys.views.pages import render_team_page
from keys.views.scope import _team

from .. import services
from ..forms import EmailPreferenceForm, NotificationSettingsForm
from ..selectors import email_preference_for, notification_settings_for


def _member_team(request: HttpRequest, team_slug: str) -> tuple[Team, Membership]:
    team = _team(request, team_slug)
    membership = membership_for(actor=request.user, team=team)
    if membership is None:
        raise Http404(_("Only the team's members see its notifications."))
    return team, membership


def _page(
    request: HttpRequest,
    team: Team,
    membership: Membership,
    *,
    settings_form: NotificationSettingsForm | None = None,
    preference_form: EmailPreferenceForm | None = None,
    status: int = 200,
) -> HttpResponse:
    is_lead = is_team_lead(actor=request.user, team=team)
    current = notification_settings_for(team)
    if is_lead and settings_form is None:
        settings_form = NotificationSettingsForm(current=current)
    return render_team_page(
        request,
        "notify/notifications.html",
        team,
        {
            "membership": membership,
            "current": current,
            "settings_form": settings_form,
            "preference_form": preference_form
            or EmailPreferenceForm(preference=email_preference_for(membership)),
            "webhooks_url": reverse("notify:webhooks", args=[team.slug]),
        },
        is_lead=is_lead,
        status=status,
    )


@login_required
@require_GET
def notifications(request: HttpRequest, team_slug: str) -> HttpResponse:
    team, membership = _member_team(request, team_slug)
    return _page(request, team, membership)


@login_required
@require_POST
def settings_update(request: HttpRequest, team_slug: str) -> HttpResponse:
    team, membership = _member_team(request, team_slug)
    if not is_team_lead(actor=request.user, team=team):
        raise Http404(_("Only the team's leads change its notification settings."))
    form = NotificationSettingsForm(request.POST, current=notification_settings_for(team))
    if form.is_valid():
        try:
            services.notification_settings_update(
                actor=request.user, team=team, **form.service_arguments()
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            messages.success(request, _("Notification settings saved."))
            return redirect("notify:notifications", team_slug=team.slug)
    return _page(request, team, membership, settings_form=form, status=400)


@login_required
@require_POST
def preference_update(request: HttpRequest, team_slug: str) -> HttpResponse:
    team, membership = _member_team(request, team_slug)
    form = EmailPreferenceForm(request.POST, preference=email_preference_for(membership))
    if form.is_valid():
        preference = services.email_preference_update(
            actor=request.user,
            membership=membership,
            own_key_emails=form.cleaned_data["own_key_emails"],
        )
        messages.success(
            request,
            _("You get emails about your keys in this team.")
            if preference.own_key_emails
            else _("You no longer get emails about your keys in this team."),
        )
        return redirect("notify:notifications", team_slug=team.slug)
    return _page(request, team, membership, preference_form=form, status=400)
