"""The relay's Redis client for the deployment's shape (settings.REDIS, core.redis_config): one
server or a primary found through Sentinel (proxy.redis_client.RedisClient), or a Redis Cluster
(proxy.redis_cluster.ClusterClient, one RedisClient per primary). Both have the same public
methods, so the store (proxy.store.redis) does not know which it has."""

from redis.connection import parse_url

from core.redis_config import Mode, RedisConfig

from .redis_client import RedisClient
from .redis_cluster import ClusterClient


def client_for(config: RedisConfig) -> RedisClient | ClusterClient:
    """The relay's client for the deployment's Redis (settings.REDIS)."""
    if config.mode is Mode.CLUSTER:
        # The URL's options as redis-py's parse_url reads them, the scheme's TLS included: each
        # node's URL is made from them (config.url_options() are redis-py's client arguments).
        return ClusterClient(list(config.cluster_nodes), url_options=parse_url(config.url))
    if config.mode is Mode.SENTINEL:
        return RedisClient(
            config.url,
            sentinels=config.sentinels,
            service=config.service,
            sentinel_password=config.sentinel_password,
        )
    return RedisClient(config.url)
