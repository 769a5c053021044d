"""Metrics in Prometheus's text format, for GET /metrics (hcai.views.metrics).

Every gunicorn worker counts its own requests; prometheus_client's multiprocess mode keeps each
process's values in files under PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets and empties it
at start-up) and sums them when scraped, so one scrape of any worker reports the host. Without
that directory (runserver, the tests' live servers, a single uvicorn) the process's own values
are reported.

Some values are read when scraped rather than counted: the apps register them here
(`add_scrape_gauge`) from their AppConfig.ready, e.g. billing's usage backlog. Celery task
outcomes are counted in Redis (`count_task_outcome`), so a web host's scrape sees the workers
of every host.

Label values are never keys, teams or users (cardinality and privacy): endpoints, status
classes, refusal codes, channel and group names, task names.
"""

import logging
from collections.abc import Callable, Iterable

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import keyspace

logger = logging.getLogger(__name__)

# name -> (help, read): read() gives the value when scraped, or None to leave it out.
_scrape_gauges: dict[str, tuple[str, Callable[[], float | None]]] = {}


def add_scrape_gauge(name: str, help_text: str, read: Callable[[], float | None]) -> None:
    _scrape_gauges[name] = (help_text, read)


def render() -> tuple[bytes, str]:
    """The scrape: this host's counted values (summed over its processes) and those read now."""
    if values.ValueClass is not values.MutexValue:  # multiprocess: chosen when first imported
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessValues())
    registry.register(_ReadWhenScraped())
    return generate_latest(registry), CONTENT_TYPE_LATEST


_PLATFORM_COLLECTORS = {
    "prometheus_client.gc_collector",
    "prometheus_client.platform_collector",
    "prometheus_client.process_collector",
}


class _ProcessValues(Collector):
    """The default registry's metrics (this process's), without its platform collectors."""

    def collect(self):
        for collector in list(REGISTRY._collector_to_names):
            if type(collector).__module__ in _PLATFORM_COLLECTORS:
                continue
            yield from collector.collect()


class _ReadWhenScraped(Collector):
    def collect(self):
        for name, (help_text, read) in _scrape_gauges.items():
            try:
                value = read()
            except Exception:
                logger.exception("metrics: %s could not be read", name)
                continue
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
        outcomes = CounterMetricFamily(
            "hcai_celery_tasks",
            "Celery tasks run, by task and outcome (success, failure, retry), on every host.",
            labels=["task", "outcome"],
        )
        for (task, outcome), count in _task_outcomes():
            outcomes.add_metric([task, outcome], count)
        yield outcomes


def count_task_outcome(task: str, outcome: str) -> None:
    """Count a Celery task's outcome where every host's scrape sees it (Redis); not counted
    on the embedded default, whose worker shares nothing with the web process."""
    client = _redis()
    if client is None:
        return
    try:
        client.hincrby(keyspace.TASK_OUTCOMES, f"{task}|{outcome}", 1)
    except Exception:
        logger.exception("metrics: could not count a task outcome")


def _task_outcomes() -> Iterable[tuple[tuple[str, str], int]]:
    client = _redis()
    if client is None:
        return []
    counts = client.hgetall(keyspace.TASK_OUTCOMES)
    return sorted(
        (tuple(field.decode().rsplit("|", 1)), int(count)) for field, count in counts.items()
    )


def _redis():
    if settings.REDIS is None:
        return None
    from .cache import cache_redis_client

    return cache_redis_client()
