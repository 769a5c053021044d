"""Django's cache on a Redis Cluster: Django's own Redis backend with redis-py's cluster client.

    CACHES = {"default": {
        "BACKEND": "core.cache_cluster.RedisClusterCache",
        # Any of the cluster's nodes (one reachable is enough to learn the others), comma
        # separated; the first one's credentials and TLS (rediss://) are used for every node.
        "LOCATION": "redis://:password@10.0.0.1:6379,redis://:password@10.0.0.2:6379",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }}

A cluster has database 0 only: a URL naming another is refused. Each key's commands go to the
node serving its hash slot, and redis-py follows MOVED and ASK. Django's calls on several keys
(get_many, set_many, delete_many) span slots, so they are sent per slot, in one pipeline per
node, and are not atomic (neither is a Redis Cluster across slots). clear() empties every
primary. core.cache.cache_redis_client() returns the redis.cluster.RedisCluster.
"""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import SSLConnection, parse_url

# Options of a node's URL the cluster client takes as its own arguments (host and port become
# the startup nodes; the connection class is the URL's scheme).
_FROM_URL = {"username", "password", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}


class RedisClusterCacheClient(RedisCacheClient):
    def __init__(self, servers, serializer=None, pool_class=None, parser_class=None, **options):
        if pool_class is not None:
            raise ValueError("A Redis Cluster cache keeps a pool per node; pool_class is not used")
        super().__init__(servers, serializer=serializer, parser_class=parser_class, **options)
        self._startup_nodes, self._url_options = _cluster_nodes(servers)

    @cached_property
    def _cluster(self) -> RedisCluster:
        # One client per process: it keeps the slot map and a connection pool per node, and is
        # safe to share between threads.
        return RedisCluster(
            startup_nodes=self._startup_nodes, **self._url_options, **self._pool_options
        )

    def get_client(self, key=None, *, write=False):
        return self._cluster

    def get_many(self, keys):
        keys = list(keys)
        values = self._cluster.mget_nonatomic(keys)
        return {
            key: self._serializer.loads(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    def set_many(self, data, timeout):
        if timeout == 0:
            self.delete_many(list(data))
            return
        pipeline = self._cluster.pipeline()
        for key, value in data.items():
            pipeline.set(key, self._serializer.dumps(value), ex=timeout)
        pipeline.execute()

    def delete_many(self, keys):
        # redis-py's cluster client splits DEL by slot.
        keys = list(keys)
        if keys:
            self._cluster.delete(*keys)


class RedisClusterCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisClusterCacheClient


def _cluster_nodes(servers: list[str]) -> tuple[list[ClusterNode], dict]:
    """The startup nodes named by the LOCATION's URLs, and the first URL's credentials and TLS
    options as the cluster client's arguments."""
    nodes = []
    url_options: dict | None = None
    for server in servers:
        server = server.strip()
        if not server:
            continue
        options = parse_url(server)
        if "path" in options:
            raise ValueError(
                f"A Redis Cluster node is reached over TCP, not a Unix socket: {server!r}"
            )
        if int(options.get("db") or 0) != 0:
            raise ValueError(
                f"A Redis Cluster has only database 0; the cache's LOCATION names database "
                f"{options['db']}"
            )
        nodes.append(ClusterNode(options.get("host", "localhost"), options.get("port", 6379)))
        if url_options is None:
            url_options = {name: value for name, value in options.items() if name in _FROM_URL}
            if options.get("connection_class") is SSLConnection:
                url_options["ssl"] = True
    if not nodes:
        raise ValueError("A Redis Cluster cache needs at least one node in LOCATION")
    return nodes, url_options
