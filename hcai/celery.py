"""The Celery app. Tasks live in each app's tasks.py; the beat schedule lives in settings."""

import logging
import os

import redis.exceptions
from celery import Celery, Task
from django.db import InterfaceError, OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hcai.settings.production")

logger = logging.getLogger(__name__)

app = Celery("hcai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class RetryOnOutageTask(Task):
    """Base for tasks that only touch our database and cache.

    A lost connection, a deadlock victim or a locked SQLite file is worth another try after a
    growing, jittered pause; anything else is a bug and fails at once. Nothing is swallowed:
    each retry is logged here as a warning, and the final failure is raised and logged, with
    its traceback, by Celery's own task tracer.
    """

    autoretry_for = (
        OperationalError,
        InterfaceError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    )
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = 5

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        logger.warning(
            "Task %s[%s] failed (%s: %s); retry %d of %d",
            self.name,
            task_id,
            type(exc).__name__,
            exc,
            self.request.retries + 1,
            self.max_retries,
        )
