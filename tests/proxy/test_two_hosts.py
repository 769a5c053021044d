"""Two hosts: two gunicorn masters (each its own workers, as on two machines) over one
PostgreSQL and one Redis. What is saved through one host is obeyed by the other on its very
next request, and limits count across both."""

import http.client
import json

import pytest

from keys import services

from .test_checkpoints import _free_port, _start_gunicorn, pytestmark  # noqa: F401
from .test_forwarding import MESSAGE


def _call(port: int, method: str, path: str, body: dict | None, headers: dict) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.fixture
def two_hosts(tmp_path):
    ports = [_free_port(), _free_port()]
    masters = [
        _start_gunicorn(port, tmp_path / f"host-{n}", WEB_CONCURRENCY="1")
        for n, port in enumerate(ports)
    ]
    yield ports
    for master in masters:
        master.terminate()
    for master in masters:
        master.wait(30)


def test_an_edit_through_one_host_is_obeyed_by_the_other_at_once(relay, member, two_hosts):
    first, second = two_hosts
    token = services.api_token_create(user=member, name="ops", actor=member).plaintext
    message = {"x-api-key": relay.plaintext, "content-type": "application/json"}

    assert _call(second, "POST", "/v1/messages", MESSAGE, message)[0] == 200

    status, _ = _call(
        first,
        "PATCH",
        f"/api/v1/keys/{relay.key.pk}/",
        {"status": "disabled"},
        {"authorization": f"Token {token}", "content-type": "application/json"},
    )
    assert status == 200

    status, body = _call(second, "POST", "/v1/messages", MESSAGE, message)
    assert status == 403
    assert body["error"] == {
        "type": "permission_error",
        "message": "This key is disabled. Ask your team lead to enable it again, or create a "
        "new key in the portal.",
    }


def test_a_rate_limit_counts_requests_through_both_hosts(relay, member, two_hosts):
    first, second = two_hosts
    services.api_key_update(key=relay.key, actor=member, rate_limit="3/m")
    message = {"x-api-key": relay.plaintext, "content-type": "application/json"}

    statuses = [
        _call(port, "POST", "/v1/messages", MESSAGE, message)[0]
        for port in (first, second, first, second)
    ]

    assert statuses == [200, 200, 200, 429]
