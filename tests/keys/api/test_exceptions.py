"""The API's error answers that are not about what the caller sent."""

import socket

import pytest
from django.db import connections
from rest_framework.test import APIClient


def _unreachable_database_settings(settings_dict: dict) -> dict:
    """The same database settings, pointed where no database can be opened."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return {**settings_dict, "NAME": "/nonexistent-directory/db.sqlite3"}
    # A port that was free a moment ago: connecting to it is refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    return {**settings_dict, "HOST": "127.0.0.1", "PORT": str(closed_port)}


@pytest.fixture
def take_database_down(db):
    """take_database_down(): from then on to the end of the test, this thread's default
    connection cannot connect. The test database itself is untouched: the real connection is
    set aside and put back afterwards."""
    real = connections["default"]
    broken = real.__class__(_unreachable_database_settings(real.settings_dict), alias="default")

    def take_down() -> None:
        connections["default"] = broken

    yield take_down
    broken.close()
    connections["default"] = real


@pytest.mark.parametrize(
    ("method", "path", "how"),
    [
        # The token's lookup is the first query: authentication itself meets the outage.
        ("get", "/api/v1/keys/", "token"),
        ("post", "/api/v1/keys/", "token"),
        ("get", "/api/v1/usage/daily/", "token"),
        # A session's lookup (the session row, then the user) meets it too.
        ("get", "/api/v1/me/", "session"),
        ("patch", "/api/v1/groups/1/", "session"),
    ],
)
def test_an_unreachable_database_is_a_json_503(api, member, take_database_down, method, path, how):
    client = api(member) if how == "token" else APIClient()
    if how == "session":
        client.force_login(member)
    take_database_down()

    response = getattr(client, method)(path, {}, format="json")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "10"
    assert response.json() == {
        "detail": "The service cannot reach its database right now. Try again shortly."
    }


def test_the_api_works_again_once_the_database_is_back(api, member):
    """The fixture above leaves nothing broken behind (and this is what a 503 must not be)."""
    assert api(member).get("/api/v1/me/").status_code == 200
