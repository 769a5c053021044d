"""The signed-in person's own REST API tokens: list, create, revoke."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from keys import services
from keys.forms import ApiTokenForm
from keys.selectors import api_token_list, team_list

from .pages import render_team_page
from .scope import _token
from .show_once import Pending, no_store, redirect_to_secret, take_secret


def _account_page(
    request: HttpRequest, template_name: str, context: dict, status: int = 200
) -> HttpResponse:
    """A page of the signed-in person's own: tokens belong to no team, but the page keeps the
    main navigation (Keys, and Team and Usage for leads) of their first team, the one the
    portal's home opens. Someone in no team gets the page without it."""
    team = team_list(actor=request.user).first()
    if team is None:
        return render(request, template_name, context, status=status)
    return render_team_page(request, template_name, team, context, status=status)


def _token_list_page(request: HttpRequest, form: ApiTokenForm, status: int = 200) -> HttpResponse:
    return _account_page(
        request,
        "keys/token_list.html",
        {"tokens": api_token_list(actor=request.user), "form": form},
        status=status,
    )


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    return _token_list_page(request, ApiTokenForm())


@login_required
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST)
    if form.is_valid():
        try:
            issued = services.api_token_create(
                user=request.user, name=form.cleaned_data["name"], actor=request.user
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            return redirect_to_secret(
                request,
                Pending(kind="token", object_id=issued.token.pk, plaintext=issued.plaintext),
                "keys:token_issued",
                token_id=issued.token.pk,
            )
    return _token_list_page(request, form, status=400)


@login_required
def token_issued(request: HttpRequest, token_id: int, once: str) -> HttpResponse:
    """The new token's secret, once (show_once); afterwards 410 Gone, and nothing is created."""
    token = _token(request, token_id)
    pending = take_secret(request, once, kind="token", object_id=token.pk)
    if pending is None:
        return no_store(
            _account_page(request, "keys/secret_gone.html", {"token": token}, status=410)
        )
    return no_store(
        _account_page(
            request,
            "keys/token_issued.html",
            {"token": token, "plaintext": pending.plaintext, "base_url": settings.PUBLIC_BASE_URL},
        )
    )


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = _token(request, token_id)
    if request.method == "POST":
        if token.revoked_at is not None:
            messages.info(
                request, _("Token “%(name)s” was already revoked.") % {"name": token.name}
            )
        else:
            services.api_token_revoke(token=token, actor=request.user)
            messages.success(
                request,
                _("Token “%(name)s” revoked. Requests that send it now get 401 Unauthorized.")
                % {"name": token.name},
            )
        return redirect("keys:tokens")
    return _account_page(request, "keys/token_revoke.html", {"token": token})
