"""The relay through a Sentinel failover: a real gunicorn relay with REDIS_SENTINELS set serves
traffic while its Redis primary is SIGKILLed (a replica and three sentinels of the test's own,
tests/redis_server.py). Clients see only 200s and the relay's retryable 503 while the sentinels
promote the replica; traffic comes back without restarting the relay, and every request
answered 200 is billed exactly once, including those whose usage was spooled on disk while no
primary took it (proxy.spool)."""

import http.client
import json
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from billing import ledger
from billing.models import UsageEvent
from billing.services import ingest_usage_stream
from core.redis_config import redis_config
from tests.redis_server import Sentinels
from tests.threads import join, start_thread

from .test_checkpoints import _free_port, _start_gunicorn, _worker_of
from .test_forwarding import MESSAGE
from .test_gate import UNAVAILABLE

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the relay's process shares the test's PostgreSQL"
)
CLIENTS = 4


def _post(port: int, plaintext: str) -> tuple[int, str, dict]:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        client.request(
            "POST",
            "/v1/messages",
            json.dumps(MESSAGE),
            {"x-api-key": plaintext, "content-type": "application/json"},
        )
        response = client.getresponse()
        return response.status, response.getheader("request-id"), json.loads(response.read())
    finally:
        client.close()


@pytest.fixture
def sentinel_settings(sentinel_redis, settings):
    """This process ingests from the primary the sentinels name, as a Celery worker would."""
    settings.REDIS = redis_config(
        sentinels=sentinel_redis.sentinel_addresses, service=Sentinels.SERVICE
    )
    ledger.usage_stream_client.cache_clear()
    yield settings.REDIS
    ledger.usage_stream_client.cache_clear()


def test_a_primary_killed_mid_traffic(relay, sentinel_redis, sentinel_settings, tmp_path):
    port = _free_port()
    master = _start_gunicorn(
        port,
        tmp_path / "relay",
        REDIS_URL="",
        REDIS_CLUSTER_NODES="",
        REDIS_SENTINELS=sentinel_redis.sentinel_addresses,
        REDIS_SENTINEL_SERVICE=Sentinels.SERVICE,
    )
    worker = _worker_of(master)
    answers: list[tuple[float, int, str, dict]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def traffic() -> None:
        while not stop.is_set():
            status, request_id, body = _post(port, relay.plaintext)
            answers.append((time.monotonic(), status, request_id, body))
            if status == 503:
                stop.wait(0.05)  # An SDK would wait for the retry-after; a short pause here.

    def answered(status: int, since: float = 0) -> int:
        return sum(1 for at, code, _, _ in list(answers) if code == status and at >= since)

    def wait_for(count: int, since: float, what: str) -> None:
        deadline = time.monotonic() + 20
        while answered(200, since) < count:
            assert time.monotonic() < deadline, what
            assert not errors, errors
            time.sleep(0.02)

    def spooled() -> list[Path]:
        # The test settings' spool folder, named after the process that read them.
        folders = [Path(tempfile.gettempdir(), f"hcai-spool-{pid}") for pid in (master.pid, worker)]
        return [path for folder in folders for path in folder.glob("usage-*.jsonl")]

    # Each request takes a while upstream, so requests admitted before the kill are answered
    # after it, and their usage finds no primary to take it.
    relay.primary.delay_seconds = 0.25
    clients = [start_thread(traffic, errors) for _ in range(CLIENTS)]
    try:
        wait_for(8, 0, "no traffic before the kill")
        sentinel_redis.primary.kill()
        killed = time.monotonic()
        deadline = killed + 5
        while not spooled():
            assert time.monotonic() < deadline, "no usage was spooled while Redis was down"
            time.sleep(0.02)
        sentinel_redis.wait_for_failover()
        promoted = time.monotonic()
        wait_for(16, promoted, "traffic did not come back after the failover")
    finally:
        stop.set()
        join(clients, timeout=30)
    try:
        assert errors == []
        assert master.poll() is None
        assert _worker_of(master) == worker  # the same relay worker throughout: no restart
        ok = [request_id for _, status, request_id, _ in answers if status == 200]
        unavailable = [body for _, status, _, body in answers if status == 503]
        assert {status for _, status, _, _ in answers} <= {200, 503}
        for body in unavailable:
            assert body["error"] == {"type": "api_error", "message": UNAVAILABLE}
        # The failover was seen: requests failed while no primary answered, none after the
        # sentinels named the new one (the last answers are all 200s).
        assert unavailable
        assert [status for _, status, _, _ in answers[-CLIENTS * 3 :]] == [200] * CLIENTS * 3

        # Every 200 billed once: the spool is sent to the new primary (within a second or two
        # of the failover), then ingested from it as a Celery worker would.
        deadline = time.monotonic() + 20
        while spooled():
            assert time.monotonic() < deadline, "the spooled usage was never sent"
            time.sleep(0.05)
        # The last requests' usage is recorded just after their answers: ingest until it is in.
        while True:
            ingest_usage_stream()
            billed = list(UsageEvent.objects.filter(key=relay.key).values_list("request_id"))
            if len(billed) >= len(ok) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(request_id for (request_id,) in billed) == sorted(ok)
        assert len(set(ok)) == len(ok)
    finally:
        master.terminate()
        master.wait(30)
