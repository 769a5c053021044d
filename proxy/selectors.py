"""Reads of the relay's state for staff (the admin)."""

import logging

import redis
from django.conf import settings

from core.cache import cache_redis_client

from .store.channel_health import ChannelHealth, local_channel_health, read_redis

logger = logging.getLogger(__name__)


def channel_health_list(*, channel_ids: list[int]) -> dict[int, ChannelHealth] | None:
    """Each channel's circuit breaker state and recent error rate (proxy.breaker), as the relay
    shares it: in Redis, or in this process's memory on the embedded default. None when Redis
    cannot be read (the admin says so rather than failing)."""
    cooldown = settings.CHANNEL_COOLDOWN_SECONDS
    client = cache_redis_client() if settings.REDIS is not None else None
    if client is None:
        return local_channel_health.read(channel_ids, cooldown_seconds=cooldown)
    try:
        return read_redis(client, channel_ids, cooldown_seconds=cooldown)
    except redis.RedisError as error:
        logger.warning("Could not read the channels' health (%s)", error)
        return None
