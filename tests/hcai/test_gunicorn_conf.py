"""gunicorn.conf.py, the production server's settings."""

import gc
import runpy

from django.conf import settings


def test_worker_freezes_the_start_up_heap():
    conf = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))
    assert conf["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert conf["forwarded_allow_ips"] == ""
    gc.unfreeze()
    try:
        conf["post_worker_init"](None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
