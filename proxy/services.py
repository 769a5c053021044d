"""Writes to channels and routes. Changing a group's routing drops its keys' cached state."""

from collections.abc import Iterable

from django.db import transaction

from keys.cache import invalidate_key_state
from keys.models import ApiKey, Group

from .models import Channel, Route


@transaction.atomic
def channel_save(*, channel: Channel, credential: str | None = None) -> Channel:
    """Create or change a channel. `credential=None` keeps the stored one (write-only field)."""
    if credential is not None:
        channel.credential = credential
    elif channel.pk is not None:
        # "Keep" means the stored value, not whatever this instance holds: a stale instance or
        # a form that blanked the field must not undo a credential someone else has just set.
        stored = (
            Channel.objects.select_for_update()
            .filter(pk=channel.pk)
            .values_list("credential", flat=True)
            .first()
        )
        if stored is not None:
            channel.credential = stored
    channel.full_clean()
    channel.save()
    _invalidate_groups(channel.routes.values_list("group_id", flat=True))
    return channel


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
