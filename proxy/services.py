"""Writes to channels and routes. Changing a group's routing drops its keys' cached state."""

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from keys.cache import invalidate_key_state
from keys.models import ApiKey, Group

from . import credentials
from .models import CREDENTIAL_MAX_LENGTH, Channel, Route


@transaction.atomic
def channel_save(*, channel: Channel, credential: str | None = None) -> Channel:
    """Create or change a channel. `credential` is the upstream key in clear, stored encrypted;
    "" removes it; None keeps the stored one (write-only field)."""
    if credential is not None:
        if len(credential) > CREDENTIAL_MAX_LENGTH:
            raise ValidationError(
                {
                    "credential": f"Ensure this value has at most {CREDENTIAL_MAX_LENGTH} "
                    f"characters (it has {len(credential)})."
                }
            )
        channel.encrypted_credential = credentials.encrypt(credential) if credential else ""
    elif channel.pk is not None:
        # "Keep" means the stored value, not whatever this instance holds: a stale instance
        # must not undo a credential someone else has just set.
        stored = (
            Channel.objects.select_for_update()
            .filter(pk=channel.pk)
            .values_list("encrypted_credential", flat=True)
            .first()
        )
        if stored is not None:
            channel.encrypted_credential = stored
    channel.full_clean()
    channel.save()
    _invalidate_groups(channel.routes.values_list("group_id", flat=True))
    return channel


@dataclass(frozen=True)
class Reencrypted:
    reencrypted: int
    already_current: int


@transaction.atomic
def channel_credentials_reencrypt() -> Reencrypted:
    """Re-encrypt every stored credential with the newest key of CHANNEL_CREDENTIAL_KEYS, the
    middle step of a key rotation. All or nothing: one credential no key decrypts stops it
    with UnreadableCredential naming every such channel, and nothing is written."""
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
            fresh = credentials.reencrypt(token, channel_name=name)
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
    for pk, token in updates.items():
        # update(), not save(): the credential in clear is unchanged, so the relay's workers
        # need not reload their channel tables (updated_at is the version they compare).
        Channel.objects.filter(pk=pk).update(encrypted_credential=token)
    return Reencrypted(reencrypted=len(updates), already_current=len(stored) - len(updates))


@transaction.atomic
def channel_upsert(
    *,
    name: str,
    provider: str,
    base_url: str = "",
    credential: str | None = None,
    is_active: bool = True,
    timeout_seconds: int | None = None,
    groups: Iterable[Group] | None = None,
) -> tuple[Channel, bool]:
    """Create or update the channel called `name`; with `groups`, route exactly those groups
    to it (appended after their existing channels). Returns (channel, created)."""
    channel = Channel.objects.filter(name=name).first()
    created = channel is None
    channel = channel or Channel(name=name)
    channel.provider = provider
    channel.base_url = base_url
    channel.is_active = is_active
    if timeout_seconds is not None:
        channel.timeout_seconds = timeout_seconds
    channel_save(channel=channel, credential=credential)
    if groups is not None:
        routes_set(channel=channel, groups=list(groups))
    return channel, created


@transaction.atomic
def routes_set(*, channel: Channel, groups: list[Group]) -> None:
    """Route exactly `groups` to `channel`; a new route goes after the group's other channels."""
    touched = set(channel.routes.values_list("group_id", flat=True))
    channel.routes.exclude(group__in=groups).delete()
    for group in groups:
        if not Route.objects.filter(group=group, channel=channel).exists():
            last = Route.objects.filter(group=group).order_by("-priority").first()
            Route.objects.create(
                group=group, channel=channel, priority=(last.priority + 10) if last else 100
            )
        touched.add(group.pk)
    _invalidate_groups(touched)


def route_changed(*, route: Route) -> None:
    """Call after a route is saved or deleted elsewhere (admin inline)."""
    _invalidate_groups([route.group_id])


def _invalidate_groups(group_ids: Iterable[int]) -> None:
    invalidate_key_state(
        ApiKey.objects.filter(group_id__in=list(group_ids)).values_list("digest", flat=True)
    )
