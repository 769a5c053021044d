"""gunicorn.conf.py, the production server's settings."""

import gc
import runpy

import pytest
from django.conf import settings

from hcai import workers


def test_worker_freezes_the_start_up_heap():
    conf = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))
    assert conf["worker_class"] == "hcai.workers.RelayWorker"
    assert conf["forwarded_allow_ips"] == ""
    gc.unfreeze()
    try:
        conf["post_worker_init"](None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_running_requests_get_the_grace_and_gunicorn_the_cleanup_on_top(monkeypatch):
    monkeypatch.setenv("GRACEFUL_TIMEOUT", "120")
    conf = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))
    assert conf["graceful_timeout"] == 120 + workers.SHUTDOWN_CLEANUP_SECONDS
    assert workers.graceful_seconds() == 120


def test_the_grace_defaults_to_a_minute(monkeypatch):
    monkeypatch.delenv("GRACEFUL_TIMEOUT", raising=False)
    assert workers.graceful_seconds() == 60


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "GRACEFUL_TIMEOUT must be a whole number of seconds, not 'soon'."),
        ("0", "GRACEFUL_TIMEOUT must be at least 1 second, not 0."),
    ],
)
def test_a_bad_grace_stops_start_up_with_a_clear_message(monkeypatch, value, message):
    monkeypatch.setenv("GRACEFUL_TIMEOUT", value)
    with pytest.raises(SystemExit) as stopped:
        workers.graceful_seconds()
    assert str(stopped.value) == message
