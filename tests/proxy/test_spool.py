"""A served request is billed even when Redis goes down before its usage is recorded: the
record waits in the spool on disk and is sent once Redis is back (proxy.spool)."""

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from billing.ledger import UsageRecord
from billing.windows import Targets
from core import keyspace
from proxy.spool import Spool
from proxy.store import RedisStore

from .test_forwarding import STREAM, open_stream, read_events


@pytest.fixture
def spool_dir(settings, tmp_path, monkeypatch):
    monkeypatch.setattr("proxy.spool.RETRY_SECONDS", 0.05)
    settings.RELAY_SPOOL_DIR = str(tmp_path / "spool")
    return tmp_path / "spool"


def test_usage_of_a_stream_served_while_redis_went_down_is_recorded_once_it_is_back(
    relay, relay_server, private_redis, spool_dir
):
    """Redis is SIGKILLed while a stream is being served; the stream still ends well, and its
    usage reaches the usage stream after Redis restarts (before, it was lost: 9 requests in the
    issue's trial)."""
    _, app = relay_server
    working = app._store
    app._store = RedisStore(private_redis.url)
    relay.primary.hold_after_first_delta = True
    try:
        connection, response = open_stream(relay, "/v1/messages", STREAM)
        events = read_events(response)
        for event in events:
            if b'"Hello"' in event:
                break
        private_redis.kill()
        relay.primary.release.set()
        rest = b"\n\n".join(events)
        connection.close()
        request_id = response.getheader("request-id")

        deadline = time.monotonic() + 10
        while not list(spool_dir.glob("usage-*.jsonl")):
            assert time.monotonic() < deadline, "nothing was spooled"
            time.sleep(0.02)
        [spooled] = [
            json.loads(line)
            for path in spool_dir.glob("usage-*.jsonl")
            for line in path.read_text().splitlines()
        ]
        private_redis.start()

        entries = []
        while not entries:
            assert time.monotonic() < deadline + 10, "the spooled record was never sent"
            time.sleep(0.05)
            stream = keyspace.usage_stream(keyspace.shard(relay.key.team_id))
            entries = asyncio.run(_stream_entries(private_redis.url, stream))
    finally:
        app._store = working

    assert b"message_stop" in rest
    assert UsageRecord.from_json(spooled["e"]).request_id == request_id
    [entry] = entries
    record = UsageRecord.from_json(entry)
    assert (record.request_id, record.key_id, record.status_code) == (
        request_id,
        relay.key.pk,
        200,
    )
    assert record.output_tokens > 0
    deadline = time.monotonic() + 5
    while list(spool_dir.glob("usage-*.jsonl")):
        assert time.monotonic() < deadline, "the spool file outlived its last record"
        time.sleep(0.02)


async def _stream_entries(url: str, stream: str) -> list[bytes]:
    store = RedisStore(url)
    try:
        return [fields[1] for _, fields in await store.redis.execute("XRANGE", stream, "-", "+")]
    except Exception:
        return []
    finally:
        await store.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


TARGETS = Targets(("total-a", "total-b"), ("holds-a",))


def test_a_spool_left_by_an_ended_process_is_taken_over_and_sent_in_order(tmp_path):
    sent: list[tuple[str, str, Targets, int]] = []

    async def send(record_json: str, hold_id: str, targets: Targets, one_hour: int) -> None:
        sent.append((record_json, hold_id, targets, one_hour))

    earlier_release = '{"key_id":7,"team_id":1}'  # its lines name no totals: its key's
    # A line of the release before the hash tags (core.keyspace): its names get team 70's tag.
    untagged = '{"key_id":8,"team_id":70}'
    untagged_names = {"n": ["hcai:1:spend:8", "hcai:1:spend-window:key:8:d:0"], "h": ["x"]}
    orphan = tmp_path / f"usage-{_dead_pid()}.jsonl"
    orphan.write_text(
        json.dumps({"e": earlier_release, "hold": "h1"})
        + "\n"
        + json.dumps({"e": untagged, "hold": "h0", **untagged_names})
        + "\n"
        + json.dumps(
            {"e": "second", "hold": "h2", "n": ["total-a", "total-b"], "h": ["holds-a"], "o": 40}
        )
        + "\n"
        + '{"e": "cut short by a cr'  # the process died mid-write
    )
    living = tmp_path / f"usage-{os.getppid()}.jsonl"  # a live process's: not taken
    living.write_text(json.dumps({"e": "theirs", "hold": "h9", "n": [], "h": []}) + "\n")

    async def scenario():
        spool = Spool(tmp_path, send)
        await spool.keep("third", "h3", TARGETS, 7)
        while spool.draining:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())

    assert sent == [
        (earlier_release, "h1", Targets.of_key(1, 7), 0),
        (
            untagged,
            "h0",
            Targets(("hcai:1:{t6}:spend:8", "hcai:1:{t6}:spend-window:key:8:d:0"), ("x",)),
            0,
        ),
        ("second", "h2", TARGETS, 40),
        ("third", "h3", TARGETS, 7),
    ]
    assert not orphan.exists()
    assert living.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == [living.name]


def test_records_wait_in_order_while_sending_fails(tmp_path, monkeypatch):
    monkeypatch.setattr("proxy.spool.RETRY_SECONDS", 0.01)
    failures = 3
    sent: list[str] = []

    async def send(record_json: str, hold_id: str, targets: Targets, one_hour: int) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("still down")
        sent.append(record_json)

    async def scenario():
        spool = Spool(tmp_path, send)
        await spool.keep("a", "1", TARGETS)
        await spool.keep("b", "2", TARGETS)
        on_disk = (tmp_path / f"usage-{os.getpid()}.jsonl").read_text().splitlines()
        while spool.draining:
            await asyncio.sleep(0.01)
        return on_disk

    on_disk = asyncio.run(scenario())

    assert [json.loads(line)["e"] for line in on_disk] == ["a", "b"]
    assert sent == ["a", "b"]
    assert list(tmp_path.iterdir()) == []
