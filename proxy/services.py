"""Writes to channels and routes. Changing a group's routing drops its keys' cached state.

Each action writes one audit row (channels and groups belong to no team). A channel's
credential is write-only here too: its row says whether one was set, changed or removed,
never a value. `actor` is None when the system acts, as the management commands do.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.core.exceptions import ValidationError
from django.db import transaction

from core import credentials
from keys.cache import invalidate_key_state
from keys.models import ApiKey, AuditEvent, Group
from keys.services import audit_change, audit_record

from .models import CREDENTIAL_MAX_LENGTH, Channel, Route

# What a channel's audit row records besides its credential, which it only says changed.
CHANNEL_FIELDS = ("name", "provider", "base_url", "is_active", "timeout_seconds")
CREDENTIAL_SET, CREDENTIAL_UNSET, CREDENTIAL_CHANGED = "set", "not set", "changed"


@transaction.atomic(durable=True)
def channel_save(
    *, channel: Channel, credential: str | None = None, actor: User | None = None
) -> Channel:
    """Create or change a channel. `credential` is the upstream key in clear, stored encrypted;
    "" removes it; None keeps the stored one (write-only field)."""
    created, changes = _save(channel, credential)
    _record_channel(channel, created, changes, actor)
    return channel


def _save(channel: Channel, credential: str | None) -> tuple[bool, dict[str, list]]:
    """channel_save inside an action's transaction: returns (created, {field: [old, new]})."""
    if credential is not None and len(credential) > CREDENTIAL_MAX_LENGTH:
        raise ValidationError(
            {
                "credential": f"Ensure this value has at most {CREDENTIAL_MAX_LENGTH} "
                f"characters (it has {len(credential)})."
            }
        )
    # Locked, and the stored credential read here: "keep" means the stored value, not whatever
    # this instance holds, so a stale instance cannot undo a credential someone has just set.
    stored = (
        None
        if channel.pk is None
        else Channel.objects.select_for_update()
        .filter(pk=channel.pk)
        .values(*CHANNEL_FIELDS, "encrypted_credential")
        .first()
    )
    had_credential = bool(stored and stored["encrypted_credential"])
    if credential is not None:
        channel.encrypted_credential = credentials.encrypt(credential) if credential else ""
    elif stored is not None:
        channel.encrypted_credential = stored["encrypted_credential"]
    channel.full_clean()
    channel.save()
    changes = {
        field: [None if stored is None else stored[field], getattr(channel, field)]
        for field in CHANNEL_FIELDS
        if stored is None or stored[field] != getattr(channel, field)
    }
    if credential:
        changes["credential"] = (
            [CREDENTIAL_SET, CREDENTIAL_CHANGED]
            if had_credential
            else [CREDENTIAL_UNSET, CREDENTIAL_SET]
        )
    elif credential == "" and had_credential:
        changes["credential"] = [CREDENTIAL_SET, CREDENTIAL_UNSET]
    _invalidate_groups(channel.routes.values_list("group_id", flat=True))
    return stored is None, changes


def _record_channel(
    channel: Channel, created: bool, changes: dict[str, Any], actor: User | None
) -> None:
    if not (created or changes):
        return
    action = AuditEvent.Action.CHANNEL_CREATED if created else AuditEvent.Action.CHANNEL_UPDATED
    audit_record(action=action, actor=actor, subject=channel, changes=changes)


@transaction.atomic(durable=True)
def channel_delete(*, channel: Channel, actor: User | None) -> None:
    """Delete a channel and its routes; the groups that lost one are re-read by the relay."""
    group_ids = list(channel.routes.values_list("group_id", flat=True))
    audit_record(
        action=AuditEvent.Action.CHANNEL_DELETED,
        actor=actor,
        subject=channel,
        changes={"groups": [_group_names(group_ids), []]} if group_ids else {},
    )
    channel.delete()
    _invalidate_groups(group_ids)


@dataclass(frozen=True)
class Reencrypted:
    reencrypted: int
    already_current: int


@transaction.atomic(durable=True)
def channel_credentials_reencrypt() -> Reencrypted:
    """Re-encrypt every stored credential with the newest key of CHANNEL_CREDENTIAL_KEYS, the
    middle step of a key rotation. All or nothing: one credential no key decrypts stops it
    with UnreadableCredential naming every such channel, and nothing is written. The system
    acts: one audit row per channel re-encrypted, with no actor."""
    # Locked so that a credential set while this runs is not overwritten with the old one.
    stored = list(
        Channel.objects.select_for_update()
        .exclude(encrypted_credential="")
        .order_by("name")
        .values_list("pk", "name", "encrypted_credential")
    )
    updates: dict[int, str] = {}
    unreadable: list[str] = []
    for pk, name, token in stored:
        try:
            fresh = credentials.reencrypt(token, owner=f"Channel {name}")
        except credentials.UnreadableCredential:
            unreadable.append(name)
            continue
        if fresh is not None:
            updates[pk] = fresh
    if unreadable:
        raise credentials.UnreadableCredential(
            f"No key in {credentials.SETTING} decrypts the credential of "
            + ", ".join(unreadable)
            + ". Nothing was re-encrypted: put back the key they were encrypted with, or set "
            "new credentials for them."
        )
    for channel in Channel.objects.filter(pk__in=updates).order_by("name"):
        # update(), not save(): the credential in clear is unchanged, so the relay's workers
        # need not reload their channel tables (updated_at is the version they compare).
        Channel.objects.filter(pk=channel.pk).update(encrypted_credential=updates[channel.pk])
        audit_record(
            action=AuditEvent.Action.CHANNEL_CREDENTIALS_REENCRYPTED,
            actor=None,
            subject=channel,
            changes={"credential": [CREDENTIAL_SET, CREDENTIAL_CHANGED]},
        )
    return Reencrypted(reencrypted=len(updates), already_current=len(stored) - len(updates))


@transaction.atomic(durable=True)
def channel_upsert(
    *,
    name: str,
    provider: str,
    base_url: str = "",
    credential: str | None = None,
    is_active: bool = True,
    timeout_seconds: int | None = None,
    groups: Iterable[Group] | None = None,
    actor: User | None = None,
) -> tuple[Channel, bool]:
    """Create or update the channel called `name`; with `groups`, route exactly those groups
    to it (appended after their existing channels). Returns (channel, created). One audit row,
    its routes among its changes."""
    channel = Channel.objects.filter(name=name).first()
    channel = channel or Channel(name=name)
    channel.provider = provider
    channel.base_url = base_url
    channel.is_active = is_active
    if timeout_seconds is not None:
        channel.timeout_seconds = timeout_seconds
    created, changes = _save(channel, credential)
    if groups is not None:
        changes.update(_set_routes(channel, list(groups)))
    _record_channel(channel, created, changes, actor)
    return channel, created


@transaction.atomic(durable=True)
def routes_set(*, channel: Channel, groups: list[Group], actor: User | None = None) -> None:
    """Route exactly `groups` to `channel`; a new route goes after the group's other channels."""
    _record_channel(channel, False, _set_routes(channel, groups), actor)


def _set_routes(channel: Channel, groups: list[Group]) -> dict[str, list]:
    """routes_set inside an action's transaction: returns {"groups": [old, new]} if changed."""
    touched = set(channel.routes.values_list("group_id", flat=True))
    before = _group_names(touched)
    channel.routes.exclude(group__in=groups).delete()
    for group in groups:
        if not Route.objects.filter(group=group, channel=channel).exists():
            last = Route.objects.filter(group=group).order_by("-priority").first()
            Route.objects.create(
                group=group, channel=channel, priority=(last.priority + 10) if last else 100
            )
        touched.add(group.pk)
    _invalidate_groups(touched)
    after = sorted(group.name for group in groups)
    return {} if after == before else {"groups": [before, after]}


@transaction.atomic(durable=True)
def group_routes_set(
    *, group: Group, routes: list[tuple[Channel, int]], actor: User | None
) -> None:
    """Route `group` to exactly these (channel, priority) pairs: the admin's routes of a group.
    One audit row when they changed, each route as "channel:priority" in priority order."""
    before = _route_labels(group)
    group.routes.exclude(channel__in=[channel for channel, _priority in routes]).delete()
    for channel, priority in routes:
        Route.objects.update_or_create(
            group=group, channel=channel, defaults={"priority": priority}
        )
    audit_change(
        action=AuditEvent.Action.GROUP_ROUTES_CHANGED,
        actor=actor,
        subject=group,
        field="routes",
        before=before,
        after=_route_labels(group),
    )
    _invalidate_groups([group.pk])


def _route_labels(group: Group) -> list[str]:
    return [
        f"{name}:{priority}"
        for name, priority in group.routes.order_by("priority", "id").values_list(
            "channel__name", "priority"
        )
    ]


def _group_names(group_ids: Iterable[int]) -> list[str]:
    return sorted(Group.objects.filter(pk__in=list(group_ids)).values_list("name", flat=True))


def _invalidate_groups(group_ids: Iterable[int]) -> None:
    invalidate_key_state(
        ApiKey.objects.filter(group_id__in=list(group_ids)).values_list("digest", flat=True)
    )
