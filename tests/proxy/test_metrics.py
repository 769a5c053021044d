"""The relay's metrics (proxy.metrics) as /metrics reports them: served and refused requests,
the gate's and the upstream's latency, channels' outcomes and failovers, and a real gunicorn's
two workers summed."""

import http.client
import json
import time
from urllib.parse import urlsplit

from keys import services
from proxy.metrics import FLUSH_SECONDS
from tests.threads import join, start_thread

from ..hcai.test_metrics import sample
from .test_checkpoints import _free_port, _start_gunicorn
from .test_checkpoints import pytestmark as needs_postgres_and_redis
from .test_forwarding import MESSAGE, route_group


def _request(base_url: str, method: str, path: str, body: bytes | None, headers: dict):
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def scrape(base_url: str) -> str:
    return _request(base_url, "GET", "/metrics", None, {})[1].decode()


def post_message(base_url: str, plaintext: str) -> int:
    headers = {"x-api-key": plaintext, "content-type": "application/json"}
    return _request(base_url, "POST", "/v1/messages", json.dumps(MESSAGE).encode(), headers)[0]


def wait_for(base_url: str, check, timeout: float = 8.0) -> str:
    """Scrape until `check(text)` holds: the relay moves its counts into the metrics once a
    second."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(base_url)
        if check(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def served(text: str) -> float:
    return (
        sample(
            text, "hcai_relay_requests_total", endpoint="messages", reason="", status_class="2xx"
        )
        or 0
    )


def settled_scrape(base_url: str) -> str:
    """A scrape once the counts of earlier requests have been moved in (once a second)."""
    time.sleep(FLUSH_SECONDS + 0.3)
    return scrape(base_url)


def test_served_and_refused_requests_are_counted_by_endpoint_status_and_reason(relay, member):
    before = settled_scrape(relay.url)
    disabled_before = (
        sample(
            before,
            "hcai_relay_requests_total",
            endpoint="messages",
            reason="key_disabled",
            status_class="4xx",
        )
        or 0
    )
    assert [post_message(relay.url, relay.plaintext) for _ in range(3)] == [200, 200, 200]
    services.api_key_update(key=relay.key, actor=member, status="disabled")
    assert post_message(relay.url, relay.plaintext) == 403

    text = wait_for(relay.url, lambda text: served(text) >= served(before) + 3)

    assert served(text) == served(before) + 3
    refused = sample(
        text,
        "hcai_relay_requests_total",
        endpoint="messages",
        reason="key_disabled",
        status_class="4xx",
    )
    assert refused == disabled_before + 1
    # The gate's time and the first byte's, for every served request.
    assert (
        sample(text, "hcai_relay_added_seconds_count", endpoint="messages")
        - (sample(before, "hcai_relay_added_seconds_count", endpoint="messages") or 0)
        == 3
    )
    assert sample(text, "hcai_relay_first_byte_seconds_count", endpoint="messages") >= 4
    assert sample(text, "hcai_upstream_requests_total", channel="anthropic-primary", outcome="2xx")
    assert sample(text, "hcai_key_state_lookups_total", result="hit") >= 1
    assert "key=" not in text and relay.key.name not in text  # no key in any label


def test_a_failed_channel_is_counted_with_the_failover(relay, member):
    broken = relay.upstream.backend("broken", status=500)
    route_group(
        relay,
        member,
        ("metrics-broken", "anthropic", broken.url),
        ("metrics-primary", "anthropic", relay.primary.url),
    )
    before = settled_scrape(relay.url)
    failovers_before = sample(before, "hcai_relay_failovers_total", channel="metrics-broken") or 0

    assert post_message(relay.url, relay.plaintext) == 200

    text = wait_for(
        relay.url,
        lambda text: (
            (sample(text, "hcai_relay_failovers_total", channel="metrics-broken") or 0)
            > failovers_before
        ),
    )
    assert sample(text, "hcai_relay_failovers_total", channel="metrics-broken") == (
        failovers_before + 1
    )
    assert sample(text, "hcai_upstream_requests_total", channel="metrics-broken", outcome="5xx")
    assert sample(text, "hcai_upstream_requests_total", channel="metrics-primary", outcome="2xx")


@needs_postgres_and_redis
def test_a_scrape_of_any_worker_sums_every_worker(relay, tmp_path):
    relay.primary.delay_seconds = 0.2  # requests overlap, so both workers take some
    port = _free_port()
    master = _start_gunicorn(port, tmp_path, WEB_CONCURRENCY="2")
    base_url = f"http://127.0.0.1:{port}"
    statuses: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        for _ in range(4):
            statuses.append(post_message(base_url, relay.plaintext))

    try:
        deadline = time.monotonic() + 30
        while True:
            join([start_thread(client, errors) for _ in range(8)], timeout=60)
            counted_by = {path.name for path in (tmp_path / "prometheus").glob("counter_*.db")}
            if len(counted_by) >= 2 or time.monotonic() > deadline:
                break
        sent = len(statuses)
        text = wait_for(base_url, lambda text: served(text) >= sent)
    finally:
        master.terminate()
        master.wait(30)

    assert errors == []
    assert set(statuses) == {200}
    assert len(counted_by) == 2  # both workers counted
    assert served(text) == sent  # and one scrape summed them
