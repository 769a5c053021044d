"""The base of every periodic task: retried through outages of our own database and cache."""

import logging

import redis.exceptions
from celery import Task
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)


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
