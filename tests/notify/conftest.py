import pytest

from .usage import ingest


@pytest.fixture
def settle(django_capture_on_commit_callbacks):
    """Ingest records (as the relay records them, then the real write-and-settle) and run what
    waits for the commit: the fold's usage_settled signal and its receivers."""

    def run(*records):
        with django_capture_on_commit_callbacks(execute=True):
            return ingest(list(records))

    return run
