"""The relay through a Redis Cluster failover: a real gunicorn relay with REDIS_CLUSTER_NODES set
serves two teams whose names live on different primaries of a cluster with one replica per
primary (tests/redis_cluster.py), while the primary holding one team's names is SIGKILLed. Each
team's key has a quota, so each request is admitted by a script on its team's names; each key's
snapshot (keystate:{<digest>}, placed by the key's digest, not its team) lives on a primary
that survives, and the primary killed also holds the names all teams share (channel health,
refusal counts).

The other team's requests are answered 200 throughout (the relay's cluster client fails only
the dead node's slots). The killed primary's team gets 200s or the relay's retryable 503 until
the replica is promoted, then 200s again, without restarting the relay (its client reads the
slot map again after the node's connection failed). Every request answered 200 is billed
exactly once, including those whose usage was spooled on disk while their slot had no primary.

Replication is asynchronous: a record the primary acknowledged in the moment before a crash
may not have reached its replica, and is then lost with the primary (README, "Usage during a
failover"). So the test holds the primary's writes (CLIENT PAUSE WRITE) and waits until the
replica has applied everything before the kill: it asserts that nothing replicated is lost or
doubled through the failover, not that asynchronous replication loses nothing.
"""

import functools
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from redis.crc import key_slot

from billing import ledger
from billing.models import UsageEvent
from billing.services import ingest_usage_stream
from core import keyspace
from core.redis_config import redis_config
from keys.models import Membership
from proxy.gate import key_digest
from tests.factories import MembershipFactory, TeamFactory, make_key
from tests.threads import join, start_thread

from .test_checkpoints import _free_port, _start_gunicorn, _worker_of
from .test_gate import UNAVAILABLE
from .test_sentinel import _post

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the relay's process shares the test's PostgreSQL"
)
CLIENTS_PER_TEAM = 2


def _port_of(cluster, name: str) -> int:
    """The port of the primary serving the name's hash slot."""
    return cluster.port_of_slot(key_slot(name.encode()))


def _team_on(cluster, group, *, primary: int, on: bool):
    """A key of a new team whose names (core.keyspace) live on `primary` (`on`) or on another
    primary, and whose snapshot (keystate:{<digest>}, spread by the key's digest) lives on a
    primary other than `primary`. Bounded: each try has about one chance in three or two in
    three."""
    for _ in range(60):
        team = TeamFactory()
        if (_port_of(cluster, keyspace.team_prefix(team.id)) == primary) == on:
            break
    else:
        raise AssertionError(f"no team found whose names live {'on' if on else 'off'} {primary}")
    lead = MembershipFactory(team=team, role=Membership.Role.LEAD).user
    for attempt in range(30):
        # A quota: every request is admitted by a script on the team's names (a key without
        # limits needs no admission, and is served while its team's primary is down, its usage
        # spooled).
        issued = make_key(
            team=team,
            owner=lead,
            group=group,
            actor=lead,
            name=f"failover-{attempt}",
            quota_limit_usd="100",
        )
        if _port_of(cluster, keyspace.snapshot(key_digest(issued.plaintext))) != primary:
            return issued
    raise AssertionError(f"no key found whose snapshot lives off {primary}")


@pytest.fixture
def cluster_settings(replicated_redis_cluster, settings):
    """This process ingests from the cluster, as a Celery worker would: its Redis settings, its
    cache (the running totals ingest reconciles) and the clients kept from them."""
    nodes = ",".join(f"{host}:{port}" for host, port in replicated_redis_cluster.nodes)
    settings.REDIS = redis_config(cluster_nodes=nodes)
    settings.CACHES = {"default": settings.REDIS.django_cache()}
    ledger.usage_stream_client.cache_clear()
    ledger.spend_totals.cache_clear()
    yield nodes
    ledger.usage_stream_client.cache_clear()
    ledger.spend_totals.cache_clear()


def test_a_primary_killed_mid_traffic_fails_over_to_its_replica(
    relay, replicated_redis_cluster, cluster_settings, tmp_path
):
    cluster = replicated_redis_cluster
    # The primary killed is the one holding the names every team shares (the channels' health,
    # the refusal counts): the other team's requests must not need them.
    victim = _port_of(cluster, keyspace.CHANNEL_HEALTH_INDEX)
    assert _port_of(cluster, keyspace.REFUSAL_MINUTES) == victim
    # Two teams: one whose names live on the primary killed, one whose names live on another.
    # A request needs its team's names and its key's snapshot: both keys' snapshots live off
    # the primary killed (a key whose snapshot lives there gets the retryable 503 until the
    # failover, whatever its team).
    issued = {
        "killed": _team_on(cluster, relay.group, primary=victim, on=True),
        "survivor": _team_on(cluster, relay.group, primary=victim, on=False),
    }
    plaintexts = {name: key.plaintext for name, key in issued.items()}

    port = _free_port()
    master = _start_gunicorn(
        port,
        tmp_path / "relay",
        REDIS_URL="",
        REDIS_SENTINELS="",
        REDIS_CLUSTER_NODES=cluster_settings,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    try:
        worker = _worker_of(master)
        answers: list[tuple[float, str, int, str, dict]] = []
        stop = threading.Event()
        errors: list[BaseException] = []

        def traffic(team_name: str) -> None:
            while not stop.is_set():
                status, request_id, body = _post(port, plaintexts[team_name])
                answers.append((time.monotonic(), team_name, status, request_id, body))
                if status == 503:
                    stop.wait(0.05)  # An SDK would wait for the retry-after; a short pause.

        def answered(team_name: str, status: int, since: float = 0) -> int:
            return sum(
                1
                for at, name, code, _, _ in list(answers)
                if name == team_name and code == status and at >= since
            )

        def wait_for(team_name: str, count: int, since: float, what: str) -> None:
            deadline = time.monotonic() + 20
            while answered(team_name, 200, since) < count:
                assert time.monotonic() < deadline, what
                assert not errors, errors
                time.sleep(0.02)

        def spooled() -> list[Path]:
            # The test settings' spool folder, named after the process that read them.
            folders = [
                Path(tempfile.gettempdir(), f"hcai-spool-{pid}") for pid in (master.pid, worker)
            ]
            return [path for folder in folders for path in folder.glob("usage-*.jsonl")]

        # Each request takes a while upstream, so requests admitted before the kill are
        # answered after it, and their usage finds no primary to take it.
        relay.primary.delay_seconds = 0.25
        clients = [
            start_thread(functools.partial(traffic, name), errors)
            for name in ("killed", "survivor")
            for _ in range(CLIENTS_PER_TEAM)
        ]
        try:
            wait_for("killed", 6, 0, "no traffic before the kill")
            wait_for("survivor", 6, 0, "no traffic before the kill")
            # Nothing the primary acknowledged is lost with it (see the module's docstring).
            cluster.pause_writes(victim, 5)
            replica = cluster.wait_for_replica(victim)
            cluster.kill(victim)
            killed = time.monotonic()
            cluster.wait_for_failover(victim, replica)
            promoted = time.monotonic()
            wait_for("killed", 8, promoted, "the killed primary's team was not served again")
            wait_for("survivor", 8, promoted, "the other team's traffic stopped")
        finally:
            stop.set()
            join(clients, timeout=30)

        assert errors == []
        assert master.poll() is None
        assert _worker_of(master) == worker  # the same relay worker throughout: no restart
        survivor = [(at, status) for at, name, status, _, _ in answers if name == "survivor"]
        victims = [(status, body) for _, name, status, _, body in answers if name == "killed"]
        # The other primary's team never noticed: 200s before, during and after the failover.
        assert {status for _, status in survivor} == {200}
        assert any(killed <= at <= promoted for at, _ in survivor)
        # The killed primary's team: 200s and the exact retryable 503 while no primary served
        # its slot, then 200s again (its last answers).
        assert {status for status, _ in victims} == {200, 503}
        for status, body in victims:
            if status == 503:
                assert body["error"] == {"type": "api_error", "message": UNAVAILABLE}
        assert [status for status, _ in victims[-CLIENTS_PER_TEAM * 3 :]] == [200] * (
            CLIENTS_PER_TEAM * 3
        )

        # Every 200 billed once: the spool is sent to the promoted replica, then ingested from
        # the cluster as a Celery worker would.
        ok = [request_id for _, _, status, request_id, _ in answers if status == 200]
        assert len(set(ok)) == len(ok)
        deadline = time.monotonic() + 20
        while spooled():
            assert time.monotonic() < deadline, "the spooled usage was never sent"
            time.sleep(0.05)
        keys = [key.key for key in issued.values()]
        # The last requests' usage is recorded just after their answers: ingest until it is in.
        while True:
            ingest_usage_stream()
            billed = list(UsageEvent.objects.filter(key__in=keys).values_list("request_id"))
            if len(billed) >= len(ok) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(request_id for (request_id,) in billed) == sorted(ok)
    finally:
        master.terminate()
        master.wait(30)
