"""GET /metrics (hcai.views.metrics, core.metrics): who may scrape, what is read when scraped."""

import re
import time

import pytest
from django.conf import settings
from django.test import override_settings
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from billing import ledger, tasks
from core import keyspace
from proxy.metrics import ADDED_BUCKETS, _Histogram, add_observations

needs_redis = pytest.mark.skipif(settings.REDIS is None, reason="the stream lives in Redis")


def sample(text: str, name: str, **labels) -> float | None:
    """A sample's value in a scrape, or None when it is not there."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def test_a_scraper_on_this_host_may_scrape_without_a_token(client):
    response = client.get("/metrics")  # the test client's peer is 127.0.0.1

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")


def test_a_scraper_elsewhere_is_told_nothing_is_here_without_a_token(client):
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.5").status_code == 404


@override_settings(METRICS_TOKEN="scrape-secret")
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 404),
        ("Bearer wrong", 404),
        ("Token scrape-secret", 404),
        ("Bearer scrape-secret", 200),
        ("bearer scrape-secret", 200),
    ],
)
def test_with_a_token_only_its_bearer_may_scrape(client, authorization, status):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    # With a token set, even a scraper on this host needs it.
    assert client.get("/metrics", **headers).status_code == status


def test_counts_added_per_bucket_equal_observing_one_at_a_time():
    values = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.09, 2.0, 0.25]
    observed_registry, added_registry = CollectorRegistry(), CollectorRegistry()
    observed = Histogram("t_seconds", "t", buckets=ADDED_BUCKETS, registry=observed_registry)
    added = Histogram("t_seconds", "t", buckets=ADDED_BUCKETS, registry=added_registry)
    counted = _Histogram(ADDED_BUCKETS)
    for value in values:
        observed.observe(value)
        counted.observe(value)

    add_observations(added, counted.counts, counted.total)

    def without_creation_times(registry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return [line for line in lines if "_created" not in line]

    assert without_creation_times(added_registry) == without_creation_times(observed_registry)


@needs_redis
def test_the_usage_backlog_and_its_lag_are_read_when_scraped(client, settings):
    """The backlog is every shard's stream's (and the one before the hash tags'), the lag that
    of the oldest entry in any of them."""
    redis = ledger.usage_stream_client()
    seconds, _ = redis.time()
    redis.xadd(keyspace.usage_stream(40), {"e": b"{}"}, id=f"{(seconds - 60) * 1000}-0")
    redis.xadd(keyspace.usage_stream(5), {"e": b"{}"}, id=f"{(seconds - 120) * 1000}-0")
    redis.xadd(keyspace.usage_stream(5), {"e": b"{}"})
    redis.xadd(keyspace.LEGACY_USAGE_STREAM, {"e": b"{}"})

    text = client.get("/metrics").content.decode()

    assert sample(text, "hcai_usage_stream_backlog") == 4
    assert 120 <= sample(text, "hcai_usage_ingest_lag_seconds") < 130


@needs_redis
@pytest.mark.django_db
def test_readyz_fails_when_usage_waits_longer_than_allowed(client, settings):
    settings.READYZ_MAX_INGEST_LAG_SECONDS = 60
    redis = ledger.usage_stream_client()
    seconds, _ = redis.time()
    redis.xadd(keyspace.usage_stream(63), {"e": b"{}"}, id=f"{(seconds - 120) * 1000}-0")

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "down": ["usage-ingest"]}


@needs_redis
@pytest.mark.django_db
def test_readyz_is_ok_when_ingest_keeps_up(client):
    ledger.usage_stream_client().xadd(keyspace.usage_stream(0), {"e": b"{}"})

    assert client.get("/readyz").json() == {"status": "ok"}


@needs_redis
@pytest.mark.django_db
def test_celery_task_outcomes_are_counted_for_every_host(client):
    before = sample(
        client.get("/metrics").content.decode(),
        "hcai_celery_tasks_total",
        outcome="success",
        task="billing.tasks.settle_usage",
    )

    tasks.settle_usage.apply().get()

    deadline = time.monotonic() + 5
    while True:
        after = sample(
            client.get("/metrics").content.decode(),
            "hcai_celery_tasks_total",
            outcome="success",
            task="billing.tasks.settle_usage",
        )
        if after == (before or 0) + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after == (before or 0) + 1
