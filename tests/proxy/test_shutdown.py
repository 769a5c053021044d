"""Graceful shutdown (hcai.workers): on SIGTERM a real gunicorn worker stops accepting, lets a
running stream finish within GRACEFUL_TIMEOUT, and cancels one that runs past it so that its
usage so far is recorded and its reservation given back before gunicorn kills the worker."""

import http.client
import json
import signal
import socket
import threading
import time
from contextlib import suppress

from billing import ledger
from billing.models import UsageEvent
from billing.services import ingest_usage_stream
from core import keyspace
from keys import services
from tests.threads import join, start_thread

from .test_checkpoints import _free_port, _start_gunicorn, pytestmark  # noqa: F401
from .test_forwarding import STREAM


def _stream_through(port: int, plaintext: str, started: threading.Event, body: list[bytes]):
    def stream() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request(
                "POST",
                "/v1/messages",
                json.dumps(STREAM),
                {"x-api-key": plaintext, "content-type": "application/json"},
            )
            response = connection.getresponse()
            body.append(response.read1())
            started.set()
            with suppress(http.client.IncompleteRead, ConnectionError):
                while chunk := response.read1():
                    body.append(chunk)
        finally:
            started.set()
            connection.close()

    return stream


def _refuses_connections(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return True
        time.sleep(0.1)
    return False


def _ingested(key) -> UsageEvent:
    deadline = time.monotonic() + 30
    while not UsageEvent.objects.filter(key=key).exists():
        ingest_usage_stream()
        assert time.monotonic() < deadline, "the stream's usage was never recorded"
        time.sleep(0.2)
    return UsageEvent.objects.get(key=key)


def test_a_stream_running_at_sigterm_finishes_and_is_billed_whole(relay, member, tmp_path):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="5")
    relay.primary.pause_seconds = 0.3  # a stream of about three seconds
    client = ledger.usage_stream_client()
    port = _free_port()
    master = _start_gunicorn(port, tmp_path, GRACEFUL_TIMEOUT="30")
    started, body, errors = threading.Event(), [], []
    try:
        streaming = start_thread(_stream_through(port, relay.plaintext, started, body), errors)
        assert started.wait(15), "the stream never started"
        master.send_signal(signal.SIGTERM)

        assert _refuses_connections(port, within=5), "still accepting after SIGTERM"
        join([streaming], timeout=30)
        master.wait(30)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(10)

    assert errors == []
    text = b"".join(body).decode()
    assert "event: message_stop" in text  # the whole stream reached the client
    event = _ingested(relay.key)
    assert event.status_code == 200
    assert event.output_tokens == relay.primary.usage.output_tokens
    assert client.hlen(keyspace.reservations(relay.key.team_id, relay.key.pk)) == 0
    assert client.hlen(keyspace.checkpoints(keyspace.shard(relay.key.team_id))) == 0


def test_a_stream_running_past_the_grace_is_cut_recorded_and_released(relay, member, tmp_path):
    services.api_key_update(key=relay.key, actor=member, quota_limit_usd="5")
    relay.primary.pause_seconds = 1.0  # a stream of about ten seconds
    client = ledger.usage_stream_client()
    port = _free_port()
    master = _start_gunicorn(port, tmp_path, GRACEFUL_TIMEOUT="1")
    started, body, errors = threading.Event(), [], []
    try:
        streaming = start_thread(_stream_through(port, relay.plaintext, started, body), errors)
        assert started.wait(15), "the stream never started"
        signalled = time.monotonic()
        master.send_signal(signal.SIGTERM)
        join([streaming], timeout=30)
        master.wait(30)
        stopped_after = time.monotonic() - signalled
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(10)

    assert errors == []
    assert "event: message_stop" not in b"".join(body).decode()  # cut off
    # Cancelled at the grace, not killed after gunicorn's cleanup time on top.
    assert stopped_after < 1 + 8
    event = _ingested(relay.key)
    # What the upstream reported at the start, as a failed request for the client.
    assert (event.status_code, event.input_tokens, event.cache_read_tokens) == (502, 25, 5)
    assert event.charged_usd > 0
    assert client.hlen(keyspace.reservations(relay.key.team_id, relay.key.pk)) == 0
    assert client.hlen(keyspace.checkpoints(keyspace.shard(relay.key.team_id))) == 0
