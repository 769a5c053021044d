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
