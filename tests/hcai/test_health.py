import pytest
from django.core.cache import caches
from django.test import override_settings

# A Redis cache on a port nothing listens on: a real unreachable cache, not a mock.
UNREACHABLE_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2},
    }
}


def test_healthz_answers_without_touching_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_ok_when_database_and_cache_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_names_the_cache_when_it_is_down(client):
    with override_settings(CACHES=UNREACHABLE_CACHE):
        response = client.get("/readyz")
        caches["default"].close()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "down": ["cache"]}


def test_every_response_carries_a_request_id(client):
    response = client.get("/healthz")
    assert response["X-Request-Id"].startswith("req_")


def test_a_sane_incoming_request_id_is_kept(client):
    response = client.get("/healthz", headers={"X-Request-Id": "lb-1234abcd"})
    assert response["X-Request-Id"] == "lb-1234abcd"


@pytest.mark.parametrize("incoming", ["short", "has space in it", "x" * 129, "bad\ninject"])
def test_a_malformed_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/healthz", headers={"X-Request-Id": incoming})
    assert response["X-Request-Id"].startswith("req_")
    assert response["X-Request-Id"] != incoming


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("append_only", "status", "down"), [(True, 200, None), (False, 503, ["redis-append-only"])]
)
def test_readyz_requires_redis_to_keep_its_append_only_file(
    client, private_redis, append_only, status, down
):
    """Production's Redis holds served usage not yet in the database: a Redis that would lose it
    on a restart makes the host unready (REDIS_REQUIRE_APPEND_ONLY, on in production)."""
    private_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": private_redis.url,
        }
    }
    with override_settings(CACHES=private_cache, REDIS_REQUIRE_APPEND_ONLY=True):
        if not append_only:
            caches["default"]._cache.get_client(write=True).config_set("appendonly", "no")
        response = client.get("/readyz")
        caches["default"].close()

    assert response.status_code == status
    assert response.json().get("down") == down


@pytest.mark.django_db
def test_readyz_on_a_cluster_requires_every_primary_to_keep_its_append_only_file(
    client, redis_cluster, caplog
):
    """On a Redis Cluster every primary holds some teams' usage streams: one without its
    append-only file makes the host unready, and the log names it."""
    cluster_cache = {
        "default": {
            "BACKEND": "core.cache_cluster.RedisClusterCache",
            "LOCATION": ",".join(f"redis://{host}:{port}" for host, port in redis_cluster.nodes),
        }
    }
    last = redis_cluster.ports[-1]
    try:
        for port in redis_cluster.ports:
            redis_cluster.client(port).config_set("appendonly", "yes")
        with override_settings(CACHES=cluster_cache, REDIS_REQUIRE_APPEND_ONLY=True):
            every = client.get("/readyz")
            redis_cluster.client(last).config_set("appendonly", "no")
            one_without = client.get("/readyz")
            caches["default"].close()
    finally:
        for port in redis_cluster.ports:
            redis_cluster.client(port).config_set("appendonly", "no")

    assert every.status_code == 200
    assert one_without.status_code == 503
    assert one_without.json()["down"] == ["redis-append-only"]
    assert (
        f"readyz: Redis runs without its append-only file (appendonly no) on 127.0.0.1:{last}"
        in caplog.messages
    )
