"""The channels' circuit breaker (proxy.breaker), through the relay on a real socket in front of
the fake upstream, on Redis or embedded (the same tests run in both modes): failures in a row
open a channel, its requests go to the group's next channel, one trial after the cool-down,
closing and re-opening; the state is shared by every worker; the admin shows it."""

import asyncio
import logging
import re
import threading
import time

import pytest
from django.conf import settings

from core import keyspace
from proxy.metrics import BREAKER
from proxy.models import Channel
from proxy.redis_connect import client_for
from proxy.selectors import channel_health_list
from proxy.store import RedisStore
from proxy.store.channel_health import Trial, local_channel_health
from tests.admin_pages import url

from .conftest import usage_events
from .test_checkpoints import _free_port, _start_gunicorn
from .test_checkpoints import pytestmark as needs_a_second_process
from .test_forwarding import MESSAGE, route_group
from .test_two_hosts import _call

FAILURES_TO_OPEN = 3
COOLDOWN_SECONDS = 1.0

needs_redis = pytest.mark.skipif(settings.REDIS is None, reason="needs Redis")


@pytest.fixture(autouse=True)
def breaker_settings(settings):
    settings.CHANNEL_FAILURES_TO_OPEN = FAILURES_TO_OPEN
    settings.CHANNEL_COOLDOWN_SECONDS = COOLDOWN_SECONDS
    local_channel_health.reset()
    yield
    local_channel_health.reset()


@pytest.fixture
def failing(relay, member):
    """The key's group routed to `first` (answering 500) then `second` (healthy)."""
    broken = relay.upstream.backend("broken", status=500)
    backup = relay.upstream.backend("backup")
    route_group(
        relay, member, ("first", "anthropic", broken.url), ("second", "anthropic", backup.url)
    )
    return broken, backup


def health(name: str):
    channel = Channel.objects.get(name=name)
    return channel_health_list(channel_ids=[channel.pk])[channel.pk]


def post(relay) -> int:
    return relay.call("POST", "/v1/messages", MESSAGE).status


def open_first(relay, broken, backup) -> None:
    assert [post(relay) for _ in range(FAILURES_TO_OPEN)] == [200] * FAILURES_TO_OPEN
    assert (len(broken.requests), len(backup.requests)) == (FAILURES_TO_OPEN, FAILURES_TO_OPEN)


def concurrently(count: int, call) -> list:
    results = [None] * count

    def run(index: int) -> None:
        results[index] = call()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_failures_in_a_row_open_the_channel_and_the_next_request_skips_it(relay, failing, caplog):
    broken, backup = failing
    opened_before = BREAKER.labels("first", "open")._value.get()

    with caplog.at_level(logging.INFO, logger="proxy"):
        open_first(relay, broken, backup)
        assert [post(relay) for _ in range(4)] == [200] * 4

    # The first backend received nothing more: the requests went straight to the second.
    assert (len(broken.requests), len(backup.requests)) == (FAILURES_TO_OPEN, FAILURES_TO_OPEN + 4)
    assert "Channel first open after 3 failure(s) in a row: skipped for 1 s" in caplog.messages
    state = health("first")
    assert (state.state, state.failures, state.last_error) == ("open", 3, "status 500")
    assert state.opened_at is not None and not state.trial_running
    assert health("second").state == "closed"
    # Counted in the metrics once flushed (once a second).
    time.sleep(1.3)
    assert BREAKER.labels("first", "open")._value.get() == opened_before + 1
    events = usage_events(key=relay.key, count=7)
    assert [event.status_code for event in events] == [200] * 7


def test_a_timeout_counts_as_a_failure(relay, member):
    slow = relay.upstream.backend("slow", delay_seconds=3)
    backup = relay.upstream.backend("backup")
    route_group(
        relay, member, ("first", "anthropic", slow.url, 1), ("second", "anthropic", backup.url)
    )

    assert [post(relay) for _ in range(FAILURES_TO_OPEN)] == [200] * FAILURES_TO_OPEN
    started = time.monotonic()
    assert post(relay) == 200

    assert time.monotonic() - started < 0.9  # no wait for the open channel's timeout
    assert len(slow.requests) == FAILURES_TO_OPEN
    state = health("first")
    assert (state.state, state.failures, state.last_error) == ("open", 3, "timeout")


def test_a_success_between_failures_starts_the_count_again(relay, failing):
    broken, backup = failing
    assert [post(relay) for _ in range(FAILURES_TO_OPEN - 1)] == [200] * (FAILURES_TO_OPEN - 1)
    assert health("first").failures == FAILURES_TO_OPEN - 1
    broken.status = 200
    assert post(relay) == 200
    assert len(backup.requests) == FAILURES_TO_OPEN - 1
    assert (health("first").state, health("first").failures) == ("closed", 0)
    broken.status = 500

    assert [post(relay) for _ in range(FAILURES_TO_OPEN - 1)] == [200] * (FAILURES_TO_OPEN - 1)
    assert post(relay) == 200

    assert health("first").state == "open"
    assert len(broken.requests) == 2 * FAILURES_TO_OPEN


def test_after_the_cooldown_exactly_one_trial_reaches_it_and_its_success_closes_it(relay, failing):
    broken, backup = failing
    open_first(relay, broken, backup)
    broken.status = 200
    broken.delay_seconds = 0.5  # the trial is still running when the others arrive
    time.sleep(COOLDOWN_SECONDS + 0.1)
    assert health("first").state == "half-open"

    statuses = concurrently(6, lambda: post(relay))

    assert statuses == [200] * 6
    # One trial reached the first channel; the five others went to the second.
    assert len(broken.requests) == FAILURES_TO_OPEN + 1
    assert len(backup.requests) == FAILURES_TO_OPEN + 5
    state = health("first")
    assert (state.state, state.failures, state.last_error) == ("closed", 0, "status 500")
    assert state.opened_at is None

    broken.delay_seconds = 0
    assert post(relay) == 200
    assert len(broken.requests) == FAILURES_TO_OPEN + 2  # closed: first in line again
    assert len(backup.requests) == FAILURES_TO_OPEN + 5


def test_a_failed_trial_opens_it_again_for_another_cooldown(relay, failing):
    broken, backup = failing
    open_first(relay, broken, backup)
    first_opened = health("first").opened_at
    time.sleep(COOLDOWN_SECONDS + 0.1)

    assert post(relay) == 200  # the trial fails, the second channel answers
    assert len(broken.requests) == FAILURES_TO_OPEN + 1
    state = health("first")
    assert (state.state, state.failures) == ("open", FAILURES_TO_OPEN + 1)
    assert state.opened_at > first_opened

    assert [post(relay) for _ in range(3)] == [200] * 3
    assert len(broken.requests) == FAILURES_TO_OPEN + 1  # skipped for the new cool-down
    assert len(backup.requests) == FAILURES_TO_OPEN + 4


def test_every_channel_open_tries_the_least_recently_opened_one(relay, member):
    first = relay.upstream.backend("broken-a", status=500)
    second = relay.upstream.backend("broken-b", status=503)
    route_group(
        relay, member, ("first", "anthropic", first.url), ("second", "anthropic", second.url)
    )
    assert [post(relay) for _ in range(FAILURES_TO_OPEN)] == [502] * FAILURES_TO_OPEN
    assert (health("first").state, health("second").state) == ("open", "open")

    # `first` opened a moment before `second` (the same request failed over): tried alone.
    response = relay.call("POST", "/v1/messages", MESSAGE)
    assert response.status == 502
    assert response.json()["error"]["message"] == (
        "No upstream channel of group “Failover” answered (1 tried). Try again in a moment."
    )
    assert (len(first.requests), len(second.requests)) == (4, 3)
    # Its failure opened it again: `second` is now the least recently opened.
    assert post(relay) == 502
    assert (len(first.requests), len(second.requests)) == (4, 4)
    # A success there closes it, and the group has a channel again.
    first.status = 200
    assert post(relay) == 200
    assert (len(first.requests), len(second.requests)) == (5, 4)
    assert (health("first").state, health("second").state) == ("closed", "open")


def test_a_deactivated_channel_does_not_count_against_its_health(relay, member):
    unused = relay.upstream.backend("unused")
    backup = relay.upstream.backend("backup")
    route_group(
        relay, member, ("first", "anthropic", unused.url), ("second", "anthropic", backup.url)
    )
    Channel.objects.filter(name="first").update(is_active=False)

    assert [post(relay) for _ in range(FAILURES_TO_OPEN + 1)] == [200] * (FAILURES_TO_OPEN + 1)

    assert (health("first").state, health("first").failures) == ("closed", 0)


def health_cells(page: str, fields: list[str]) -> dict[str, str]:
    """The text of the health fields on an admin page (a changelist row's cells or the change
    form's read-only values)."""
    found = {}
    for field in fields:
        match = re.search(
            rf'class="[^"]*field-{field}[^"]*">(?:.*?<div class="readonly">)?(.*?)</(?:td|div)>',
            page,
            re.S,
        )
        found[field] = match.group(1).strip() if match else None
    return found


def test_the_admin_shows_the_state_and_last_error_without_url_or_credential(
    relay, failing, admin_client, settings
):
    settings.CHANNEL_COOLDOWN_SECONDS = 30
    broken, backup = failing
    open_first(relay, broken, backup)
    post(relay)
    time.sleep(1.3)  # the request counts are sent once a second
    channel = Channel.objects.get(name="first")

    changelist = admin_client.get(url("proxy_channel_changelist")).content.decode()
    change = admin_client.get(url("proxy_channel_change", channel.pk)).content.decode()

    fields = ["health_state", "health_failures", "health_error_rate", "health_last_error"]
    row = changelist[changelist.index(f'value="{channel.pk}"') :]
    cells = health_cells(row, fields)
    assert cells == health_cells(change, fields)
    assert cells["health_state"] == "open"
    assert cells["health_failures"] == "3"
    assert cells["health_error_rate"] == "100% of 3"  # 3 sent to it in 15 minutes, all failed
    assert re.fullmatch(
        r"status 500 \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)", cells["health_last_error"]
    )
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+",
        health_cells(change, ["health_opened_at"])["health_opened_at"],
    )
    # The healthy channel of the group.
    second = Channel.objects.get(name="second")
    row = changelist[changelist.index(f'value="{second.pk}"') :]
    assert health_cells(row, fields) == {
        "health_state": "closed",
        "health_failures": "0",
        "health_error_rate": "0% of 4",
        "health_last_error": "-",
    }
    for page in (changelist, change):
        assert "credential-of-first" not in page and channel.encrypted_credential not in page
    # The channel's URL is in its own field only, never in what the health shows.
    fieldset = change[change.index(">Health<") :]
    fieldset = fieldset[: fieldset.index("</fieldset>")]
    assert "field-health_last_error" in fieldset
    assert relay.upstream.base_url not in fieldset and "127.0.0.1" not in fieldset
    assert "127.0.0.1" not in "".join(cells.values())


# --- the state shared by several workers -------------------------------------------------


async def _wait_for(condition, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@needs_redis
def test_two_workers_share_the_state_and_exactly_one_takes_the_trial():
    """Two RedisStores (two workers): one records the failures, the other learns the channel is
    open at once (its subscription, well before the once-a-second refresh); after the
    cool-down, of many requests on both, one takes the trial; its success reaches the other."""
    channel_id = 987_001

    async def scenario():
        one, two = RedisStore(client_for(settings.REDIS)), RedisStore(client_for(settings.REDIS))
        try:
            await two.channel_health.ready()  # its first read and its subscription
            assert two.channel_health.view() == {}
            for _ in range(FAILURES_TO_OPEN):
                outcome = await one.channel_health.failed(
                    channel_id, "status 502", failures_to_open=FAILURES_TO_OPEN, reopen=False
                )
            assert outcome.transition == "open"
            learned = await _wait_for(lambda: two.channel_health.view().get(channel_id), 0.5)
            skipped = await two.channel_health.trial(
                channel_id, cooldown_seconds=COOLDOWN_SECONDS, lease_seconds=5
            )
            await asyncio.sleep(COOLDOWN_SECONDS)
            trials = await asyncio.gather(
                *(
                    store.channel_health.trial(
                        channel_id, cooldown_seconds=COOLDOWN_SECONDS, lease_seconds=5
                    )
                    for store in (one, two) * 10
                )
            )
            closed = await two.channel_health.succeeded(channel_id)
            forgotten = await _wait_for(lambda: channel_id not in one.channel_health.view(), 0.5)
            return learned, skipped, trials, closed, forgotten
        finally:
            await one.redis.execute(
                "DEL",
                keyspace.channel_health(channel_id),
                keyspace.channel_trial(channel_id),
                keyspace.CHANNEL_HEALTH_INDEX,
            )
            await one.close()
            await two.close()

    learned, skipped, trials, closed, forgotten = asyncio.run(scenario())

    assert learned < 0.5 and forgotten < 0.5
    assert skipped is Trial.SKIP  # still cooling down
    assert sorted(trial.value for trial in trials) == ["skip"] * 19 + ["trial"]
    assert closed.transition == "closed"


@needs_a_second_process
def test_a_gunicorn_with_two_workers_shares_the_open_channel(relay, failing, tmp_path):
    """A real gunicorn, two workers: once the failures (wherever they were served) open the
    channel, no request through either worker reaches it."""
    broken, backup = failing
    port = _free_port()
    master = _start_gunicorn(
        port,
        tmp_path,
        WEB_CONCURRENCY="2",
        CHANNEL_FAILURES_TO_OPEN=str(FAILURES_TO_OPEN),
        CHANNEL_COOLDOWN_SECONDS="30",
    )
    headers = {"x-api-key": relay.plaintext, "content-type": "application/json"}
    try:
        # Both workers serve (each its first request loads the state), then the failures.
        statuses = concurrently(8, lambda: _call(port, "POST", "/v1/messages", MESSAGE, headers)[0])
        assert statuses == [200] * 8
        assert len(broken.requests) >= FAILURES_TO_OPEN
        opened_with = len(broken.requests)
        assert health("first").state == "open"

        statuses = concurrently(
            20, lambda: _call(port, "POST", "/v1/messages", MESSAGE, headers)[0]
        )
    finally:
        master.terminate()
        master.wait(30)

    assert statuses == [200] * 20
    assert len(broken.requests) == opened_with
    assert len(backup.requests) == 28


def test_the_embedded_state_holds_one_trial_and_reopens_on_its_failure():
    """LocalChannelHealth: the same transitions as the Redis scripts."""
    channel_id = 987_002
    health_state = local_channel_health

    async def scenario():
        outcomes = [
            await health_state.failed(
                channel_id, "timeout", failures_to_open=FAILURES_TO_OPEN, reopen=False
            )
            for _ in range(FAILURES_TO_OPEN)
        ]
        opened = health_state.view()[channel_id]
        early = await health_state.trial(channel_id, cooldown_seconds=0.2, lease_seconds=5)
        await asyncio.sleep(0.25)
        trials = [
            await health_state.trial(channel_id, cooldown_seconds=0.2, lease_seconds=5)
            for _ in range(5)
        ]
        reopened = await health_state.failed(
            channel_id, "status 500", failures_to_open=FAILURES_TO_OPEN, reopen=True
        )
        return outcomes, opened, early, trials, reopened, health_state.view()[channel_id]

    outcomes, opened, early, trials, reopened, opened_again = asyncio.run(scenario())

    assert [outcome.transition for outcome in outcomes] == [None, None, "open"]
    assert early is Trial.SKIP
    assert trials == [Trial.TRIAL] + [Trial.SKIP] * 4
    assert (reopened.transition, reopened.failures) == ("open", 4)
    assert opened_again > opened
