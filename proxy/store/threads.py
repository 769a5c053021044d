"""Database work of the relay's store, off the event loop."""

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from billing import ledger
from billing.windows import Counter


async def rebuild_counters(counters: list[Counter]) -> None:
    """Rebuild missing running totals from the database, in one thread hop."""
    await run_db(lambda: [ledger.counter_rebuild(counter) for counter in counters])


async def run_db(function, *args):
    """Run a database function in a worker thread (never on the event loop)."""
    return await sync_to_async(_with_fresh_connection, thread_sensitive=False)(function, *args)


def _with_fresh_connection(function, *args):
    # Threads outside Django's request cycle never see request_started or request_finished;
    # do what they would: drop connections that have aged out (CONN_MAX_AGE) or broken,
    # before and after the work.
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()
