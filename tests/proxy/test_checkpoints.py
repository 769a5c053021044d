"""A stream whose relay worker dies is billed from its last checkpoint and its reservation is
freed within seconds (billing.ledger.reap_checkpoints), with a real gunicorn worker SIGKILLed
mid-stream. Before, such a stream left no usage row and held its reservation until the
channel's timeout plus a minute."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from billing import ledger
from billing.models import UsageEvent
from billing.services import ingest_usage_stream
from core import keyspace
from keys import services
from keys.cache import invalidate_key_state
from keys.models import ApiKey
from tests.threads import join, start_thread

from .fake_upstream import Usage
from .test_forwarding import MESSAGE, STREAM

pytestmark = pytest.mark.skipif(
    settings.REDIS is None or connection.vendor != "postgresql",
    reason="a second process shares the test's PostgreSQL database and Redis",
)
PROJECT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_gunicorn(port: int, var_dir: Path, **environment: str) -> subprocess.Popen:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hcai.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "HCAI_VAR_DIR": str(var_dir),
        **environment,
    }
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "hcai.asgi:application", "-c", "gunicorn.conf.py"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return master
        except OSError:
            exited = master.poll() is not None
            if exited or time.monotonic() > deadline:
                master.kill()  # never left running by a start that failed
                master.wait(10)
                pytest.fail("gunicorn exited" if exited else "gunicorn did not start")
            time.sleep(0.1)


def _worker_of(master: subprocess.Popen) -> int:
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    [worker] = children
    return int(worker)


def test_a_stream_whose_worker_is_killed_is_billed_from_its_last_checkpoint(
    relay, member, tmp_path
):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="5")
    relay.primary.pause_seconds = 0.5  # six text deltas: a stream of about three seconds
    # message_start reports 600 of the 1,000 cache writes as 1-hour ones: the checkpoint
    # keeps them beside its JSON, and the reaper passes them on.
    relay.primary.usage = Usage(cache_creation_tokens=1000, cache_creation_1h_tokens=600)
    client = ledger.usage_stream_client()
    port = _free_port()
    master = _start_gunicorn(port, tmp_path)
    errors: list[BaseException] = []

    def stream() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(
                "POST",
                "/v1/messages",
                json.dumps(STREAM),
                {"x-api-key": relay.plaintext, "content-type": "application/json"},
            )
            response = connection.getresponse()
            # Cut off by the kill, as a client would see it.
            with suppress(http.client.IncompleteRead, ConnectionError):
                response.read()
        finally:
            connection.close()

    try:
        streaming = start_thread(stream, errors)
        deadline = time.monotonic() + 15
        while not client.hlen(keyspace.checkpoints(keyspace.shard(relay.key.team_id))):
            assert time.monotonic() < deadline, "the stream never wrote a checkpoint"
            time.sleep(0.05)
        assert (
            client.hlen(keyspace.reservations(relay.key.team_id, relay.key.pk)) == 2
        )  # the hold and their sum
        os.kill(_worker_of(master), signal.SIGKILL)
        join([streaming], timeout=30)

        deadline = time.monotonic() + 30
        while not ingest_usage_stream():
            assert time.monotonic() < deadline, "the killed worker's stream was never billed"
            time.sleep(0.25)
        reaped_after = time.monotonic() - (deadline - 30)
    finally:
        master.terminate()
        master.wait(30)

    assert errors == []
    [event] = UsageEvent.objects.filter(key=relay.key)
    # What the upstream reported at the start (input, cache) and the text sent by the last
    # checkpoint, estimated; a failed request for the client.
    assert (event.status_code, event.input_tokens, event.cache_read_tokens) == (502, 25, 5)
    assert (event.cache_creation_tokens, event.cache_creation_1h_tokens) == (1000, 600)
    assert event.output_tokens >= 1
    assert event.charged_usd > 0
    assert client.hlen(keyspace.reservations(relay.key.team_id, relay.key.pk)) == 0
    assert client.hlen(keyspace.checkpoints(keyspace.shard(relay.key.team_id))) == 0
    assert reaped_after < ledger.RELAY_ALIVE_SECONDS + 5


def test_a_killed_workers_concurrency_slot_is_freed_within_seconds(relay, member, tmp_path):
    """A key allowing one request at a time, its request in flight (not a stream: no
    checkpoint) when its worker is SIGKILLed: the slot names that worker, so once the
    worker's liveness key expires the next admission drops it; before, it was held until the
    channel's timeout plus a minute."""
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="5")
    ApiKey.objects.filter(pk=relay.key.pk).update(max_concurrency=1)
    invalidate_key_state([relay.key.digest])
    relay.primary.delay_seconds = 30
    client = ledger.usage_stream_client()
    port = _free_port()
    master = _start_gunicorn(port, tmp_path)
    errors: list[BaseException] = []

    def call() -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
        connection.request(
            "POST",
            "/v1/messages",
            json.dumps(MESSAGE),
            {"x-api-key": relay.plaintext, "content-type": "application/json"},
        )
        try:
            response = connection.getresponse()
            response.read()
            return response
        finally:
            connection.close()

    def cut_off() -> None:
        with suppress(http.client.HTTPException, ConnectionError):
            call()

    try:
        in_flight = start_thread(cut_off, errors)
        deadline = time.monotonic() + 15
        while not client.hlen(keyspace.reservations(relay.key.team_id, relay.key.pk)):
            assert time.monotonic() < deadline, "the request never reserved its slot"
            time.sleep(0.05)
        killed_at = time.monotonic()
        os.kill(_worker_of(master), signal.SIGKILL)
        join([in_flight], timeout=30)
        relay.primary.delay_seconds = 0

        statuses = []
        while (status := call().status) != 200:
            statuses.append(status)
            assert time.monotonic() - killed_at < ledger.RELAY_ALIVE_SECONDS + 5
            time.sleep(0.5)
        freed_after = time.monotonic() - killed_at
    finally:
        master.terminate()
        master.wait(30)

    assert errors == []
    assert set(statuses) <= {429}  # the dead worker's slot, until its liveness expired
    assert freed_after < ledger.RELAY_ALIVE_SECONDS + 5
