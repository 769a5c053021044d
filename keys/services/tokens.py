"""Writes to REST API tokens: create, revoke, and note when one was last used."""

import dataclasses
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from keys.models import ApiToken

from .cleaning import _clean_name, _full_clean

# How stale a token's last_used_at may get: writing it on every API call would turn each read
# into a write, and "used in the last minute" is all anyone needs from it.
API_TOKEN_LAST_USED_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class IssuedApiToken:
    """A token and its plaintext: returned once by api_token_create, never stored."""

    token: ApiToken
    plaintext: str = dataclasses.field(repr=False)


@transaction.atomic
def api_token_create(*, user: User, name: str, actor: User | None) -> IssuedApiToken:
    """A new token for `user`, recorded as made by `actor` (None for the system)."""
    token = ApiToken(user=user, created_by=actor)
    errors: dict[str, list[str]] = {}
    try:
        token.name = _clean_name(name)
    except ValidationError as error:
        errors["name"] = error.messages
    plaintext = token.set_new_secret()
    _full_clean(token, errors)
    token.save()
    return IssuedApiToken(token=token, plaintext=plaintext)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Stop the token working at once. Revoking twice keeps the first time."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=token.revoked_at
        )
    return token


def api_token_mark_used(*, token: ApiToken) -> None:
    now = timezone.now()
    if (
        token.last_used_at is not None
        and (now - token.last_used_at).total_seconds() < API_TOKEN_LAST_USED_RESOLUTION_SECONDS
    ):
        return
    token.last_used_at = now
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
