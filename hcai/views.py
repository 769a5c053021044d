"""Probes for load balancers: /healthz says the process answers, /readyz checks what it needs."""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

from core.cache import cache_redis_client

logger = logging.getLogger(__name__)


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {"database": _database_ok(), "cache": _cache_ok()}
    if settings.REDIS_REQUIRE_APPEND_ONLY and checks["cache"]:
        checks["redis-append-only"] = _redis_append_only()
    down = sorted(name for name, ok in checks.items() if not ok)
    if down:
        return JsonResponse({"status": "unavailable", "down": down}, status=503)
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.exception("readyz: database unreachable")
        return False


def _cache_ok() -> bool:
    try:
        cache.set("readyz", "1", timeout=5)
        return cache.get("readyz") == "1"
    except Exception:
        logger.exception("readyz: cache unreachable")
        return False


def _redis_append_only() -> bool:
    """Redis keeps the usage stream, which holds served requests not yet in the database, so
    it must write it to disk (appendonly yes): a restart must not lose them."""
    client = cache_redis_client()
    if client is None:
        return True
    try:
        persistence = client.info("persistence")
    except Exception:
        logger.exception("readyz: Redis persistence could not be read")
        return False
    if persistence.get("aof_enabled") != 1:
        logger.error("readyz: Redis runs without its append-only file (appendonly no)")
        return False
    return True
