"""The gunicorn worker class: uvicorn's, with a graceful shutdown that fits the relay's streams.

gunicorn's default is to give a worker 30 s after SIGTERM and then kill it, while a Claude Code
stream can run for minutes: a deploy cut them off, billing them only from their last checkpoint.
On SIGTERM this worker stops accepting connections, lets the requests it is serving finish for
up to GRACEFUL_TIMEOUT seconds (default 60), then cancels what is still running. Cancelling is
what lets the relay record each cut-off request's usage so far and give back its reservation
(proxy.forwarding records in a `finally`), within the SHUTDOWN_CLEANUP_SECONDS gunicorn allows
on top before it kills the worker.
"""

import os

from uvicorn_worker import UvicornWorker

SHUTDOWN_CLEANUP_SECONDS = 10


def graceful_seconds() -> int:
    """GRACEFUL_TIMEOUT: how long running requests may go on after SIGTERM (at least 1)."""
    value = os.environ.get("GRACEFUL_TIMEOUT", "60")
    try:
        seconds = int(value)
    except ValueError:
        raise SystemExit(
            f"GRACEFUL_TIMEOUT must be a whole number of seconds, not {value!r}."
        ) from None
    if seconds < 1:
        raise SystemExit(f"GRACEFUL_TIMEOUT must be at least 1 second, not {seconds}.")
    return seconds


class RelayWorker(UvicornWorker):
    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "timeout_graceful_shutdown": graceful_seconds(),
    }
