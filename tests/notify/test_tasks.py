"""notify.tasks.notify_due: run by a real Celery worker on the configured broker, and by beat
(on the embedded default too: the worker's embedded beat) at least every 30 seconds."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.utils import timezone

from hcai.celery import app as project_app
from keys.models import ApiKey
from notify.models import Event, EventType
from notify.tasks import notify_due

from ..billing.test_celery_worker import wait_for, worker_app  # noqa: F401 (a fixture)


def test_beat_runs_the_job_more_often_than_the_first_retry():
    entry = settings.CELERY_BEAT_SCHEDULE["notify-due"]

    assert entry == {
        "task": "notify.tasks.notify_due",
        "schedule": 15.0,
        "options": {"expires": 15.0},
    }
    project_app.loader.import_default_modules()
    assert entry["task"] in project_app.tasks


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_notify_due(worker_app, issued):  # noqa: F811
    ApiKey.objects.filter(pk=issued.key.pk).update(expires_at=timezone.now() + timedelta(days=2))

    def told() -> bool:
        """the key's creation and its expiry warning are told"""
        return Event.objects.count() == 2

    with start_worker(worker_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        assert notify_due.app is worker_app
        notify_due.delay()
        wait_for(told)

    assert sorted(Event.objects.values_list("type", flat=True)) == [
        EventType.KEY_CREATED,
        EventType.KEY_EXPIRING,
    ]
    assert notify_due() == [0, 0]


def test_the_interval_comes_from_the_environment():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hcai.settings.test",
        "NOTIFY_DUE_EVERY_SECONDS": "20",
    }
    script = (
        "from django.conf import settings; e = settings.CELERY_BEAT_SCHEDULE['notify-due']; "
        "print(e['schedule'], e['options']['expires'])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )

    assert completed.stdout == "20.0 20.0\n"
