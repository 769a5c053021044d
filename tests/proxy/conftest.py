"""The relay under test: hcai.asgi.application served by uvicorn on a real socket, in a thread,
in front of a fake vendor (fake_upstream.py) on another real socket.

The server runs in this process, so it shares the test database and, on the embedded default,
the local-memory cache the services invalidate. Tests that talk to it use `transactional_db`:
their data must be committed for the server's threads to see it.
"""

import http.client
import json
import time
from dataclasses import dataclass
from decimal import Decimal

import anthropic
import openai
import pytest
from django.conf import settings

from billing.models import ModelPrice, UsageEvent
from billing.services import ingest_usage_stream
from billing.windows import Counter, Scope
from core import keyspace
from keys.models import Membership
from proxy.quota import Limit, Plan
from proxy.services import channel_upsert
from tests.factories import GroupFactory, MembershipFactory, make_key

from .fake_upstream import Backend, FakeUpstream


@pytest.fixture(autouse=True)
def _single_slot(redis_single_slot):
    """Every relay test proves, with Redis, that its scripts and multi-key commands touch one
    hash slot each (tests/redis_slots.py), as a Redis Cluster demands."""
    return redis_single_slot


CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-4o"
ANTHROPIC_SECRET = "sk-ant-upstream-credential-do-not-leak"
OPENAI_SECRET = "sk-openai-upstream-credential-do-not-leak"


@pytest.fixture(scope="session")
def fake_upstream():
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Relay:
    url: str
    upstream: FakeUpstream
    primary: Backend
    key: object
    plaintext: str
    group: object

    def anthropic(self, plaintext: str | None = None, *, bearer: bool = False, **options):
        token = plaintext or self.plaintext
        credentials = {"auth_token": token} if bearer else {"api_key": token}
        return anthropic.Anthropic(base_url=self.url, max_retries=0, **credentials, **options)

    def openai(self, plaintext: str | None = None, **options):
        return openai.OpenAI(
            api_key=plaintext or self.plaintext, base_url=self.url + "/v1", max_retries=0, **options
        )

    def call(
        self,
        method: str,
        path: str,
        body: bytes | dict | None = None,
        headers: dict[str, str] | None = None,
        *,
        key: str | None = "default",
    ) -> Response:
        """A raw HTTP request; `key` goes in x-api-key (None sends no credential)."""
        headers = dict(headers or {})
        if key is not None:
            headers.setdefault("x-api-key", self.plaintext if key == "default" else key)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("content-type", "application/json")
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Response(
                response.status,
                {name.lower(): value for name, value in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()


@pytest.fixture
def prices(transactional_db):
    return {
        CLAUDE: ModelPrice.objects.create(
            model=CLAUDE,
            input_per_mtok=Decimal("3"),
            output_per_mtok=Decimal("15"),
            cache_write_per_mtok=Decimal("3.75"),
            cache_write_1h_per_mtok=Decimal("6"),
            cache_read_per_mtok=Decimal("0.30"),
        ),
        GPT: ModelPrice.objects.create(
            model=GPT,
            input_per_mtok=Decimal("2.50"),
            output_per_mtok=Decimal("10"),
            cache_read_per_mtok=Decimal("1.25"),
        ),
    }


@pytest.fixture
def member(team):
    """The owner of the relay's key, who changes its settings in these tests as a lead of its
    team would: what a plain member may change (keys.policy) is tested in tests/keys."""
    return MembershipFactory(team=team, role=Membership.Role.LEAD, user__username="member").user


@pytest.fixture
def relay(transactional_db, relay_server, fake_upstream, prices, team, member):
    """A key in a group routed to the fake upstream's `primary` backend (both APIs)."""
    url, app = relay_server
    app.prices.forget()
    fake_upstream.reset()
    primary = fake_upstream.backend("primary")
    group = GroupFactory(name="Relay", models=["claude-*", "gpt-*"], multiplier=Decimal("1.5"))
    channel_upsert(
        name="anthropic-primary",
        provider="anthropic",
        base_url=primary.url,
        credential=ANTHROPIC_SECRET,
        groups=[group],
    )
    channel_upsert(
        name="openai-primary",
        provider="openai",
        # Written the way OpenAI's base URL usually is, ending in /v1.
        base_url=primary.url + "/v1",
        credential=OPENAI_SECRET,
        groups=[group],
    )
    issued = make_key(team=team, owner=member, group=group, actor=member)
    yield Relay(url, fake_upstream, primary, issued.key, issued.plaintext, group)
    fake_upstream.reset()


def usage_events(timeout: float = 5.0, *, count: int = 1, **filters) -> list[UsageEvent]:
    """Wait until `count` usage events match (recording happens after the response), in the
    order the requests arrived: on the embedded default the rows are written from threads, so
    their ids need not follow the requests."""
    deadline = time.monotonic() + timeout
    while True:
        if settings.REDIS is not None:
            ingest_usage_stream()
        events = list(UsageEvent.objects.filter(**filters).order_by("created_at", "id"))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def quota_plan(
    key_id: int,
    *,
    team_id: int = 70,
    limit_units: int,
    estimate_units: int,
    minimum_units: int = 1,
) -> Plan:
    """An admission against a key's lifetime quota alone (the key's team: `team_id`)."""
    lifetime = Counter(Scope.KEY, team_id, key_id)
    return Plan(
        key_id=key_id,
        team_id=team_id,
        limits=(Limit("quota", lifetime, limit_units),),
        estimate_units=estimate_units,
        minimum_units=minimum_units,
        hold_seconds=60,
        holds=(keyspace.reservations(team_id, key_id),),
    )
