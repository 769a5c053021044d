"""The admin page that shows new plaintexts (keys or a token), once."""

from django.contrib import admin
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
