"""Writes to REST API tokens: create and revoke (one audit row each; tokens belong to no team),
and note when one was last used (bookkeeping, not audited)."""

import dataclasses
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from keys.models import ApiToken, AuditEvent

from .audit import audit_record
from .cleaning import _clean_name, _full_clean

# How stale a token's last_used_at may get: writing it on every API call would turn each read
# into a write, and "used in the last minute" is all anyone needs from it.
API_TOKEN_LAST_USED_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class IssuedApiToken:
    """A token and its plaintext: returned once by api_token_create, never stored."""

    token: ApiToken
    plaintext: str = dataclasses.field(repr=False)


@transaction.atomic(durable=True)
def api_token_create(*, user: User, name: str, actor: User | None) -> IssuedApiToken:
    """A new token for `user`, recorded as made by `actor` (None for the system)."""
    token, plaintext = _new_token(user=user, name=name, actor=actor)
    token.save()
    _record(
        token,
        AuditEvent.Action.TOKEN_CREATED,
        actor,
        {"user": [None, user.get_username()], "name": [None, token.name]},
    )
    return IssuedApiToken(token=token, plaintext=plaintext)


def api_token_validate(*, user: User, name: str) -> None:
    """Raise the ValidationError api_token_create would raise; writes nothing."""
    _new_token(user=user, name=name, actor=None)


def _new_token(*, user: User, name: str, actor: User | None) -> tuple[ApiToken, str]:
    token = ApiToken(user=user, created_by=actor)
    errors: dict[str, list[str]] = {}
    try:
        token.name = _clean_name(name)
    except ValidationError as error:
        errors["name"] = error.messages
    plaintext = token.set_new_secret()
    _full_clean(token, errors)
    return token, plaintext


@transaction.atomic(durable=True)
def api_token_revoke(*, token: ApiToken, actor: User | None) -> ApiToken:
    """Stop the token working at once. Revoking twice keeps the first time and writes one row."""
    if token.revoked_at is None:
        revoked_at = timezone.now()
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=revoked_at
        )
        if revoked:
            token.revoked_at = revoked_at
            _record(
                token,
                AuditEvent.Action.TOKEN_REVOKED,
                actor,
                {"revoked_at": [None, revoked_at.isoformat()]},
            )
        else:
            token.refresh_from_db(fields=["revoked_at"])
    return token


def _record(token: ApiToken, action: str, actor: User | None, changes: dict) -> None:
    audit_record(action=action, actor=actor, subject=token, changes=changes)


def api_token_mark_used(*, token: ApiToken) -> None:
    now = timezone.now()
    if (
        token.last_used_at is not None
        and (now - token.last_used_at).total_seconds() < API_TOKEN_LAST_USED_RESOLUTION_SECONDS
    ):
        return
    token.last_used_at = now
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
