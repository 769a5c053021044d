"""The admin page that shows new plaintexts (keys or a token) once, after a redirect.

The add form and the bulk rotate answer 303 to this page through the portal's one-time store
(keys.views.show_once), so no POST response carries a plaintext, a reload repeats a harmless
GET, and the page opens once, in the session that made the secrets. A later GET, another
staff member or another session gets 410 Gone with the way to a new secret.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_GET

from keys.services import IssuedApiToken, IssuedKey
from keys.views.show_once import GONE_MESSAGE, Pending, no_store, redirect_to_secrets, take_secrets

ISSUED_KEYS_TEMPLATE = "admin/keys/apikey/issued_keys.html"
ISSUED_TOKEN_TEMPLATE = "admin/keys/apitoken/issued_token.html"  # noqa: S105 (a template path)
ISSUED_GONE_TEMPLATE = "admin/keys/issued_gone.html"


@dataclass(frozen=True)
class ShownSecret:
    """One row of the page: the key or token, and its new plaintext."""

    object: models.Model
    plaintext: str = field(repr=False)


class ShowIssuedSecretOnceMixin:
    """For a ModelAdmin whose add form (and actions) issue plaintexts through the services:
    the answer is a redirect to the page `<changelist>/issued/<once>/`, which shows them once.
    """

    issued_kind: str  # show_once's kind: "key" or "token"
    issued_title: str
    rotated_title: str | None = None
    issued_template: str
    # What the "shown once" page advises, as the portal's page does.
    issued_gone_advice: str

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        # Before the admin's own URLs, whose `<path:object_id>/` would take this path.
        return [
            path(
                "issued/<str:once>/",
                self.admin_site.admin_view(require_GET(self.issued_view)),
                name="{}_{}_issued".format(*info),
            ),
            *super().get_urls(),
        ]

    def keep_issued(
        self,
        request: HttpRequest,
        obj: models.Model,
        issued: IssuedKey | IssuedApiToken,
        created: models.Model,
    ) -> None:
        """Called by save_model with what the service returned and the row it created."""
        # The admin goes on to log and answer with its own instance, so it becomes the row the
        # service created.
        for model_field in obj._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(created, model_field.attname))
        # Lives only as long as this request: response_add seals it for the one-time page.
        request.issued_secret = issued

    def response_add(self, request: HttpRequest, obj: models.Model, post_url_continue=None):
        issued = request.issued_secret
        del request.issued_secret
        return self.redirect_to_issued(
            request, [Pending(kind=self.issued_kind, object_id=obj.pk, plaintext=issued.plaintext)]
        )

    def redirect_to_issued(self, request: HttpRequest, pending: Sequence[Pending]) -> HttpResponse:
        """303 to the page that shows these secrets once."""
        info = self.admin_site.name, self.opts.app_label, self.opts.model_name
        return redirect_to_secrets(request, pending, "{}:{}_{}_issued".format(*info))

    def has_issue_permission(self, request: HttpRequest) -> bool:
        """Whoever may create or change these objects may be shown their new secrets."""
        return self.has_add_permission(request) or self.has_change_permission(request)

    def issued_view(self, request: HttpRequest, once: str) -> HttpResponse:
        if not self.has_issue_permission(request):
            raise PermissionDenied
        pending = take_secrets(request, once, kind=self.issued_kind)
        if pending is None:
            return no_store(
                TemplateResponse(
                    request,
                    ISSUED_GONE_TEMPLATE,
                    {
                        **self.admin_site.each_context(request),
                        "title": GONE_MESSAGE,
                        "opts": self.opts,
                        "advice": self.issued_gone_advice,
                    },
                    status=410,
                )
            )
        objects = self.get_queryset(request).in_bulk([each.object_id for each in pending])
        # A key deleted since its secret was issued has nothing left to authenticate.
        shown = [
            ShownSecret(object=objects[each.object_id], plaintext=each.plaintext)
            for each in pending
            if each.object_id in objects
        ]
        rotated = any(each.rotated for each in pending)
        return no_store(
            TemplateResponse(
                request,
                self.issued_template,
                {
                    **self.admin_site.each_context(request),
                    "title": self.rotated_title if rotated else self.issued_title,
                    "opts": self.opts,
                    "issued_secrets": shown,
                },
            )
        )
