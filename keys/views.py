"""The portal: server-rendered pages for keys, teams and the signed-in person's API tokens.

Every page resolves its team, key and token through keys.selectors, so anything outside the
signed-in person's scope is a 404, whether reached by URL, form field or a guessed id. Writes go
through keys.services; their ValidationErrors come back as field errors on the same form.
"""

import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST
from django_ratelimit.core import get_usage

from . import services
from .forms import AddMemberForm, ApiTokenForm, CreateKeyForm, KeyFilterForm, KeyForm, RoleForm
from .models import ApiKey, ApiToken, Group, Membership, Team
from .selectors import (
    api_key_get,
    api_key_list,
    api_key_search,
    api_token_list,
    group_list_for_team,
    is_team_lead,
    key_event_list,
    member_list,
    team_list,
)

KEYS_PER_PAGE = 25

# --- signing in -----------------------------------------------------------------------------

LOGIN_LIMITS = (
    # The client's address as the relay sees it: X-Forwarded-For only from TRUSTED_PROXIES, so
    # behind a load balancer every visitor does not share one counter.
    ("login-failures-ip", "hcai.client_ip.request_client_ip", "LOGIN_FAILURES_PER_IP"),
    ("login-failures-username", "keys.views.login_username", "LOGIN_FAILURES_PER_USERNAME"),
)


def login_username(group: str, request: HttpRequest) -> str:
    """The rate-limit key for a sign-in: the username as typed, ignoring case and spaces, so
    "Lead" and " lead" share one counter."""
    return request.POST.get("username", "").strip().lower()


class LoginView(auth_views.LoginView):
    """Django's sign-in, with failed attempts counted per client IP and per username.

    Only failures count, so someone who signs in often is never locked out; once either
    counter is full every attempt is refused without checking the password, which is what
    stops a password being guessed.
    """

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        seconds_left = self._seconds_until_allowed(request)
        if seconds_left is not None:
            # An unbound form: binding it would run authenticate(), the very check refused here.
            form = self.get_form_class()(
                request, initial={"username": request.POST.get("username", "")}
            )
            minutes = max(1, math.ceil(seconds_left / 60))
            refusal = (
                "Too many failed sign-in attempts. Please wait "
                f"{minutes} minute{'s' if minutes != 1 else ''} and try again."
            )
            return self.render_to_response(
                self.get_context_data(form=form, refusal=refusal), status=429
            )
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for group, key, setting in LOGIN_LIMITS:
            get_usage(
                self.request,
                group=group,
                key=key,
                rate=getattr(settings, setting),
                increment=True,
            )
        return super().form_invalid(form)

    @staticmethod
    def _seconds_until_allowed(request: HttpRequest) -> int | None:
        waits = []
        for group, key, setting in LOGIN_LIMITS:
            usage = get_usage(request, group=group, key=key, rate=getattr(settings, setting))
            if usage is not None and usage["count"] >= usage["limit"]:
                waits.append(usage["time_left"])
        return max(waits) if waits else None


# --- helpers --------------------------------------------------------------------------------


def _team(request: HttpRequest, team_slug: str) -> Team:
    return get_object_or_404(team_list(actor=request.user), slug=team_slug)


def _lead_team(request: HttpRequest, team_slug: str) -> Team:
    """The team, if the signed-in person leads it. Members get the same 404 as strangers."""
    team = _team(request, team_slug)
    if not is_team_lead(actor=request.user, team=team):
        raise Http404("Only the team's leads manage its members.")
    return team


def _key(request: HttpRequest, team: Team, key_id: int) -> ApiKey:
    try:
        return api_key_get(actor=request.user, team=team, key_id=key_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such key.") from None


def _membership(request: HttpRequest, team: Team, membership_id: int) -> Membership:
    return get_object_or_404(member_list(actor=request.user, team=team), pk=membership_id)


def _issued_key_page(
    request: HttpRequest, team: Team, issued: services.IssuedKey, *, rotated: bool
) -> HttpResponse:
    """The one response that carries a key's plaintext: rendered straight into this POST's
    answer, never stored in the session, a message or a URL, and never cached."""
    response = render(
        request,
        "keys/key_issued.html",
        {
            "team": team,
            "is_lead": is_team_lead(actor=request.user, team=team),
            "key": issued.key,
            "plaintext": issued.plaintext,
            "rotated": rotated,
            "base_url": settings.PUBLIC_BASE_URL,
        },
    )
    add_never_cache_headers(response)
    return response


# --- pages ----------------------------------------------------------------------------------


@login_required
def home(request: HttpRequest) -> HttpResponse:
    team = team_list(actor=request.user).first()
    if team is None:
        return render(request, "keys/no_team.html")
    return redirect("keys:list", team_slug=team.slug)


@login_required
def key_list(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _team(request, team_slug)
    visible = api_key_list(actor=request.user, team=team)
    lead = is_team_lead(actor=request.user, team=team)
    filters = KeyFilterForm(
        request.GET,
        groups=Group.objects.filter(
            Q(pk__in=visible.values("group_id")) | Q(pk__in=group_list_for_team(team=team))
        ).order_by("name"),
        # Former members still own (disabled) keys, so they stay in the owner filter.
        owners=(
            get_user_model()
            .objects.filter(Q(memberships__team=team) | Q(api_keys__team=team))
            .order_by("username")
            .distinct()
            if lead
            else None
        ),
    )
    keys = api_key_search(actor=request.user, team=team, **filters.filters())
    page = Paginator(keys, KEYS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "keys/key_list.html",
        {
            "team": team,
            "is_lead": lead,
            "filters": filters,
            "page": page,
            "filtered": any(filters.filters().values()),
            "has_keys": visible.exists(),
            "query": query.urlencode(),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_create(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _team(request, team_slug)
    form = CreateKeyForm(request.POST or None, team=team)
    if request.method == "POST" and form.is_valid():
        try:
            issued = services.api_key_create(
                team=team, owner=request.user, actor=request.user, **form.service_arguments()
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            return _issued_key_page(request, team, issued, rotated=False)
    return render(
        request,
        "keys/key_form.html",
        {"team": team, "is_lead": is_team_lead(actor=request.user, team=team), "form": form},
        status=400 if form.is_bound else 200,
    )


@login_required
def key_detail(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team = _team(request, team_slug)
    key = _key(request, team, key_id)
    return render(
        request,
        "keys/key_detail.html",
        {
            "team": team,
            "is_lead": is_team_lead(actor=request.user, team=team),
            "key": key,
            "events": key_event_list(actor=request.user, key=key)[:50],
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_edit(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team = _team(request, team_slug)
    key = _key(request, team, key_id)
    form = KeyForm(request.POST or None, team=team, key=key)
    if request.method == "POST" and form.is_valid():
        changes = form.changes()
        try:
            services.api_key_update(key=key, actor=request.user, **changes)
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            if not changes:
                messages.info(request, "Nothing to update: no setting was changed.")
                return redirect("keys:edit", team_slug=team.slug, key_id=key.pk)
            messages.success(request, "Saved. Changes take effect immediately.")
            messages.info(request, "If your tool caches its configuration, restart the tool.")
            if "group" in changes:
                messages.warning(
                    request,
                    "You changed the group. If the new group leads to unexpected behavior, "
                    "create a new key and update your tool configuration.",
                )
            return redirect("keys:edit", team_slug=team.slug, key_id=key.pk)
    return render(
        request,
        "keys/key_edit.html",
        {
            "team": team,
            "is_lead": is_team_lead(actor=request.user, team=team),
            "key": key,
            "form": form,
        },
        status=400 if form.is_bound else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_rotate(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team = _team(request, team_slug)
    key = _key(request, team, key_id)
    if request.method == "POST":
        issued = services.api_key_rotate(key=key, actor=request.user)
        return _issued_key_page(request, team, issued, rotated=True)
    return render(
        request,
        "keys/key_confirm.html",
        {
            "team": team,
            "is_lead": is_team_lead(actor=request.user, team=team),
            "key": key,
            "action": "rotate",
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_delete(request: HttpRequest, team_slug: str, key_id: int) -> HttpResponse:
    team = _team(request, team_slug)
    key = _key(request, team, key_id)
    if request.method == "POST":
        name = key.name
        services.api_key_delete(key=key, actor=request.user)
        messages.success(request, f"Key “{name}” deleted. Its audit trail is kept.")
        return redirect("keys:list", team_slug=team.slug)
    return render(
        request,
        "keys/key_confirm.html",
        {
            "team": team,
            "is_lead": is_team_lead(actor=request.user, team=team),
            "key": key,
            "action": "delete",
        },
    )


# --- team (leads) ---------------------------------------------------------------------------


def _team_page(request: HttpRequest, team: Team, add_form: AddMemberForm, status: int = 200):
    members = member_list(actor=request.user, team=team).annotate(
        key_count=Count("user__api_keys", filter=Q(user__api_keys__team=team))
    )
    return render(
        request,
        "keys/team.html",
        {
            "team": team,
            "is_lead": True,
            "members": members,
            "add_form": add_form,
            "roles": Membership.Role.choices,
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
    team = _lead_team(request, team_slug)
    return _team_page(request, team, AddMemberForm())


@login_required
@require_POST
def member_add(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _lead_team(request, team_slug)
    form = AddMemberForm(request.POST)
    if form.is_valid():
        user: AbstractBaseUser = form.cleaned_data["user"]
        try:
            services.membership_add(
                team=team, user=user, role=form.cleaned_data["role"], actor=request.user
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            messages.success(request, f"{user} added to {team.name}.")
            return redirect("keys:team", team_slug=team.slug)
    return _team_page(request, team, form, status=400)


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
                request, f"{membership.user} is now {membership.get_role_display().lower()}."
            )
    else:
        messages.error(request, "Choose Lead or Member.")
    return _back_to_team(request, team)


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
                f"{membership.user} removed from {team.name}; "
                f"{disabled} key{'s' if disabled != 1 else ''} disabled.",
            )
        return _back_to_team(request, team)
    enabled_keys = (
        api_key_list(actor=request.user, team=team)
        .filter(owner=membership.user, status=ApiKey.Status.ENABLED)
        .count()
    )
    return render(
        request,
        "keys/member_remove.html",
        {"team": team, "is_lead": True, "membership": membership, "enabled_keys": enabled_keys},
    )


# --- REST API tokens (the signed-in person's own) -------------------------------------------


def _token(request: HttpRequest, token_id: int) -> ApiToken:
    """One of the signed-in person's tokens; anyone else's is a 404, like a guessed id."""
    return get_object_or_404(api_token_list(actor=request.user), pk=token_id)


def _token_list_page(request: HttpRequest, form: ApiTokenForm, status: int = 200) -> HttpResponse:
    return render(
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
            issued = services.api_token_create(user=request.user, name=form.cleaned_data["name"])
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            # As with keys: the plaintext exists only in this POST's answer, never cached.
            response = render(
                request,
                "keys/token_issued.html",
                {
                    "token": issued.token,
                    "plaintext": issued.plaintext,
                    "base_url": settings.PUBLIC_BASE_URL,
                },
            )
            add_never_cache_headers(response)
            return response
    return _token_list_page(request, form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = _token(request, token_id)
    if request.method == "POST":
        if token.revoked_at is not None:
            messages.info(request, f"Token “{token.name}” was already revoked.")
        else:
            services.api_token_revoke(token=token)
            messages.success(
                request,
                f"Token “{token.name}” revoked. Requests that send it now get 401 Unauthorized.",
            )
        return redirect("keys:tokens")
    return render(request, "keys/token_revoke.html", {"token": token})
