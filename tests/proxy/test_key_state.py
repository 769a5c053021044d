"""A change to a key is obeyed by the very next request: the relay's cached snapshot can never
be written back over a newer change, a drop that cannot reach Redis is retried, and a snapshot
expires on its own within seconds (keys.cache, proxy.gate.load_key_state)."""

import asyncio
import logging
import threading
import time

import psycopg
import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection
from django.test import override_settings

from core import keyspace
from core.keyspace import generation_cache_key, snapshot_cache_key
from keys import services
from keys.cache import drop_key_state
from keys.models import ApiKey, digest_key
from keys.secret_formats import RELAY_KEY
from proxy import snapshots
from proxy.errors import RelayError
from proxy.gate import Gate, key_digest
from proxy.keystate import KEY_STATE_SECONDS, build_key_state
from proxy.prices import PriceTable
from proxy.store import make_store, run_db
from tests.factories import make_key
from tests.threads import join, start_thread, wait_for_a_lock_wait

from .conftest import CLAUDE

MESSAGE = {"model": CLAUDE, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="holds a PostgreSQL table lock"
)


def test_a_snapshot_built_before_a_change_is_not_stored_after_it(relay):
    """The race itself, step by step, on whichever store this run has: the relay reads the
    generation and the database, the change's drop lands, then the relay tries to store."""
    digest = relay.key.digest

    async def scenario():
        store = make_store()
        try:
            before = await store.key_state_generation(digest)
            stale = await run_db(build_key_state, digest)
            await run_db(drop_key_state, [digest])
            refused = await store.put_key_state(digest, stale, KEY_STATE_SECONDS, before)
            after_refusal = await store.get_key_state(digest)
            current = await store.key_state_generation(digest)
            stored = await store.put_key_state(digest, stale, KEY_STATE_SECONDS, current)
            return refused, after_refusal, stored, await store.get_key_state(digest)
        finally:
            await store.close()

    refused, after_refusal, stored, cached = asyncio.run(scenario())

    assert refused is False
    assert after_refusal is None
    assert stored is True
    assert cached is not None


def test_every_drop_moves_the_generation_and_removes_the_snapshot(relay):
    digest = relay.key.digest
    cache.set(snapshot_cache_key(digest), "cached")

    drop_key_state([digest])
    drop_key_state([digest])

    assert cache.get(snapshot_cache_key(digest)) is None
    assert cache.get(generation_cache_key(digest)) == 2


def _hold_route_table(locked: threading.Event, release: threading.Event) -> None:
    """Hold proxy_route in ACCESS EXCLUSIVE mode on a connection of its own, as a slow
    database moment would: a relay building a snapshot waits on its route query."""
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    ) as held:
        held.execute("LOCK TABLE proxy_route IN ACCESS EXCLUSIVE MODE")
        locked.set()
        assert release.wait(30)


def _snapshot_seconds_left(digest: str) -> int | None:
    """The snapshot's remaining TTL in Redis (None on the embedded default)."""
    if settings.REDIS is None:
        return None
    return cache._cache.get_client(write=False).ttl(keyspace.snapshot(digest))


@needs_postgresql
@pytest.mark.parametrize("change", ["disable", "rotate"])
def test_a_key_changed_while_the_relay_reads_it_is_obeyed_from_then_on(relay, member, change):
    """The issue's reproduction made deterministic: nothing cached, the route table held, one
    request building the key's snapshot behind the lock, the key disabled (or rotated)
    meanwhile. Before, the stale snapshot was stored for an hour after the change."""
    old_plaintext = relay.plaintext
    locked, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    in_flight: list = []
    holder = start_thread(lambda: _hold_route_table(locked, release), errors)
    assert locked.wait(30)
    request = start_thread(
        lambda: in_flight.append(relay.call("POST", "/v1/messages", MESSAGE)), errors
    )
    wait_for_a_lock_wait()
    if change == "disable":
        services.api_key_update(key=relay.key, actor=member, status=ApiKey.Status.DISABLED)
    else:
        new_plaintext = services.api_key_rotate(key=relay.key, actor=member).plaintext
    release.set()
    join([holder, request], timeout=30)
    assert errors == []

    later = [relay.call("POST", "/v1/messages", MESSAGE, key=old_plaintext) for _ in range(5)]

    if change == "disable":
        # The request in flight built again once its snapshot was refused, so it too sees the
        # change; every later one is refused.
        assert [response.status for response in [*in_flight, *later]] == [403] * 6
        assert {response.json()["error"]["type"] for response in later} == {"permission_error"}
        seconds_left = _snapshot_seconds_left(relay.key.digest)
        assert seconds_left is None or 0 < seconds_left <= KEY_STATE_SECONDS
    else:
        assert [response.status for response in [*in_flight, *later]] == [401] * 6
        assert relay.call("POST", "/v1/messages", MESSAGE, key=new_plaintext).status == 200
        assert cache.get(snapshot_cache_key(digest_key(old_plaintext))) is None


def test_concurrent_misses_in_one_process_build_the_snapshot_once(relay, monkeypatch):
    """When a busy key's snapshot expires, its requests in a worker wait for one database read
    instead of making one each."""
    builds: list[str] = []

    def counting_build(digest: str) -> bytes:
        builds.append(digest)
        time.sleep(0.05)  # long enough for every request to arrive while it runs
        return build_key_state(digest)

    monkeypatch.setattr(snapshots, "build_key_state", counting_build)

    async def scenario():
        store = make_store()
        gate = Gate(PriceTable())
        try:
            return await asyncio.gather(
                *(gate.check_listing(store, plaintext=relay.plaintext, client_ip="127.0.0.1")
                  for _ in range(50))
            )  # fmt: skip
        finally:
            await store.close()

    states = asyncio.run(scenario())

    assert {state.key_id for state in states} == {relay.key.pk}
    assert builds == [relay.key.digest]


def test_a_request_that_joins_a_build_begun_before_a_change_builds_its_own(
    relay, member, monkeypatch
):
    """A request arriving while another's build is under way may have started after a change
    that build predates: it uses the shared build only if the generation has not moved."""
    first_read = threading.Event()
    go_on = threading.Event()
    calls = []

    def build_held_once(digest: str) -> bytes:
        raw = build_key_state(digest)
        calls.append(raw)
        if len(calls) == 1:  # the first build read the enabled key; it waits here
            first_read.set()
            assert go_on.wait(30)
        return raw

    monkeypatch.setattr(snapshots, "build_key_state", build_held_once)

    async def scenario():
        store = make_store()
        gate = Gate(PriceTable())
        listing = dict(plaintext=relay.plaintext, client_ip="127.0.0.1")
        try:
            leader = asyncio.ensure_future(gate.check_listing(store, **listing))
            await asyncio.to_thread(first_read.wait, 30)
            await run_db(
                lambda: services.api_key_update(
                    key=relay.key, actor=member, status=ApiKey.Status.DISABLED
                )
            )
            joiner = asyncio.ensure_future(gate.check_listing(store, **listing))
            await asyncio.sleep(0.05)  # the joiner is now waiting on the leader's build
            go_on.set()
            return await asyncio.gather(leader, joiner, return_exceptions=True)
        finally:
            await store.close()

    leader, joiner = asyncio.run(scenario())

    # The leader rebuilt too (its store was refused), so both see the disabled key.
    assert [(outcome.status, outcome.code) for outcome in (leader, joiner)] == [
        (403, "key_disabled"),
        (403, "key_disabled"),
    ]


def test_a_drop_that_cannot_reach_redis_is_retried_until_it_does(
    relay,
    member,
    private_redis,
    caplog,
    monkeypatch,
):
    """Redis is down (SIGKILL) when a key is disabled; it comes back with its data (append-only
    file). The stale snapshot is dropped by the retry, not left for its TTL (an hour before)."""
    monkeypatch.setattr("keys.cache.RETRY_FIRST_PAUSE", 0.05)
    private_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": private_redis.url,
            "KEY_PREFIX": "hcai",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    digest = relay.key.digest
    with override_settings(CACHES=private_cache):
        cache.set(snapshot_cache_key(digest), "stale snapshot")
        private_redis.kill()
        with caplog.at_level(logging.WARNING, logger="keys.cache"):
            services.api_key_update(key=relay.key, actor=member, status=ApiKey.Status.DISABLED)
        assert "Could not drop the relay's snapshots of 1 key(s)" in caplog.text
        private_redis.start()
        assert cache.get(snapshot_cache_key(digest)) == "stale snapshot"  # survived the crash

        deadline = time.monotonic() + 15
        while cache.get(snapshot_cache_key(digest)) is not None:
            assert time.monotonic() < deadline, "the drop was never retried"
            time.sleep(0.05)
        assert cache.get(generation_cache_key(digest)) == 1
        cache.clear()


@pytest.mark.parametrize(
    "credential",
    [
        "sk-hc-",
        "sk-hc-" + "a" * 42,
        "sk-hc-" + "a" * 44,
        "SK-HC-" + "a" * 43,
        "sk-hc-" + "a" * 42 + "+",
        "sk-hc-" + "a" * 42 + "/",
        "sk-hc-" + "a" * 42 + " ",
        " sk-hc-" + "a" * 42,
        "sk-hc-" + "a" * 42 + "\u00e9",
        "hcat_" + "a" * 43,
    ],
)
def test_a_credential_not_shaped_like_a_key_is_refused_without_a_look_up(credential):
    with pytest.raises(RelayError) as refused:
        key_digest(credential)

    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")


def test_a_real_key_is_shaped_like_a_key():
    plaintext = RELAY_KEY.generate()

    assert key_digest(plaintext) == digest_key(plaintext)


def test_made_up_keys_leave_nothing_in_redis_and_repeats_cost_no_query(relay, monkeypatch):
    builds: list[str] = []

    def counting_build(digest: str) -> bytes:
        builds.append(digest)
        return build_key_state(digest)

    monkeypatch.setattr(snapshots, "build_key_state", counting_build)
    made_up = [RELAY_KEY.generate() for _ in range(5)]

    async def scenario():
        store = make_store()
        gate = Gate(PriceTable())
        refused = []
        try:
            for plaintext in made_up * 3:
                try:
                    await gate.check_listing(store, plaintext=plaintext, client_ip="127.0.0.1")
                except RelayError as error:
                    refused.append(error.code)
            stored = [await store.get_key_state(digest_key(p)) for p in made_up]
            return refused, stored
        finally:
            await store.close()

    refused, stored = asyncio.run(scenario())

    assert refused == ["invalid_api_key"] * 15
    assert builds == [digest_key(plaintext) for plaintext in made_up]
    assert stored == [None] * 5


def test_a_change_made_behind_the_services_back_is_obeyed_once_the_snapshot_is_due(
    relay, monkeypatch
):
    """A drop that never happened (a raw SQL update here; a lost drop alike): the snapshot is
    rebuilt in the background by the first request that finds it due, and the request after
    that obeys the change."""
    monkeypatch.setattr("proxy.keystate.KEY_STATE_REFRESH_SECONDS", 0)
    listing = {"plaintext": relay.plaintext, "client_ip": "127.0.0.1"}

    async def scenario():
        store = make_store()
        gate = Gate(PriceTable())
        try:
            first = await gate.check_listing(store, **listing)
            while (
                gate.snapshots.building
            ):  # its own snapshot is already due: its refresh goes first
                await asyncio.sleep(0.01)
            await run_db(
                lambda: ApiKey.objects.filter(pk=relay.key.pk).update(status=ApiKey.Status.DISABLED)
            )
            served_while_refreshing = await gate.check_listing(store, **listing)
            while gate.snapshots.building:
                await asyncio.sleep(0.01)
            try:
                await gate.check_listing(store, **listing)
            except RelayError as error:
                return first, served_while_refreshing, error
        finally:
            await store.close()

    first, served_while_refreshing, refused = asyncio.run(scenario())

    assert first.enabled and served_while_refreshing.enabled
    assert (refused.status, refused.code) == (403, "key_disabled")


def test_warm_keys_go_on_through_a_database_outage(relay, relay_server, monkeypatch, caplog):
    """Before, a failed price reload was fatal and warm keys stopped within 30 s of a database
    outage. A snapshot still in the cache was not dropped by any change, so it is used while
    its refresh fails; a key with no snapshot cannot be checked and gets the retryable 503."""
    monkeypatch.setattr("proxy.keystate.KEY_STATE_REFRESH_SECONDS", 0)
    _, app = relay_server
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    cold = make_key(team=relay.key.team, owner=relay.key.owner, group=relay.group, actor=None)

    def database_down(*args):
        raise OperationalError("connection refused (the test's outage)")

    monkeypatch.setattr(snapshots, "build_key_state", database_down)
    monkeypatch.setattr("proxy.prices.load_price_table", database_down)
    app.prices.forget()  # due for a reload, which fails
    with caplog.at_level(logging.WARNING, logger="proxy"):
        warm = [relay.call("POST", "/v1/messages", MESSAGE).status for _ in range(5)]
        cold_status = relay.call("POST", "/v1/messages", MESSAGE, key=cold.plaintext).status

    assert warm == [200] * 5
    assert cold_status == 503
    assert "Could not refresh a key's snapshot (OperationalError" in caplog.text
    assert "Could not reload prices (OperationalError" in caplog.text


@pytest.mark.skipif(settings.REDIS is None, reason="the names of the previous release in Redis")
def test_a_drop_also_reaches_the_snapshot_a_relay_of_the_previous_release_stored():
    """During a deploy a relay of the release before the hash tags (core.keyspace) still reads
    and stores snapshots under its names: a change drops those too, one digest's names at a
    time (each command in one slot), and bumps both generations."""
    client = cache._cache.get_client(write=True)
    digests = ["d1g3st-a", "d1g3st-b"]
    for digest in digests:
        client.set(keyspace.snapshot(digest), b"new", ex=60)
        client.set(keyspace.legacy_snapshot(digest), b"old", ex=60)

    drop_key_state(digests)

    for digest in digests:
        assert client.exists(keyspace.snapshot(digest)) == 0
        assert client.exists(keyspace.legacy_snapshot(digest)) == 0
        assert int(client.get(keyspace.generation(digest))) == 1
        assert int(client.get(keyspace.legacy_generation(digest))) == 1
