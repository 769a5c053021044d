"""The key pages: a team's key list, and creating, viewing, editing, rotating and deleting
a key."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from keys import services
from keys.forms import CreateKeyForm, KeyFilterForm, KeyForm
from keys.selectors import (
    api_key_list,
    api_key_search,
    group_list_for_key_filter,
    is_team_lead,
    key_event_list,
    member_user_list,
    owner_list,
    team_list,
)

from .pages import render_team_page
from .scope import _team, team_and_key
from .show_once import Pending, no_store, redirect_to_secret, take_secret

KEYS_PER_PAGE = 25


@login_required
def home(request: HttpRequest) -> HttpResponse:
    team = team_list(actor=request.user).first()
    if team is None:
        return render(request, "keys/no_team.html")
    return redirect("keys:list", team_slug=team.slug)


@login_required
def key_list(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _team(request, team_slug)
    lead = is_team_lead(actor=request.user, team=team)
    filters = KeyFilterForm(
        request.GET,
        groups=group_list_for_key_filter(actor=request.user, team=team),
        owners=owner_list(team=team) if lead else None,
    )
    keys = api_key_search(actor=request.user, team=team, filters=filters.filters())
    page = Paginator(keys, KEYS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render_team_page(
        request,
        "keys/key_list.html",
        team,
        {
            "filters": filters,
            "page": page,
            "filtered": any(filters.filters().values()),
            "has_keys": api_key_list(actor=request.user, team=team).exists(),
            "query": query.urlencode(),
            # A member of a team whose leads create the keys gets no button that leads nowhere.
            "may_create": lead or team.members_can_create_keys,
        },
        is_lead=lead,
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_create(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _team(request, team_slug)
    role = services.api_key_actor_role(actor=request.user, team=team, creating=True)
    form = CreateKeyForm(
        request.POST or None,
        team=team,
        # Leads choose the owner among the members; members create keys for themselves.
        owners=None if role.restricted else member_user_list(actor=request.user, team=team),
        defaults=services.team_key_defaults(team),
        restricted=role.restricted,
        initial={"owner": request.user.pk},
    )
    if request.method == "POST" and form.is_valid():
        try:
            issued = services.api_key_create(
                team=team,
                owner=form.owner_choice() or request.user,
                actor=request.user,
                **form.service_arguments(),
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            return redirect_to_secret(
                request,
                Pending(kind="key", object_id=issued.key.pk, plaintext=issued.plaintext),
                "keys:issued",
                team_slug=team.slug,
                key_id=issued.key.pk,
            )
    # Said before the member fills the form in; the service refuses the creation anyway.
    closed = role.restricted and not team.members_can_create_keys
    return render_team_page(
        request,
        "keys/key_form.html",
        team,
        {"form": form, "creation_closed": closed},
        status=400 if form.is_bound else 200,
    )


@login_required
def key_detail(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team, key = team_and_key(request, team_slug, key_id)
    return render_team_page(
        request,
        "keys/key_detail.html",
        team,
        {"key": key, "events": key_event_list(actor=request.user, key=key)[:50]},
    )


@login_required
def key_issued(request: HttpRequest, team_slug: str, key_id: int, once: str) -> HttpResponse:
    """The new secret after a create or rotate, once (show_once); afterwards 410 Gone with the
    way to get a new one. Nothing is created or rotated here, however often it is loaded."""
    team, key = team_and_key(request, team_slug, key_id)
    pending = take_secret(request, once, kind="key", object_id=key.pk)
    if pending is None:
        return no_store(
            render_team_page(request, "keys/secret_gone.html", team, {"key": key}, status=410)
        )
    return no_store(
        render_team_page(
            request,
            "keys/key_issued.html",
            team,
            {
                "key": key,
                "plaintext": pending.plaintext,
                "rotated": pending.rotated,
                "base_url": settings.PUBLIC_BASE_URL,
            },
        )
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_edit(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team, key = team_and_key(request, team_slug, key_id, staff_permission="keys.change_apikey")
    role = services.api_key_actor_role(actor=request.user, team=team)
    form = KeyForm(request.POST or None, team=team, key=key, restricted=role.restricted)
    if request.method == "POST" and form.is_valid():
        changes = form.changes()
        try:
            services.api_key_update(key=key, actor=request.user, **changes)
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            if not changes:
                messages.info(request, _("Nothing to update: no setting was changed."))
                return redirect("keys:edit", team_slug=team.slug, key_id=key.pk)
            messages.success(request, _("Saved. Changes take effect immediately."))
            messages.info(request, _("If your tool caches its configuration, restart the tool."))
            if "group" in changes:
                messages.warning(
                    request,
                    _(
                        "You changed the group. If the new group leads to unexpected behavior, "
                        "create a new key and update your tool configuration."
                    ),
                )
            return redirect("keys:edit", team_slug=team.slug, key_id=key.pk)
    return render_team_page(
        request,
        "keys/key_edit.html",
        team,
        {"key": key, "form": form, "restricted": role.restricted},
        status=400 if form.is_bound else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_rotate(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team, key = team_and_key(request, team_slug, key_id, staff_permission="keys.change_apikey")
    if request.method == "POST":
        issued = services.api_key_rotate(key=key, actor=request.user)
        return redirect_to_secret(
            request,
            Pending(kind="key", object_id=key.pk, plaintext=issued.plaintext, rotated=True),
            "keys:issued",
            team_slug=team.slug,
            key_id=key.pk,
        )
    return render_team_page(
        request, "keys/key_confirm.html", team, {"key": key, "action": "rotate"}
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_delete(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team, key = team_and_key(request, team_slug, key_id, staff_permission="keys.delete_apikey")
    if request.method == "POST":
        name = key.name
        services.api_key_delete(key=key, actor=request.user)
        messages.success(
            request, _("Key “%(name)s” deleted. Its audit trail is kept.") % {"name": name}
        )
        return redirect("keys:list", team_slug=team.slug)
    return render_team_page(
        request, "keys/key_confirm.html", team, {"key": key, "action": "delete"}
    )
