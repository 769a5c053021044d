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
