"""The admin page that shows new plaintexts (keys or a token), once."""

from django.contrib import admin
from django.db import models
from django.http import HttpRequest
from django.template.response import TemplateResponse

from keys.services import IssuedApiToken, IssuedKey

ISSUED_KEYS_TEMPLATE = "admin/keys/apikey/issued_keys.html"
ISSUED_TOKEN_TEMPLATE = "admin/keys/apitoken/issued_token.html"  # noqa: S105 (a template path)


def _issued_secrets_response(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    issued: list[IssuedKey] | list[IssuedApiToken],
    *,
    title: str,
    template: str,
) -> TemplateResponse:
    """The one admin response that carries new plaintexts (keys or a token).

    Rendered straight into this response, never put in the messages framework, whose session
    or cookie storage would keep the plaintext after the page is gone. The admin views already
    send no-store cache headers.
    """
    return TemplateResponse(
        request,
        template,
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "opts": model_admin.opts,
            "issued_secrets": issued,
        },
    )


class ShowIssuedSecretOnceMixin:
    """For a ModelAdmin whose add form creates through a service that returns the plaintext:
    the answer to the add is the page that shows it, once."""

    issued_title: str
    issued_template: str

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
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        # Lives only as long as this request: response_add shows it and nothing stores it.
        request.issued_secret = issued

    def response_add(self, request: HttpRequest, obj: models.Model, post_url_continue=None):
        issued = request.issued_secret
        del request.issued_secret
        return _issued_secrets_response(
            self, request, [issued], title=self.issued_title, template=self.issued_template
        )
