"""Every write to teams, memberships, groups and keys. Admin, portal, API, tasks and commands
call these; each key change writes exactly one KeyEvent and drops the relay's cached state.
"""

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.db import transaction
from django.utils import timezone

from .cache import invalidate_key_state
from .models import (
    API_TOKEN_DISPLAY_PREFIX_LENGTH,
    DISPLAY_PREFIX_LENGTH,
    ApiKey,
    ApiToken,
    Group,
    KeyEvent,
    Membership,
    Team,
    digest_key,
    generate_api_token,
    generate_key,
)
from .validators import normalise_rate_limit, parse_allowed_ips, parse_quota

# The settings a key's owner or lead may change, in the order forms show them.
EDITABLE_FIELDS = (
    "name",
    "group",
    "status",
    "allowed_ips",
    "quota_limit_usd",
    "rate_limit",
    "expires_at",
)


@dataclass(frozen=True)
class IssuedKey:
    """A key and its plaintext: the only place the plaintext exists, returned once."""

    key: ApiKey
    # Kept out of repr() so a log line, traceback or debugger showing the object cannot leak it.
    plaintext: str = dataclasses.field(repr=False)


# --- keys -----------------------------------------------------------------------------------


@transaction.atomic
def api_key_create(
    *,
    team: Team,
    owner: User,
    name: str,
    group: Group,
    actor: User | None,
    status: str = ApiKey.Status.ENABLED,
    allowed_ips: str | list[str] | None = None,
    quota_limit_usd: str | int | Decimal | None = 0,
    rate_limit: str | None = "",
    expires_at: datetime | None = None,
) -> IssuedKey:
    key = ApiKey(team=team, owner=owner, created_by=actor)
    errors = _assign(
        key,
        {
            "name": name,
            "group": group,
            "status": status,
            "allowed_ips": allowed_ips,
            "quota_limit_usd": quota_limit_usd,
            "rate_limit": rate_limit,
            "expires_at": expires_at,
        },
        creating=True,
    )
    if not Membership.objects.filter(team=team, user=owner).exists():
        errors.setdefault("owner", []).append(f"{owner} is not a member of team {team}.")
    # The digest is a required field, so the secret must exist before the model's checks run.
    plaintext = _set_new_secret(key)
    _full_clean(key, errors)
    key.save()
    _record(
        key,
        actor,
        KeyEvent.Action.CREATED,
        {field: [None, _audit_value(getattr(key, field))] for field in EDITABLE_FIELDS},
    )
    return IssuedKey(key=key, plaintext=plaintext)


@transaction.atomic
def api_key_update(*, key: ApiKey, actor: User | None, **changes: Any) -> ApiKey:
    """Change any of EDITABLE_FIELDS. Unchanged values write nothing; a change writes one event."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"api_key_update() got fields it cannot change: {sorted(unknown)}")
    before = {field: _audit_value(getattr(key, field)) for field in EDITABLE_FIELDS}
    was_enabled = key.status == ApiKey.Status.ENABLED
    errors = _assign(key, changes, creating=False, was_enabled=was_enabled)
    try:
        _full_clean(key, errors)
    except ValidationError:
        key.refresh_from_db()
        raise
    diff = {
        field: [before[field], _audit_value(getattr(key, field))]
        for field in EDITABLE_FIELDS
        if before[field] != _audit_value(getattr(key, field))
    }
    if not diff:
        return key
    key.save(update_fields=[*diff, "updated_at"])
    if set(diff) == {"status"}:
        action = (
            KeyEvent.Action.ENABLED
            if key.status == ApiKey.Status.ENABLED
            else KeyEvent.Action.DISABLED
        )
    else:
        action = KeyEvent.Action.UPDATED
    _record(key, actor, action, diff)
    invalidate_key_state([key.digest])
    return key


def api_key_enable(*, key: ApiKey, actor: User | None) -> ApiKey:
    return api_key_update(key=key, actor=actor, status=ApiKey.Status.ENABLED)


def api_key_disable(*, key: ApiKey, actor: User | None) -> ApiKey:
    return api_key_update(key=key, actor=actor, status=ApiKey.Status.DISABLED)


@transaction.atomic
def api_key_expire(*, key: ApiKey) -> bool:
    """The system turns an expired, still-enabled key off. Returns whether it did anything."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.status != ApiKey.Status.ENABLED or not locked.is_expired():
        return False
    locked.status = ApiKey.Status.DISABLED
    locked.save(update_fields=["status", "updated_at"])
    key.status = locked.status
    _record(
        locked,
        None,
        KeyEvent.Action.EXPIRED,
        {"status": [ApiKey.Status.ENABLED.value, ApiKey.Status.DISABLED.value]},
    )
    invalidate_key_state([locked.digest])
    return True


@transaction.atomic
def api_key_rotate(*, key: ApiKey, actor: User | None) -> IssuedKey:
    """Replace the secret; the old one stops working at once. Settings and spend stay."""
    old_digest, old_prefix = key.digest, key.prefix
    plaintext = _set_new_secret(key)
    key.save(update_fields=["digest", "prefix", "updated_at"])
    _record(key, actor, KeyEvent.Action.ROTATED, {"prefix": [old_prefix, key.prefix]})
    invalidate_key_state([old_digest])
    return IssuedKey(key=key, plaintext=plaintext)


@transaction.atomic
def api_key_delete(*, key: ApiKey, actor: User | None) -> None:
    """Delete the key; its audit trail stays (the events keep its name and prefix)."""
    _record(key, actor, KeyEvent.Action.DELETED, {})
    invalidate_key_state([key.digest])
    key.delete()


def _set_new_secret(key: ApiKey) -> str:
    plaintext = generate_key()
    key.digest = digest_key(plaintext)
    key.prefix = plaintext[:DISPLAY_PREFIX_LENGTH]
    return plaintext


def _assign(
    key: ApiKey, changes: dict[str, Any], *, creating: bool, was_enabled: bool = False
) -> dict[str, list[str]]:
    """Normalise user input onto the key; return the errors of the fields that did not convert."""
    errors: dict[str, list[str]] = {}

    def check(field: str, convert):
        try:
            setattr(key, field, convert(changes[field]))
        except ValidationError as error:
            errors.setdefault(field, []).extend(error.messages)

    if "name" in changes:
        check("name", _clean_name)
    # A key may keep the group it has even after staff retire that group: only a change of
    # group is checked, so such keys stay editable.
    if "group" in changes and (creating or changes["group"] != key.group):
        check("group", lambda group: _check_group(group, key.team))
    if "status" in changes:
        check("status", lambda value: value)
    if "allowed_ips" in changes:
        check("allowed_ips", parse_allowed_ips)
    if "quota_limit_usd" in changes:
        check("quota_limit_usd", parse_quota)
    if "rate_limit" in changes:
        check("rate_limit", normalise_rate_limit)
    if "expires_at" in changes:
        previous = key.expires_at
        check("expires_at", lambda value: _check_expiry(value, previous, creating=creating))
    if (
        "status" not in errors
        and "expires_at" not in errors
        and key.status == ApiKey.Status.ENABLED
        and (creating or not was_enabled)
        and key.is_expired()
    ):
        errors["expires_at"] = [
            "This key expired on "
            f"{timezone.localtime(key.expires_at):%Y-%m-%d %H:%M %Z}. "
            "Clear or extend Key expiration to enable it."
        ]
    return errors


def _full_clean(key: ApiKey, errors: dict[str, list[str]]) -> None:
    """Run the model's checks on the fields that converted, so that one submission shows
    every field's error at once rather than one per attempt."""
    try:
        key.full_clean(exclude=set(errors))
    except ValidationError as error:
        for field_name, messages in error.message_dict.items():
            errors.setdefault(field_name, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def _clean_name(value: str | None) -> str:
    name = (value or "").strip()
    # PostgreSQL cannot store NUL in text; without this the database would answer with a 500.
    ProhibitNullCharactersValidator()(name)
    return name


def _check_group(group: Group | None, team: Team) -> Group:
    if group is None:
        raise ValidationError("Choose a group.")
    if not group.is_active:
        raise ValidationError(f"Group “{group.name}” is not active.")
    if not team.available_groups().filter(pk=group.pk).exists():
        raise ValidationError(f"Group “{group.name}” is not available to team {team.name}.")
    return group


def _check_expiry(
    value: datetime | None, previous: datetime | None, *, creating: bool
) -> datetime | None:
    if value is None:
        return None
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    unchanged = not creating and previous is not None and value == previous
    if not unchanged and value <= timezone.now():
        raise ValidationError("Key expiration must be in the future. Leave it empty for never.")
    return value


def _audit_value(value: Any) -> Any:
    """A JSON-safe form of a field value for the audit trail (never a secret)."""
    if isinstance(value, Group):
        return value.name
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        # In UTC, so the same instant given in another time zone does not count as a change.
        return value.astimezone(UTC).isoformat()
    if isinstance(value, list):
        return list(value)
    return value


def _record(key: ApiKey, actor: User | None, action: str, changes: dict[str, list]) -> KeyEvent:
    return KeyEvent.objects.create(
        key=key,
        team_id=key.team_id,
        key_name=key.name,
        key_prefix=key.prefix,
        actor=actor,
        action=action,
        changes=changes,
    )


# --- teams and members ----------------------------------------------------------------------


@transaction.atomic
def membership_add(*, team: Team, user: User, role: str, actor: User | None) -> Membership:
    if Membership.objects.filter(team=team, user=user).exists():
        raise ValidationError({"user": f"{user} is already a member of {team.name}."})
    membership = Membership(team=team, user=user, role=role)
    membership.full_clean(validate_constraints=False)
    membership.save()
    return membership


@transaction.atomic
def membership_set_role(*, membership: Membership, role: str, actor: User | None) -> Membership:
    if role == membership.role:
        return membership
    if membership.role == Membership.Role.LEAD:
        _keep_a_lead(membership, "change the role of")
    membership.role = role
    membership.full_clean(validate_constraints=False)
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: User | None) -> int:
    """Remove a member. Their keys in the team are disabled (audited), never deleted.

    Returns how many keys were disabled.
    """
    if membership.role == Membership.Role.LEAD:
        _keep_a_lead(membership, "remove")
    keys = ApiKey.objects.filter(
        team=membership.team, owner=membership.user, status=ApiKey.Status.ENABLED
    )
    disabled = 0
    for key in keys.select_for_update():
        api_key_disable(key=key, actor=actor)
        disabled += 1
    membership.delete()
    return disabled


def _keep_a_lead(membership: Membership, verb: str) -> None:
    # Locking the team's lead rows stops two leads who demote or remove each other at the same
    # time from both seeing the other one as the remaining lead.
    lead_ids = set(
        Membership.objects.select_for_update()
        .filter(team_id=membership.team_id, role=Membership.Role.LEAD)
        .values_list("pk", flat=True)
    )
    if not lead_ids - {membership.pk}:
        raise ValidationError(
            {"role": f"Cannot {verb} the last lead of {membership.team.name}: add another first."}
        )


@transaction.atomic
def team_set_allowed_groups(*, team: Team, groups: list[Group]) -> Team:
    team.allowed_groups.set(groups)
    invalidate_key_state(team.api_keys.values_list("digest", flat=True))
    return team


# --- groups ---------------------------------------------------------------------------------


@transaction.atomic
def group_save(*, group: Group) -> Group:
    """Create or change a group; keys using it obey the new models and multiplier at once."""
    group.full_clean()
    group.save()
    invalidate_key_state(group.api_keys.values_list("digest", flat=True))
    return group


# --- API tokens -----------------------------------------------------------------------------

# How stale a token's last_used_at may get: writing it on every API call would turn each read
# into a write, and "used in the last minute" is all anyone needs from it.
API_TOKEN_LAST_USED_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class IssuedApiToken:
    """A token and its plaintext: returned once by api_token_create, never stored."""

    token: ApiToken
    plaintext: str = dataclasses.field(repr=False)


@transaction.atomic
def api_token_create(*, user: User, name: str) -> IssuedApiToken:
    token = ApiToken(user=user)
    errors: dict[str, list[str]] = {}
    try:
        token.name = _clean_name(name)
    except ValidationError as error:
        errors["name"] = error.messages
    plaintext = generate_api_token()
    token.digest = digest_key(plaintext)
    token.prefix = plaintext[:API_TOKEN_DISPLAY_PREFIX_LENGTH]
    try:
        token.full_clean(exclude=set(errors))
    except ValidationError as error:
        for field_name, messages in error.message_dict.items():
            errors.setdefault(field_name, []).extend(messages)
    if errors:
        raise ValidationError(errors)
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
