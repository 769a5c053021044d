"""Where Redis is: the Redis settings read once (settings.REDIS), and the clients every Redis
user builds from them.

Three shapes, chosen by which settings are set (None, the embedded default, when none is):

  - one server: REDIS_URL, redis://, rediss:// (TLS) or unix://;
  - Sentinel: REDIS_SENTINELS=host:port,host:port and REDIS_SENTINEL_SERVICE=<the name the
    sentinels monitor the primary by>. The sentinels tell where the primary is, so REDIS_URL
    (optional here) names no host: it only carries how to talk to the primary, the scheme
    (rediss:// for TLS, with redis-py's ssl_* options), the username and password and the
    database: `rediss://:secret@/2?ssl_ca_certs=/etc/redis/ca.pem`. A host in it is refused
    rather than silently ignored. REDIS_SENTINEL_PASSWORD, when the sentinels require one
    (`requirepass` in sentinel.conf); the sentinels are reached without TLS;
  - Cluster: REDIS_CLUSTER_NODES=host:port,... (some of the cluster's nodes; the rest are
    discovered), REDIS_URL again only for scheme, credentials and TLS options (database 0).

Every Redis user asks this object: the relay's async client (proxy.redis_connect.client_for),
redis-py's sync client for the ingester, the ledger, the metrics and /readyz (`sync_client`),
Django's cache (`django_cache`) and Celery's broker (`celery_broker`). So TLS options and
credentials are given once and reach all of them.

This module is imported by the settings: it needs redis-py and nothing of Django's but the
ImproperlyConfigured error.
"""

import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

# A Redis that stops answering fails a portal or API request, or a Celery task's Redis call,
# in seconds instead of hanging it (redis-py waits for ever by default).
SOCKET_TIMEOUT_SECONDS = 2

SCHEMES = ("redis", "rediss", "unix")
# redis-py's URL options for TLS (redis.connection.SSLConnection), all honoured by the relay's
# own client too (proxy.redis_client).
TLS_OPTIONS = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_check_hostname",
)
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class Mode(StrEnum):
    SINGLE = "single"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


Address = tuple[str, int]


@dataclass(frozen=True)
class RedisConfig:
    """The deployment's Redis, as the settings give it (see the module's docstring)."""

    mode: Mode
    # SINGLE: the server's URL. SENTINEL and CLUSTER: a URL without host ("redis://" when
    # REDIS_URL was not set) carrying the scheme, credentials, database and TLS options.
    url: str
    sentinels: tuple[Address, ...] = ()
    service: str = ""
    sentinel_password: str = field(default="", repr=False)
    cluster_nodes: tuple[Address, ...] = ()

    def __repr__(self) -> str:  # Never the password (settings are printed in error pages).
        where = {
            Mode.SINGLE: "",
            Mode.SENTINEL: f" service={self.service!r} sentinels={_addresses(self.sentinels)}",
            Mode.CLUSTER: f" nodes={_addresses(self.cluster_nodes)}",
        }[self.mode]
        return f"<RedisConfig {self.mode}{where} tls={self.tls}>"

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    def url_options(self) -> dict:
        """redis-py's connection options from the URL (credentials, db, TLS; the host and port
        only for a single server)."""
        options = parse_url(self.url)
        options.pop("connection_class", None)
        if self.tls:
            options["ssl"] = True
        return options

    # --- redis-py (sync): the ingester, the ledger, metrics, /readyz ----------------------

    def connection_pool(self, **overrides) -> redis.ConnectionPool:
        """A redis-py connection pool to the primary. Through Sentinel, each new connection
        asks the sentinels where the primary is, and a connection to a demoted primary
        (READONLY) is dropped (redis.sentinel.SentinelConnectionPool)."""
        if self.mode is Mode.SINGLE:
            return redis.ConnectionPool.from_url(self.url, **overrides)
        if self.mode is Mode.SENTINEL:
            return (
                self._sentinel()
                .master_for(self.service, **{**_primary_options(self.url_options()), **overrides})
                .connection_pool
            )
        raise ImproperlyConfigured(
            "A connection pool for REDIS_CLUSTER_NODES is not wired yet: use sync_client()."
        )

    def sync_client(self, **overrides) -> redis.Redis | redis.RedisCluster:
        """redis-py's client to the primary (to the cluster: redis.RedisCluster)."""
        if self.mode is Mode.CLUSTER:
            options = {**self.url_options(), **overrides}
            options.pop("db", None)
            nodes = [ClusterNode(host, port) for host, port in self.cluster_nodes]
            return redis.RedisCluster(startup_nodes=nodes, **options)
        return redis.Redis(connection_pool=self.connection_pool(**overrides))

    def _sentinel(self) -> Sentinel:
        timeouts = {
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
        }
        return Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_options(), **timeouts)

    def _sentinel_options(self) -> dict:
        """redis-py's options for the connections to the sentinels."""
        options = {
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
            # An absent sentinel is passed over at once for the next one (redis-py's default
            # retries it with a backoff: seconds per new connection while a sentinel is down).
            "retry": Retry(NoBackoff(), 0),
        }
        if self.sentinel_password:
            options["password"] = self.sentinel_password
        return options

    # --- Django's cache ---------------------------------------------------------------------

    def django_cache(self) -> dict:
        """The CACHES["default"] entry."""
        options = {
            "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        }
        if self.mode is Mode.SINGLE:
            # Django's backend hands the URL to redis-py, which reads its TLS options.
            backend, location = "django.core.cache.backends.redis.RedisCache", self.url
        elif self.mode is Mode.SENTINEL:
            backend, location = "core.cache.SentinelRedisCache", self.service
        else:
            # core.cache_cluster: any node's URL is enough; the first one's credentials and TLS
            # are used for every node.
            backend, location = "core.cache_cluster.RedisClusterCache", self.cluster_urls()
        return {"BACKEND": backend, "LOCATION": location, "KEY_PREFIX": "hcai", "OPTIONS": options}

    def cluster_urls(self) -> list[str]:
        """Each listed cluster node as a URL with REDIS_URL's scheme, credentials and
        options."""
        parts = urlsplit(self.url)
        credentials = parts.netloc.rpartition("@")[0]
        return [
            urlunsplit(
                (
                    parts.scheme,
                    f"{credentials + '@' if credentials else ''}{_host(host)}:{port}",
                    "",
                    parts.query,
                    "",
                )
            )
            for host, port in self.cluster_nodes
        ]

    # --- Celery -----------------------------------------------------------------------------

    def celery_broker(self) -> dict:
        """Celery's broker settings (without the CELERY_ prefix): broker_url and, as needed,
        broker_transport_options and broker_use_ssl. Results are not kept
        (CELERY_TASK_IGNORE_RESULT), so no result backend is configured."""
        if self.mode is Mode.SINGLE:
            url = self.url
            if self.tls:
                # kombu treats rediss:// without ssl_cert_reqs as "do not verify" (it warns
                # and sets CERT_NONE); redis-py's default, and ours, is to verify.
                url = _with_query(url, ssl_cert_reqs=_query(url).get("ssl_cert_reqs", "required"))
            return {"broker_url": url}
        if self.mode is Mode.SENTINEL:
            parts = urlsplit(self.url)
            credentials = parts.netloc.rpartition("@")[0]
            at = f"{credentials}@" if credentials else ""
            url = ";".join(
                f"sentinel://{at}{_host(host)}:{port}{parts.path}" for host, port in self.sentinels
            )
            transport_options = {
                "master_name": self.service,
                "sentinel_kwargs": self._sentinel_options(),
            }
            settings = {"broker_url": url, "broker_transport_options": transport_options}
            if self.tls:
                settings["broker_use_ssl"] = _kombu_ssl(self.url_options())
            return settings
        raise ImproperlyConfigured(
            "With REDIS_CLUSTER_NODES set, set CELERY_BROKER_URL too: Celery's Redis transport "
            "does not speak Redis Cluster."
        )


def redis_config(
    *,
    url: str = "",
    sentinels: str = "",
    service: str = "",
    sentinel_password: str = "",
    cluster_nodes: str = "",
) -> RedisConfig | None:
    """Read the Redis settings (their environment variables' values); None when Redis is not
    configured. Conflicting or malformed settings raise ImproperlyConfigured, saying which."""
    url, sentinels, service, cluster_nodes = (
        url.strip(),
        sentinels.strip(),
        service.strip(),
        cluster_nodes.strip(),
    )
    if sentinels and cluster_nodes:
        raise ImproperlyConfigured(
            "REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set: Redis is either watched by "
            "Sentinel or a Cluster, not both."
        )
    if sentinels and not service:
        raise ImproperlyConfigured(
            "REDIS_SENTINELS is set but REDIS_SENTINEL_SERVICE is not: give the name the "
            "sentinels monitor the primary by (`sentinel monitor <name> ...`)."
        )
    if service and not sentinels:
        raise ImproperlyConfigured(
            "REDIS_SENTINEL_SERVICE is set but REDIS_SENTINELS is not: list the sentinels as "
            "host:port,host:port."
        )
    if sentinel_password and not sentinels:
        raise ImproperlyConfigured("REDIS_SENTINEL_PASSWORD is set but REDIS_SENTINELS is not.")
    if url:
        _check_url(url)
    if sentinels:
        _check_no_host(url, "REDIS_SENTINELS", "the sentinels tell where the primary is")
        return RedisConfig(
            Mode.SENTINEL,
            url or "redis://",
            sentinels=_parse_addresses("REDIS_SENTINELS", sentinels),
            service=service,
            sentinel_password=sentinel_password,
        )
    if cluster_nodes:
        _check_no_host(url, "REDIS_CLUSTER_NODES", "the nodes are listed there")
        database = parse_url(url).get("db", 0) if url else 0
        if database:
            raise ImproperlyConfigured(
                f"REDIS_URL selects database {database}, but a Redis Cluster has database 0 only."
            )
        return RedisConfig(
            Mode.CLUSTER,
            url or "redis://",
            cluster_nodes=_parse_addresses("REDIS_CLUSTER_NODES", cluster_nodes),
        )
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "unix" and not parts.hostname:
        raise ImproperlyConfigured(
            "REDIS_URL names no host: give one (redis://host:6379/0), or the sentinels "
            "(REDIS_SENTINELS) or cluster nodes (REDIS_CLUSTER_NODES) that say where Redis is."
        )
    return RedisConfig(Mode.SINGLE, url)


def _check_url(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        # Only the scheme is quoted: the URL may hold a password.
        raise ImproperlyConfigured(
            f"REDIS_URL must start with redis://, rediss:// or unix:// (it starts with "
            f"{scheme + '://' if scheme else 'neither'})."
        )
    query = _query(url)
    tls_options = sorted(name for name in query if name.startswith("ssl_"))
    unknown = [name for name in tls_options if name not in TLS_OPTIONS]
    if unknown:
        raise ImproperlyConfigured(
            f"REDIS_URL has TLS options the relay does not know: {', '.join(unknown)} (known: "
            f"{', '.join(TLS_OPTIONS)})."
        )
    if tls_options and scheme != "rediss":
        raise ImproperlyConfigured(
            f"REDIS_URL has TLS options ({', '.join(tls_options)}) but its scheme is "
            f"{scheme}://: use rediss:// for TLS."
        )
    cert_reqs = query.get("ssl_cert_reqs")
    if cert_reqs is not None and cert_reqs not in CERT_REQS:
        raise ImproperlyConfigured(
            f"REDIS_URL's ssl_cert_reqs must be none, optional or required (it is {cert_reqs!r})."
        )
    try:
        parse_url(url)
    except ValueError as error:
        raise ImproperlyConfigured(f"REDIS_URL cannot be read: {error}") from None


def _check_no_host(url: str, setting: str, why: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise ImproperlyConfigured(
            f"REDIS_URL cannot be a unix:// socket while {setting} is set: {why}."
        )
    if parts.hostname:
        raise ImproperlyConfigured(
            f"REDIS_URL names a host ({parts.hostname}) while {setting} is set: {why}. Leave "
            f"the host out (redis://:password@/0 or rediss://:password@/0), or unset REDIS_URL."
        )


def _parse_addresses(setting: str, value: str) -> tuple[Address, ...]:
    addresses: list[Address] = []
    for item in value.split(","):
        item = item.strip()
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(
                f"{setting}: {item!r} is not host:port with a port from 1 to 65535 (e.g. "
                f"10.0.0.5:26379); separate several with commas."
            )
        if (host, int(port)) in addresses:
            raise ImproperlyConfigured(f"{setting} names {item} twice.")
        addresses.append((host, int(port)))
    return tuple(addresses)


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def _with_query(url: str, **values: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**_query(url), **values})))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _addresses(addresses: tuple[Address, ...]) -> str:
    return ",".join(f"{_host(host)}:{port}" for host, port in addresses)


def _primary_options(options: dict) -> dict:
    """The primary's options for redis.sentinel (its address comes from the sentinels; `ssl`
    picks the TLS connection class)."""
    return {name: value for name, value in options.items() if name not in ("host", "port")}


def _kombu_ssl(options: dict) -> dict:
    """kombu's broker_use_ssl from redis-py's options (kombu wants the verify mode as the ssl
    module's constant)."""
    tls = {name: value for name, value in options.items() if name in TLS_OPTIONS}
    tls["ssl_cert_reqs"] = CERT_REQS[tls.get("ssl_cert_reqs", "required")]
    return tls
