"""gunicorn settings for production: uvicorn workers serve the ASGI app (portal and relay)."""

import gc
import os

from hcai.workers import SHUTDOWN_CLEANUP_SECONDS, graceful_seconds

bind = os.environ.get("BIND", "0.0.0.0:" + os.environ.get("PORT", "8000"))
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "hcai.workers.RelayWorker"
# Streams can last minutes; the relay enforces each channel's own timeout.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "900"))
# After SIGTERM, running requests (streams) get GRACEFUL_TIMEOUT seconds, then are cancelled and
# recorded (hcai.workers); only a worker still alive after the cleanup time on top is killed.
graceful_timeout = graceful_seconds() + SHUTDOWN_CLEANUP_SECONDS
keepalive = 75
accesslog = None
# uvicorn must not rewrite the client address from X-Forwarded-For: the app decides whom to
# believe (TRUSTED_PROXIES), so the socket peer has to reach it unchanged.
forwarded_allow_ips = ""


def post_worker_init(worker) -> None:
    """Freeze what start-up made (Django, the apps, their imports: about 100,000 objects).

    A full garbage collection walks every tracked object and stalls the worker's requests
    meanwhile: about 50 ms on a small VM (measured with the whole app loaded). Frozen objects
    are never walked again, so such a collection costs what requests allocate since."""
    gc.collect()
    gc.freeze()
