"""Threads for the concurrency tests, each with a database connection of its own."""

import threading
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
