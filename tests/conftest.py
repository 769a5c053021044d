import socket
import threading
import time

import pytest
import uvicorn
from django.conf import settings
from django.core.cache import cache
from django.utils import translation

from core.catalogues import compile_catalogues
from keys.models import Membership

from .factories import GroupFactory, MembershipFactory, TeamFactory, make_key
from .redis_cluster import MISSING as CLUSTER_MISSING
from .redis_cluster import RedisCluster
from .redis_server import REDIS_SERVER, RedisServer, SentinelSetup
from .redis_slots import SlotChecker


def pytest_sessionstart(session):
    """The translation catalogues' .mo files, which are built, not committed: the pages in
    Chinese need them even when pytest runs without scripts/test."""
    compile_catalogues([settings.BASE_DIR / "locale"])


@pytest.fixture(autouse=True)
def _clear_cache():
    """Each test starts with an empty cache (local memory or the Redis test database)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _default_language():
    """Each test starts in the default language. LocaleMiddleware activates a request's
    language for its thread and leaves it there, so a test that asked for a page in Chinese
    would otherwise leave the next test's direct service calls answering in Chinese."""
    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture
def team(db):
    return TeamFactory(name="Acme", slug="acme")


@pytest.fixture
def other_team(db):
    return TeamFactory(name="Globex", slug="globex")


@pytest.fixture
def group(db):
    return GroupFactory(name="CC Official Channel", models=["claude-*"])


@pytest.fixture
def lead(team):
    return MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="lead").user


@pytest.fixture
def member(team):
    return MembershipFactory(team=team, user__username="member").user


@pytest.fixture
def outsider(other_team):
    return MembershipFactory(
        team=other_team, role=Membership.Role.LEAD, user__username="outsider"
    ).user


@pytest.fixture
def issued(team, member, group):
    """A fresh key of `member` in `team`, with its plaintext."""
    return make_key(team=team, owner=member, group=group, actor=member)


@pytest.fixture(scope="session")
def relay_server():
    """hcai.asgi.application (portal, API and relay) under uvicorn on a free port, in a thread
    of this process, so it shares the test database and cache. One server for the whole run:
    the relay keeps connections bound to its event loop, which a second server in another
    thread's loop must not share. Yields (base URL, the relay app)."""
    from hcai.asgi import application, relay

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # proxy_headers=False: the relay must see the socket peer and apply TRUSTED_PROXIES itself
    # (uvicorn would otherwise rewrite the client address from X-Forwarded-For).
    config = uvicorn.Config(
        application, lifespan="on", proxy_headers=False, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", relay
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def redis_single_slot(request, monkeypatch):
    """With Redis, every script and multi-key command the test sends (through the relay's
    client or redis-py) must touch one hash slot, as a Redis Cluster demands
    (tests/redis_slots.py); the tests of the relay and billing use it throughout (their
    conftest). A test that crosses slots on purpose says why with
    @pytest.mark.cross_slot_allowed("..."), and is skipped on a Redis Cluster (REDIS_CLUSTER_NODES).
    """
    allowed = request.node.get_closest_marker("cross_slot_allowed")
    if allowed is not None and settings.REDIS is not None and settings.REDIS.mode == "cluster":
        pytest.skip(f"crosses hash slots, which a Redis Cluster refuses: {allowed.args[0]}")
    if settings.REDIS is None or allowed is not None:
        yield None
        return
    checker = SlotChecker()
    checker.install(monkeypatch)
    yield checker
    assert not checker.cross_slot, "cross-slot Redis commands:\n" + "\n".join(checker.cross_slot)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own (tests/redis_server.py), keeping its data in an
    append-only file, for tests that kill, pause or restart Redis."""
    if REDIS_SERVER is None:
        pytest.skip("needs redis-server")
    server = RedisServer(tmp_path, append_only=True).start()
    yield server
    server.stop()


@pytest.fixture
def sentinel_redis(tmp_path):
    """A primary, its replica and three sentinels of the test's own (tests/redis_server.py),
    for tests that kill the primary; stopped even when the test fails."""
    if REDIS_SERVER is None:
        pytest.skip("needs redis-server")
    setup = SentinelSetup(tmp_path)
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real 3-primary Redis Cluster on 127.0.0.1:17001-17003 (tests/redis_cluster.py), for
    the whole run: tests may write and migrate slots (and move them back), never kill a node."""
    if CLUSTER_MISSING:
        pytest.skip(CLUSTER_MISSING)
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), [17001, 17002, 17003])
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def doomed_redis_cluster(tmp_path):
    """A 3-primary Redis Cluster of the test's own on 127.0.0.1:17004-17006, for tests that
    kill a node."""
    if CLUSTER_MISSING:
        pytest.skip(CLUSTER_MISSING)
    cluster = RedisCluster(tmp_path / "redis-cluster", [17004, 17005, 17006])
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def replicated_redis_cluster(tmp_path):
    """A Redis Cluster of the test's own with one replica per primary (six nodes on
    127.0.0.1:17301-17306) and a 1-second node timeout, for tests that kill a primary and watch
    its replica take over."""
    if CLUSTER_MISSING:
        pytest.skip(CLUSTER_MISSING)
    cluster = RedisCluster(
        tmp_path / "redis-cluster", list(range(17301, 17307)), replicas=1, node_timeout_ms=1000
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def zh_catalogue():
    """The Simplified Chinese catalogue, compiled: the .mo is built from the committed .po (by
    compilemessages in CI and the quickstart), never committed. Tests that read pages in Chinese
    ask for this; it compiles the one file when the .mo is missing or older than the .po."""
    import subprocess

    from django.conf import settings
    from django.utils.translation import trans_real

    po = settings.BASE_DIR / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
    mo = po.with_suffix(".mo")
    if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
        subprocess.run(["msgfmt", "--check-format", "-o", str(mo), str(po)], check=True)
    # Catalogues already loaded without it are read again.
    trans_real._translations = {}
    trans_real._default = None
