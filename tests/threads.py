"""Threads for the concurrency tests, each with a database connection of its own."""

import threading
import time
from collections.abc import Callable

from django.db import connection


def start_thread(function: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    """Run `function` in a new thread; what it raises goes to `errors` (an exception in a thread
    is otherwise lost, and the test would pass), and its connection is closed when it ends."""

    def run() -> None:
        try:
            function()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def join(threads: list[threading.Thread], timeout: float = 120) -> None:
    for thread in threads:
        thread.join(timeout=timeout)


def wait_for_a_lock_wait() -> None:
    """Until another connection of this (PostgreSQL) database waits for a lock: the moment a
    race test has made one side stop where it wants it."""
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            assert time.monotonic() < deadline, "nobody waited for the lock"
            time.sleep(0.01)
