"""Writes to API keys: create, change, enable/disable, expire, rotate, delete.

Each change writes exactly one audit row and drops the relay's cached state of the key.
api_key_validate answers what create or update would refuse, writing nothing, for the
interfaces that show errors before saving (the admin).
"""

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from keys import policy
from keys.cache import invalidate_key_state
from keys.models import ApiKey, AuditEvent, Group, Membership, Team
from keys.selectors import staff_may
from keys.validators import (
    DAILY_LIMIT_WORDS,
    MONTHLY_LIMIT_WORDS,
    WEEKLY_LIMIT_WORDS,
    normalise_rate_limit,
    parse_allowed_ips,
    parse_max_concurrency,
    parse_quota,
    parse_usd_limit,
)

from .audit import audit_record
from .cleaning import _clean_name, _full_clean

# The settings a key's owner or lead may change, in the order forms show them.
EDITABLE_FIELDS = (
    "name",
    "group",
    "status",
    "allowed_ips",
    "quota_limit_usd",
    "rate_limit",
    "expires_at",
    "daily_limit_usd",
    "weekly_limit_usd",
    "monthly_limit_usd",
    "max_concurrency",
)

# A key's spend windows and the words their messages use. A daily limit above the weekly or
# monthly one is allowed: it is simply never the limit that binds.
WINDOW_LIMITS = {
    "daily_limit_usd": DAILY_LIMIT_WORDS,
    "weekly_limit_usd": WEEKLY_LIMIT_WORDS,
    "monthly_limit_usd": MONTHLY_LIMIT_WORDS,
}


class _TeamDefault:
    def __repr__(self) -> str:
        return "TEAM_DEFAULT"


# What api_key_create gives a setting it was not given: the team's default (Team.default_*).
TEAM_DEFAULT: Any = _TeamDefault()

# The settings a team's defaults cover, and where a member's new key starts.
DEFAULTED_FIELDS = ("group", "quota_limit_usd", "rate_limit", "expires_at")


@dataclass(frozen=True)
class IssuedKey:
    """A key and its plaintext: the only place the plaintext exists, returned once."""

    key: ApiKey
    # Kept out of repr() so a log line, traceback or debugger showing the object cannot leak it.
    plaintext: str = dataclasses.field(repr=False)


@transaction.atomic(durable=True)
def api_key_create(
    *,
    team: Team,
    owner: User,
    name: str,
    actor: User | None,
    group: Group | None = TEAM_DEFAULT,
    status: str = ApiKey.Status.ENABLED,
    allowed_ips: str | list[str] | None = None,
    quota_limit_usd: str | int | Decimal | None = TEAM_DEFAULT,
    rate_limit: str | None = TEAM_DEFAULT,
    expires_at: datetime | None = TEAM_DEFAULT,
    daily_limit_usd: str | int | Decimal | None = None,
    weekly_limit_usd: str | int | Decimal | None = None,
    monthly_limit_usd: str | int | Decimal | None = None,
    max_concurrency: str | int | None = None,
) -> IssuedKey:
    """A new key of `owner` in `team`. Group and restrictions not given start at the team's
    defaults; a member creating a key for themselves may only tighten those (keys.policy)."""
    key, plaintext = _new_key(
        team=team,
        owner=owner,
        actor=actor,
        settings={
            "name": name,
            "group": group,
            "status": status,
            "allowed_ips": allowed_ips,
            "quota_limit_usd": quota_limit_usd,
            "rate_limit": rate_limit,
            "expires_at": expires_at,
            "daily_limit_usd": daily_limit_usd,
            "weekly_limit_usd": weekly_limit_usd,
            "monthly_limit_usd": monthly_limit_usd,
            "max_concurrency": max_concurrency,
        },
    )
    if key.status == ApiKey.Status.DISABLED:
        key.disabled_by = _disabler(_role(actor, team, staff_permission="keys.add_apikey"))
    key.save()
    _record(
        key,
        actor,
        AuditEvent.Action.KEY_CREATED,
        {field: [None, _audit_value(getattr(key, field))] for field in EDITABLE_FIELDS},
    )
    return IssuedKey(key=key, plaintext=plaintext)


def api_key_validate(
    *,
    key: ApiKey | None = None,
    team: Team | None = None,
    owner: User | None = None,
    actor: User | None = None,
    **changes: Any,
) -> None:
    """Raise the ValidationError api_key_create (no `key`: give `team`, `owner` and every
    setting) or api_key_update (`key` and the changed settings) would raise for `actor` (None:
    the system, whom keys.policy does not limit). Writes nothing and leaves `key` as it was."""
    if key is None:
        _new_key(team=team, owner=owner, actor=actor, settings=changes)
    else:
        _changed_settings(copy.copy(key), changes, actor=actor)


def _new_key(
    *, team: Team, owner: User, actor: User | None, settings: dict[str, Any]
) -> tuple[ApiKey, str]:
    """An unsaved, checked key and its plaintext; raises ValidationError with every field's
    errors at once, or keys.policy's refusal before any of them."""
    key = ApiKey(team=team, owner=owner, created_by=actor)
    defaults = team_key_defaults(team)
    settings = {
        field: defaults[field] if value is TEAM_DEFAULT else value
        for field, value in settings.items()
    }
    errors = _assign(key, settings, creating=True)
    role = _role(actor, team, staff_permission="keys.add_apikey")
    if role.restricted:
        refused = _creation_refusals(team=team, owner=owner, actor=actor)
        refused |= policy.refusals(
            role=role,
            current=defaults,
            requested={
                field: getattr(key, field)
                for field in DEFAULTED_FIELDS
                if field in settings and field not in errors
            },
            creating=True,
        )
        if refused:
            raise policy.refusal_error(refused)
    if not Membership.objects.filter(team=team, user=owner).exists():
        errors.setdefault("owner", []).append(f"{owner} is not a member of team {team}.")
    # The digest is a required field, so the secret must exist before the model's checks run.
    plaintext = key.set_new_secret()
    _full_clean(key, errors)
    return key, plaintext


@transaction.atomic(durable=True)
def api_key_update(*, key: ApiKey, actor: User | None, **changes: Any) -> ApiKey:
    """Change any of EDITABLE_FIELDS. Unchanged values write nothing; a change writes one event."""
    return _update(key=key, actor=actor, changes=changes)


@transaction.atomic(durable=True)
def api_key_enable(*, key: ApiKey, actor: User | None) -> ApiKey:
    return _update(key=key, actor=actor, changes={"status": ApiKey.Status.ENABLED})


@transaction.atomic(durable=True)
def api_key_disable(*, key: ApiKey, actor: User | None) -> ApiKey:
    return _disable(key=key, actor=actor)


def _disable(*, key: ApiKey, actor: User | None) -> ApiKey:
    """api_key_disable inside another action's transaction (a member's removal)."""
    return _update(key=key, actor=actor, changes={"status": ApiKey.Status.DISABLED})


def _update(*, key: ApiKey, actor: User | None, changes: dict[str, Any]) -> ApiKey:
    try:
        diff = _changed_settings(key, changes, actor=actor)
    except ValidationError:
        key.refresh_from_db()
        raise
    if not diff:
        return key
    update_fields = [*diff, "updated_at"]
    if "status" in diff:
        disabled = key.status == ApiKey.Status.DISABLED
        key.disabled_by = _disabler(_role(actor, key.team)) if disabled else ""
        update_fields.append("disabled_by")
    key.save(update_fields=update_fields)
    if set(diff) == {"status"}:
        action = (
            AuditEvent.Action.KEY_ENABLED
            if key.status == ApiKey.Status.ENABLED
            else AuditEvent.Action.KEY_DISABLED
        )
    else:
        action = AuditEvent.Action.KEY_UPDATED
    _record(key, actor, action, diff)
    invalidate_key_state([key.digest])
    return key


def _changed_settings(
    key: ApiKey, changes: dict[str, Any], *, actor: User | None
) -> dict[str, list]:
    """Put `changes` on `key` (unsaved) and check them, keys.policy's refusals first; return
    {field: [old, new]} of what differs. Raises ValidationError with every field's errors,
    leaving `key` half-changed."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"api_key_update() got fields it cannot change: {sorted(unknown)}")
    before = {field: _audit_value(getattr(key, field)) for field in EDITABLE_FIELDS}
    current = {field: getattr(key, field) for field in EDITABLE_FIELDS}
    was_enabled = key.status == ApiKey.Status.ENABLED
    errors = _assign(key, changes, creating=False, was_enabled=was_enabled)
    refused = policy.refusals(
        role=_role(actor, key.team),
        current=current,
        requested={
            field: getattr(key, field)
            for field in changes
            if field not in errors and _audit_value(getattr(key, field)) != before[field]
        },
        disabled_by=key.disabled_by,
    )
    if refused:
        raise policy.refusal_error(refused)
    _full_clean(key, errors)
    return {
        field: [before[field], _audit_value(getattr(key, field))]
        for field in EDITABLE_FIELDS
        if before[field] != _audit_value(getattr(key, field))
    }


def api_key_expire(*, key: ApiKey) -> bool:
    """The system turns an expired, still-enabled key off. Returns whether it did anything."""
    return _system_disable(key, AuditEvent.Action.KEY_EXPIRED, only_if=ApiKey.is_expired)


def api_key_disable_for_spend_spike(*, key: ApiKey) -> bool:
    """The system turns off an enabled key that spent more than its team's spike limit in a
    few minutes (the caller, notify's guard, decides that). Recorded as the expiry is: actor
    None, the reason in the action ("key.spend_spike"). Returns whether it did anything, so a
    key is disabled once: one already disabled is left alone."""
    return _system_disable(key, AuditEvent.Action.KEY_SPEND_SPIKE)


@transaction.atomic(durable=True)
def _system_disable(
    key: ApiKey, action: str, *, only_if: Callable[[ApiKey], bool] | None = None
) -> bool:
    """Disable an enabled key for the system (actor None), the reason being `action`, when
    `only_if` (checked on the locked row) holds; whether it did anything."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.status != ApiKey.Status.ENABLED or (only_if is not None and not only_if(locked)):
        return False
    locked.status = ApiKey.Status.DISABLED
    locked.disabled_by = ApiKey.DisabledBy.SYSTEM
    locked.save(update_fields=["status", "disabled_by", "updated_at"])
    key.status, key.disabled_by = locked.status, locked.disabled_by
    _record(
        locked,
        None,
        action,
        {"status": [ApiKey.Status.ENABLED.value, ApiKey.Status.DISABLED.value]},
    )
    invalidate_key_state([locked.digest])
    return True


@transaction.atomic(durable=True)
def api_key_rotate(*, key: ApiKey, actor: User | None) -> IssuedKey:
    """Replace the secret; the old one stops working at once. Settings and spend stay."""
    old_digest, old_prefix = key.digest, key.prefix
    plaintext = key.set_new_secret()
    key.save(update_fields=["digest", "prefix", "updated_at"])
    _record(key, actor, AuditEvent.Action.KEY_ROTATED, {"prefix": [old_prefix, key.prefix]})
    invalidate_key_state([old_digest])
    return IssuedKey(key=key, plaintext=plaintext)


@transaction.atomic(durable=True)
def api_key_delete(*, key: ApiKey, actor: User | None) -> None:
    """Delete the key; its audit trail stays (the events keep its name and prefix).

    The row is locked first: an ingest writing this key's usage holds it (KEY SHARE) until it
    commits, so the deletion then finds those rows and empties their key, instead of failing on
    the foreign key at commit."""
    ApiKey.objects.select_for_update().filter(pk=key.pk).first()
    _record(key, actor, AuditEvent.Action.KEY_DELETED, {})
    invalidate_key_state([key.digest])
    key.delete()


def team_key_defaults(team: Team, now: datetime | None = None) -> dict[str, Any]:
    """Where a new key of `team` starts when a setting is not given: the team's defaults."""
    expires_at = None
    if team.default_expiry_days:
        expires_at = (now or timezone.now()) + timedelta(days=team.default_expiry_days)
    return {
        "group": team.default_group,
        "quota_limit_usd": team.default_quota_limit_usd,
        "rate_limit": team.default_rate_limit,
        "expires_at": expires_at,
    }


def api_key_actor_role(*, actor: User | None, team: Team, creating: bool = False) -> policy.Role:
    """What keys.policy holds `actor` to on `team`'s keys, for the forms that show a member's
    limits before anything is sent."""
    return _role(
        actor, team, staff_permission="keys.add_apikey" if creating else "keys.change_apikey"
    )


def _role(
    actor: User | None, team: Team, staff_permission: str | None = "keys.change_apikey"
) -> policy.Role:
    """The actor's role in keys.policy: staff with the permission of the action at hand are
    not limited by it, and neither is the system (no actor)."""
    if actor is None:
        return policy.Role.SYSTEM
    if staff_may(actor=actor, permission=staff_permission):
        return policy.Role.STAFF
    if Membership.objects.filter(team=team, user=actor, role=Membership.Role.LEAD).exists():
        return policy.Role.LEAD
    return policy.Role.MEMBER


def _disabler(role: policy.Role) -> str:
    return {
        policy.Role.MEMBER: ApiKey.DisabledBy.OWNER,
        policy.Role.LEAD: ApiKey.DisabledBy.LEAD,
        policy.Role.STAFF: ApiKey.DisabledBy.STAFF,
        policy.Role.SYSTEM: ApiKey.DisabledBy.SYSTEM,
    }[role]


def _creation_refusals(*, team: Team, owner: User, actor: User) -> dict[str, str]:
    """What a member may not do when creating a key, besides its settings (keys.policy)."""
    if not team.members_can_create_keys:
        return {
            NON_FIELD_ERRORS: _(
                "Only the leads of %(team)s create keys in this team; ask one to create a key "
                "for you."
            )
            % {"team": team.name}
        }
    if owner != actor:
        return {
            "owner": _("Only a lead of %(team)s can create keys for others.") % {"team": team.name}
        }
    return {}


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
    for field, words in WINDOW_LIMITS.items():
        if field in changes:
            check(field, lambda value, words=words: parse_usd_limit(value, words))
    if "max_concurrency" in changes:
        check("max_concurrency", parse_max_concurrency)
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
            _("This key expired on %(when)s. Clear or extend Key expiration to enable it.")
            % {"when": f"{timezone.localtime(key.expires_at):%Y-%m-%d %H:%M %Z}"}
        ]
    return errors


def _check_group(group: Group | None, team: Team) -> Group:
    if group is None:
        raise ValidationError(_("Choose a group."))
    if not group.is_active:
        raise ValidationError(_("Group “%(group)s” is not active.") % {"group": group.name})
    if not team.available_groups().filter(pk=group.pk).exists():
        raise ValidationError(
            _("Group “%(group)s” is not available to team %(team)s.")
            % {"group": group.name, "team": team.name}
        )
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
        raise ValidationError(_("Key expiration must be in the future. Leave it empty for never."))
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


def _record(key: ApiKey, actor: User | None, action: str, changes: dict[str, list]) -> None:
    audit_record(action=action, actor=actor, subject=key, changes=changes)
