import logging
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import OperationalError

from billing import services, tasks
from hcai.celery import app
from keys import tasks as key_tasks

from .factories import UsageEventFactory


def test_settle_usage_task_settles_through_the_service(issued):
    UsageEventFactory.create_batch(2, key=issued.key, charged_usd=Decimal("0.125"))

    assert tasks.settle_usage() == 2

    issued.key.refresh_from_db()
    assert issued.key.spent_usd == Decimal("0.25")


def test_settle_usage_retries_outages_with_backoff():
    task = app.tasks["billing.tasks.settle_usage"]
    assert OperationalError in task.autoretry_for
    assert task.retry_backoff
    assert task.retry_jitter
    assert task.max_retries == 5


def test_a_failing_settlement_raises_when_called_directly(monkeypatch):
    def database_down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "settle_usage", database_down)

    with pytest.raises(OperationalError, match="connection refused"):
        tasks.settle_usage()


def test_a_failing_settlement_is_retried_logged_and_finally_fails(monkeypatch, caplog):
    attempts = []

    def database_down(**kwargs):
        attempts.append(1)
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "settle_usage", database_down)

    with caplog.at_level(logging.WARNING, logger="core.tasks"):
        result = tasks.settle_usage.apply()

    assert result.failed()
    assert isinstance(result.result, OperationalError)
    assert len(attempts) == 1 + tasks.settle_usage.max_retries
    retries = [record.getMessage() for record in caplog.records if record.name == "core.tasks"]
    assert len(retries) == tasks.settle_usage.max_retries
    assert "failed (OperationalError: connection refused); retry 1 of 5" in retries[0]


def test_a_bug_is_not_retried(monkeypatch):
    attempts = []

    def broken(**kwargs):
        attempts.append(1)
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(services, "settle_usage", broken)

    result = tasks.settle_usage.apply()

    assert result.failed()
    assert isinstance(result.result, ZeroDivisionError)
    assert attempts == [1]


def test_beat_runs_the_periodic_tasks_on_their_default_intervals():
    schedule = settings.CELERY_BEAT_SCHEDULE
    expected = {
        "settle-usage": (tasks.settle_usage.name, 10.0),
        "expire-keys": (key_tasks.expire_keys.name, 60.0),
        # Usage events past USAGE_RETENTION_DAYS go, hourly.
        "prune-usage": (tasks.prune_usage.name, 3600.0),
        # Notifications (notify.tasks), on both storage modes.
        "notify-due": ("notify.tasks.notify_due", 15.0),
    }
    if settings.REDIS is not None:
        # With Redis the relay queues usage in a stream that this task moves into the database.
        expected["ingest-usage"] = (tasks.ingest_usage.name, 2.0)
        # And counts refusals per minute there, which this one moves.
        expected["collect-refusals"] = (tasks.collect_refusals.name, 5.0)
    assert {
        name: (entry["task"], entry["schedule"]) for name, entry in schedule.items()
    } == expected
    app.loader.import_default_modules()  # what a worker imports at start: every app's tasks
    assert {entry["task"] for entry in schedule.values()} <= set(app.tasks)


def test_beat_intervals_come_from_the_environment():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hcai.settings.test",
        "SETTLE_USAGE_EVERY_SECONDS": "2.5",
        "EXPIRE_KEYS_EVERY_SECONDS": "300",
    }
    script = (
        "from django.conf import settings; s = settings.CELERY_BEAT_SCHEDULE; "
        "print(s['settle-usage']['schedule'], s['expire-keys']['schedule'])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert completed.stdout.split() == ["2.5", "300.0"]
