"""The portal's webhook pages, under /t/<slug>/notifications/webhooks/: a team's webhooks with
the status of their last delivery, create (the secret shown once, as a new key's), edit,
delete, send a test, and each webhook's delivery log with "Redeliver".

For the team's leads only: anyone else gets a 404, members and staff alike (staff manage
webhooks in the admin). Reads go through notify.selectors, writes through notify.services.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from keys.models import Team
from keys.views.pages import render_team_page
from keys.views.show_once import Pending, no_store, redirect_to_secret, take_secret
from notify import selectors, services
from notify.forms import WebhookForm
from notify.models import Delivery, Webhook

DELIVERIES_PER_PAGE = 25
# The portal acts as the team's leads do, never with staff powers.
NO_STAFF = None


def _lead_team(request: HttpRequest, team_slug: str) -> Team:
    team = selectors.webhook_team_get(
        actor=request.user, team_slug=team_slug, staff_permission=NO_STAFF
    )
    if team is None:
        raise Http404(_("Only the team's leads manage its webhooks."))
    return team


def _webhook(request: HttpRequest, team: Team, webhook_id: int) -> Webhook:
    webhooks = selectors.webhook_list(actor=request.user, team=team, staff_permission=NO_STAFF)
    return get_object_or_404(webhooks, pk=webhook_id)


def _page(
    request: HttpRequest, template: str, team: Team, context: dict, status: int = 200
) -> HttpResponse:
    return render_team_page(request, template, team, context, is_lead=True, status=status)


def _form_page(
    request: HttpRequest, team: Team, form: WebhookForm, webhook: Webhook | None, status: int = 200
) -> HttpResponse:
    return _page(
        request, "notify/webhook_form.html", team, {"form": form, "webhook": webhook}, status
    )


@login_required
def webhook_list(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _lead_team(request, team_slug)
    webhooks = selectors.webhook_list(actor=request.user, team=team, staff_permission=NO_STAFF)
    return _page(
        request,
        "notify/webhook_list.html",
        team,
        {"webhooks": webhooks, "max_webhooks": services.webhooks.MAX_WEBHOOKS_PER_TEAM},
    )


@login_required
@require_http_methods(["GET", "POST"])
def webhook_create(request: HttpRequest, team_slug: str) -> HttpResponse:
    team = _lead_team(request, team_slug)
    if request.method == "GET":
        return _form_page(request, team, WebhookForm(initial={"event_types": ["*"]}), None)
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            created = services.webhook_create(
                actor=request.user,
                team=team,
                url=form.cleaned_data["url"],
                event_types=form.cleaned_data["event_types"],
            )
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            return redirect_to_secret(
                request,
                Pending(kind="webhook", object_id=created.webhook.pk, plaintext=created.secret),
                "notify:webhook_created",
                team_slug=team.slug,
                webhook_id=created.webhook.pk,
            )
    return _form_page(request, team, form, None, status=400)


@login_required
def webhook_created(
    request: HttpRequest, team_slug: str, webhook_id: int, once: str
) -> HttpResponse:
    """The new webhook's signing secret, once (keys.views.show_once); afterwards 410 Gone."""
    team = _lead_team(request, team_slug)
    webhook = _webhook(request, team, webhook_id)
    pending = take_secret(request, once, kind="webhook", object_id=webhook.pk)
    if pending is None:
        return no_store(
            _page(request, "notify/webhook_secret_gone.html", team, {"webhook": webhook}, 410)
        )
    return no_store(
        _page(
            request,
            "notify/webhook_created.html",
            team,
            {"webhook": webhook, "plaintext": pending.plaintext},
        )
    )


@login_required
def webhook_detail(request: HttpRequest, team_slug: str, webhook_id: int) -> HttpResponse:
    """The webhook and its delivery log, newest first, each delivery with its attempts."""
    team = _lead_team(request, team_slug)
    webhook = _webhook(request, team, webhook_id)
    deliveries = selectors.delivery_list(
        actor=request.user, webhook=webhook, staff_permission=NO_STAFF
    )
    return _page(
        request,
        "notify/webhook_detail.html",
        team,
        {
            "webhook": webhook,
            "deliveries": Paginator(deliveries, DELIVERIES_PER_PAGE).get_page(
                request.GET.get("page")
            ),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def webhook_edit(request: HttpRequest, team_slug: str, webhook_id: int) -> HttpResponse:
    team = _lead_team(request, team_slug)
    webhook = _webhook(request, team, webhook_id)
    if request.method == "GET":
        return _form_page(request, team, WebhookForm(webhook=webhook), webhook)
    form = WebhookForm(request.POST, webhook=webhook)
    if form.is_valid():
        try:
            services.webhook_update(actor=request.user, webhook=webhook, **form.cleaned_data)
        except ValidationError as error:
            form.add_service_errors(error)
        else:
            messages.success(request, _("Webhook %(name)s saved.") % {"name": webhook.name})
            return redirect("notify:webhook_detail", team_slug=team.slug, webhook_id=webhook.pk)
    return _form_page(request, team, form, webhook, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def webhook_delete(request: HttpRequest, team_slug: str, webhook_id: int) -> HttpResponse:
    team = _lead_team(request, team_slug)
    webhook = _webhook(request, team, webhook_id)
    if request.method == "POST":
        name = webhook.name
        services.webhook_delete(actor=request.user, webhook=webhook)
        messages.success(
            request, _("Webhook %(name)s deleted. Nothing more is posted to it.") % {"name": name}
        )
        return redirect("notify:webhooks", team_slug=team.slug)
    return _page(request, "notify/webhook_delete.html", team, {"webhook": webhook})


@login_required
@require_POST
def webhook_test(request: HttpRequest, team_slug: str, webhook_id: int) -> HttpResponse:
    team = _lead_team(request, team_slug)
    webhook = _webhook(request, team, webhook_id)
    try:
        delivery = services.webhook_test(actor=request.user, webhook=webhook)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request,
            _(
                "Test delivery %(uuid)s queued: it is posted within a minute. "
                "Reload this page to see how it went."
            )
            % {"uuid": delivery.uuid},
        )
    return redirect("notify:webhook_detail", team_slug=team.slug, webhook_id=webhook.pk)


@login_required
@require_POST
def delivery_redeliver(
    request: HttpRequest, team_slug: str, webhook_id: int, delivery_uuid: str
) -> HttpResponse:
    team = _lead_team(request, team_slug)
    webhook = _webhook(request, team, webhook_id)
    deliveries = selectors.delivery_list(
        actor=request.user, webhook=webhook, staff_permission=NO_STAFF
    )
    delivery: Delivery = get_object_or_404(deliveries, uuid=delivery_uuid)
    services.delivery_redeliver(actor=request.user, delivery=delivery)
    messages.success(
        request,
        _("Delivery %(uuid)s queued again: it is posted within a minute.")
        % {"uuid": delivery.uuid},
    )
    return redirect("notify:webhook_detail", team_slug=team.slug, webhook_id=webhook.pk)
