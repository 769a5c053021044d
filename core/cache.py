"""The Redis behind Django's cache: the backend for Redis through Sentinel, and the client for
the few writes the cache API cannot make atomically."""

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class _SentinelCacheClient(RedisCacheClient):
    """Django's Redis cache client, its one connection pool found through Sentinel
    (settings.REDIS): each new connection asks the sentinels where the primary is, so the cache
    follows a failover without a restart."""

    def _get_connection_pool(self, write):
        if 0 not in self._pools:
            self._pools[0] = settings.REDIS.connection_pool(**self._pool_options)
        return self._pools[0]


class SentinelRedisCache(RedisCache):
    """CACHES' backend with REDIS_SENTINELS (core.redis_config.RedisConfig.django_cache); its
    LOCATION is the Sentinel service's name, for show: settings.REDIS says where Redis is."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _SentinelCacheClient


def cache_redis_client():
    """redis-py's client behind Django's Redis cache, or None for the local-memory cache.
    (Django keeps it in a private attribute; this is the one place that reaches for it.)"""
    backend = caches["default"]
    return backend._cache.get_client(write=True) if isinstance(backend, RedisCache) else None
