"""The Redis behind Django's cache, for the few writes the cache API cannot make atomically."""

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache


def cache_redis_client():
    """redis-py's client behind Django's Redis cache, or None for the local-memory cache.
    (Django keeps it in a private attribute; this is the one place that reaches for it.)"""
    backend = caches["default"]
    return backend._cache.get_client(write=True) if isinstance(backend, RedisCache) else None
