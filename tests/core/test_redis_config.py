"""The Redis settings, read once (core.redis_config): which shape they give, the exact refusal
of each conflicting or malformed one, and what each Redis user is built with."""

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from core.redis_config import Mode, RedisConfig, redis_config
from proxy.redis_client import RedisClient
from proxy.redis_connect import client_for

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_set_is_the_embedded_default():
    assert redis_config() is None
    assert redis_config(url="  ") is None


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/3", "rediss://:secret@redis.example.com:6380/0", "unix:///r.s"]
)
def test_one_server(url):
    config = redis_config(url=url)
    assert (config.mode, config.url, config.sentinels) == (Mode.SINGLE, url, ())
    assert config.tls is url.startswith("rediss")


def test_sentinel_without_redis_url():
    config = redis_config(sentinels="10.0.0.5:26379, 10.0.0.6:26380", service="hcai")
    assert config == RedisConfig(
        Mode.SENTINEL,
        "redis://",
        sentinels=(("10.0.0.5", 26379), ("10.0.0.6", 26380)),
        service="hcai",
    )
    assert config.url_options() == {}


def test_sentinel_takes_credentials_database_and_tls_from_redis_url():
    config = redis_config(
        url="rediss://app:secret@/2?ssl_ca_certs=/etc/ca.pem",
        sentinels="[::1]:26379",
        service="hcai",
        sentinel_password="s3",
    )
    assert config.sentinels == (("::1", 26379),)
    assert config.tls
    assert config.url_options() == {
        "username": "app",
        "password": "secret",
        "db": 2,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl": True,
    }


def test_the_passwords_are_not_in_its_repr():
    config = redis_config(
        url="redis://:secret@/0", sentinels="h:1,h:2", service="hcai", sentinel_password="s3"
    )
    assert repr(config) == "<RedisConfig sentinel service='hcai' sentinels=h:1,h:2 tls=False>"


def test_cluster():
    config = redis_config(url="rediss://:secret@?ssl_cert_reqs=none", cluster_nodes="a:7000,b:7001")
    assert (config.mode, config.cluster_nodes) == (Mode.CLUSTER, (("a", 7000), ("b", 7001)))
    assert config.cluster_urls() == [
        "rediss://:secret@a:7000?ssl_cert_reqs=none",
        "rediss://:secret@b:7001?ssl_cert_reqs=none",
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"sentinels": "h:1", "cluster_nodes": "h:2", "service": "s"},
            "REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set: Redis is either watched by "
            "Sentinel or a Cluster, not both.",
        ),
        (
            {"sentinels": "h:1"},
            "REDIS_SENTINELS is set but REDIS_SENTINEL_SERVICE is not: give the name the "
            "sentinels monitor the primary by (`sentinel monitor <name> ...`).",
        ),
        (
            {"service": "hcai", "url": "redis://h:6379/0"},
            "REDIS_SENTINEL_SERVICE is set but REDIS_SENTINELS is not: list the sentinels as "
            "host:port,host:port.",
        ),
        (
            {"sentinel_password": "x", "url": "redis://h:6379/0"},
            "REDIS_SENTINEL_PASSWORD is set but REDIS_SENTINELS is not.",
        ),
        (
            {"url": "http://:secret@h:6379/0"},
            "REDIS_URL must start with redis://, rediss:// or unix:// (it starts with http://).",
        ),
        (
            {"url": "127.0.0.1:6379"},
            "REDIS_URL must start with redis://, rediss:// or unix:// (it starts with neither).",
        ),
        (
            {"url": "redis://"},
            "REDIS_URL names no host: give one (redis://host:6379/0), or the sentinels "
            "(REDIS_SENTINELS) or cluster nodes (REDIS_CLUSTER_NODES) that say where Redis is.",
        ),
        (
            {"url": "redis://h:6379/0?ssl_ca_certs=/ca.pem"},
            "REDIS_URL has TLS options (ssl_ca_certs) but its scheme is redis://: use rediss:// "
            "for TLS.",
        ),
        (
            {"url": "rediss://h:6379/0?ssl_cert_reqs=maybe"},
            "REDIS_URL's ssl_cert_reqs must be none, optional or required (it is 'maybe').",
        ),
        (
            {"url": "rediss://h:6379/0?ssl_verify=yes"},
            "REDIS_URL has TLS options the relay does not know: ssl_verify (known: "
            "ssl_cert_reqs, ssl_ca_certs, ssl_ca_path, ssl_certfile, ssl_keyfile, ssl_password, "
            "ssl_check_hostname).",
        ),
        (
            {"url": "redis://:secret@h:port/0"},
            "REDIS_URL cannot be read: Port could not be cast to integer value as 'port'",
        ),
        (
            {"url": "redis://:secret@10.0.0.5:6379/0", "sentinels": "h:1", "service": "s"},
            "REDIS_URL names a host (10.0.0.5) while REDIS_SENTINELS is set: the sentinels tell "
            "where the primary is. Leave the host out (redis://:password@/0 or "
            "rediss://:password@/0), or unset REDIS_URL.",
        ),
        (
            {"url": "unix:///run/redis.sock", "sentinels": "h:1", "service": "s"},
            "REDIS_URL cannot be a unix:// socket while REDIS_SENTINELS is set: the sentinels "
            "tell where the primary is.",
        ),
        (
            {"url": "redis://node:7000", "cluster_nodes": "h:1"},
            "REDIS_URL names a host (node) while REDIS_CLUSTER_NODES is set: the nodes are "
            "listed there. Leave the host out (redis://:password@/0 or rediss://:password@/0), "
            "or unset REDIS_URL.",
        ),
        (
            {"url": "redis://:secret@/3", "cluster_nodes": "h:1"},
            "REDIS_URL selects database 3, but a Redis Cluster has database 0 only.",
        ),
    ],
)
def test_conflicting_or_malformed_settings_are_refused(settings, message):
    with pytest.raises(ImproperlyConfigured) as refused:
        redis_config(**settings)
    assert str(refused.value) == message
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize(
    "item", ["sentinel-1", "h:", ":26379", "h:0", "h:65536", "h:port", "", "h:-1"]
)
def test_a_malformed_address_is_refused(item):
    with pytest.raises(ImproperlyConfigured) as refused:
        redis_config(sentinels=f"a:1,{item}", service="hcai")
    assert str(refused.value) == (
        f"REDIS_SENTINELS: {item!r} is not host:port with a port from 1 to 65535 (e.g. "
        "10.0.0.5:26379); separate several with commas."
    )


def test_an_address_twice_is_refused():
    with pytest.raises(ImproperlyConfigured) as refused:
        redis_config(cluster_nodes="a:7000,b:7000, a:7000")
    assert str(refused.value) == "REDIS_CLUSTER_NODES names a:7000 twice."


# --- what each Redis user is built with -----------------------------------------------------


def test_one_server_s_users():
    config = redis_config(url="redis://:pw@127.0.0.1:6379/3")
    assert config.django_cache() == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://:pw@127.0.0.1:6379/3",
        "KEY_PREFIX": "hcai",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
    assert config.celery_broker() == {"broker_url": "redis://:pw@127.0.0.1:6379/3"}
    pool = config.sync_client().connection_pool
    assert type(pool) is redis.ConnectionPool
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["db"]) == ("127.0.0.1", 3)
    client = client_for(config)
    assert type(client) is RedisClient and client._sentinels == []


def test_tls_reaches_kombu_verified_by_default():
    """kombu takes rediss:// without ssl_cert_reqs as "do not verify"; redis-py verifies."""
    config = redis_config(url="rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem")
    assert config.celery_broker() == {
        "broker_url": "rediss://h:6380/0?ssl_ca_certs=%2Fetc%2Fca.pem&ssl_cert_reqs=required"
    }
    relaxed = redis_config(url="rediss://h:6380/0?ssl_cert_reqs=none")
    assert relaxed.celery_broker() == {"broker_url": "rediss://h:6380/0?ssl_cert_reqs=none"}


def test_sentinel_s_users():
    kwargs = {
        "url": "rediss://:pw@/2?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=optional",
        "sentinels": "10.0.0.5:26379,10.0.0.6:26379",
        "service": "hcai",
        "sentinel_password": "s3",
    }
    config = redis_config(**kwargs)
    assert config.django_cache() == {
        "BACKEND": "core.cache.SentinelRedisCache",
        "LOCATION": "hcai",
        "KEY_PREFIX": "hcai",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
    broker = config.celery_broker()
    retry = broker["broker_transport_options"]["sentinel_kwargs"].pop("retry")
    assert retry.get_retries() == 0  # an absent sentinel: on to the next at once
    assert broker == {
        "broker_url": "sentinel://:pw@10.0.0.5:26379/2;sentinel://:pw@10.0.0.6:26379/2",
        "broker_transport_options": {
            "master_name": "hcai",
            "sentinel_kwargs": {"socket_timeout": 2, "socket_connect_timeout": 2, "password": "s3"},
        },
        "broker_use_ssl": {"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": ssl.CERT_OPTIONAL},
    }
    # Options the URL also gives: the caller's win (Django's cache passes its timeouts).
    pool = redis_config(**{**kwargs, "url": kwargs["url"] + "&socket_timeout=9"}).connection_pool(
        socket_timeout=2
    )
    assert pool.connection_kwargs["socket_timeout"] == 2
    pool = config.connection_pool()
    assert type(pool) is SentinelConnectionPool
    assert pool.service_name == "hcai"
    assert pool.connection_class is SentinelManagedSSLConnection
    assert (pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == ("pw", 2)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    first, _ = pool.sentinel_manager.sentinels
    assert first.connection_pool.connection_kwargs["password"] == "s3"
    assert "ssl_ca_certs" not in first.connection_pool.connection_kwargs
    # The relay's client loads the CA file when it is made (there is none here: see
    # tests/core/test_redis_tls.py).
    with pytest.raises(FileNotFoundError):
        client_for(config)
    client = client_for(redis_config(**{**kwargs, "url": "rediss://:pw@/2?ssl_cert_reqs=optional"}))
    assert client._sentinels == [("10.0.0.5", 26379), ("10.0.0.6", 26379)]
    assert (client._service, client._sentinel_password) == ("hcai", "s3")
    assert client._ssl.verify_mode == ssl.CERT_OPTIONAL


def test_celery_has_no_cluster_transport():
    config = redis_config(cluster_nodes="a:7000")
    with pytest.raises(ImproperlyConfigured) as refused:
        config.celery_broker()
    assert str(refused.value) == (
        "With REDIS_CLUSTER_NODES set, set CELERY_BROKER_URL too: Celery's Redis transport "
        "does not speak Redis Cluster."
    )


# --- the settings, as a process starting with them reads them --------------------------------


def _settings_of(**environment: str) -> dict:
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "from hcai.celery import app; print(json.dumps({"
        "'redis': repr(s.REDIS), 'cache': s.CACHES['default']['BACKEND'], "
        "'broker': app.conf.broker_url, 'options': app.conf.broker_transport_options, "
        "'ingest': 'ingest-usage' in s.CELERY_BEAT_SCHEDULE}, default=lambda o: type(o).__name__))"
    )
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("REDIS") and name != "CELERY_BROKER_URL"
    }
    env.update(DJANGO_SETTINGS_MODULE="hcai.settings.test", **environment)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_settings_through_sentinel():
    assert _settings_of(
        REDIS_SENTINELS="127.0.0.1:26379,127.0.0.1:26380", REDIS_SENTINEL_SERVICE="hcai"
    ) == {
        "redis": "<RedisConfig sentinel service='hcai' sentinels=127.0.0.1:26379,127.0.0.1:26380 "
        "tls=False>",
        "cache": "core.cache.SentinelRedisCache",
        "broker": "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380",
        "options": {
            "master_name": "hcai",
            "sentinel_kwargs": {"socket_timeout": 2, "socket_connect_timeout": 2, "retry": "Retry"},
        },
        "ingest": True,
    }


def test_an_explicit_celery_broker_wins():
    settings = _settings_of(
        REDIS_SENTINELS="127.0.0.1:26379",
        REDIS_SENTINEL_SERVICE="hcai",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/5",
    )
    assert (settings["broker"], settings["options"]) == ("redis://127.0.0.1:6379/5", {})


def test_a_process_with_conflicting_settings_does_not_start():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hcai.settings.test"}
    env.update(REDIS_SENTINELS="127.0.0.1:26379")
    env.pop("REDIS_SENTINEL_SERVICE", None)
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        "django.core.exceptions.ImproperlyConfigured: REDIS_SENTINELS is set but "
        "REDIS_SENTINEL_SERVICE is not"
    ) in result.stderr
