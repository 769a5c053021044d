"""Probes for load balancers: /healthz says the process answers, /readyz checks what it needs;
and /metrics for Prometheus."""

import hmac
import ipaddress
import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse
from redis.cluster import RedisCluster

from billing import ledger
from core import metrics as core_metrics
from core.cache import cache_redis_client

logger = logging.getLogger(__name__)


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {"database": _database_ok(), "cache": _cache_ok()}
    if settings.REDIS_REQUIRE_APPEND_ONLY and checks["cache"]:
        checks["redis-append-only"] = _redis_append_only()
    if settings.REDIS is not None and checks["cache"]:
        checks["usage-ingest"] = _ingest_keeping_up()
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


def _ingest_keeping_up() -> bool:
    """Served requests wait in the usage stream until ingest writes them: a backlog older than
    READYZ_MAX_INGEST_LAG_SECONDS means no Celery worker is ingesting (or cannot keep up), and
    spend shown in the portal is that far behind."""
    try:
        lag = ledger.usage_ingest_lag_seconds()
    except Exception:
        logger.exception("readyz: the usage stream could not be read")
        return False
    if lag is not None and lag > settings.READYZ_MAX_INGEST_LAG_SECONDS:
        logger.error("readyz: the oldest usage not yet ingested waited %.0f s", lag)
        return False
    return True


def _redis_append_only() -> bool:
    """Redis keeps the usage stream, which holds served requests not yet in the database, so
    it must write it to disk (appendonly yes): a restart must not lose them."""
    client = cache_redis_client()
    if client is None:
        return True
    try:
        if isinstance(client, RedisCluster):  # Every primary holds some teams' streams.
            primaries = client.info("persistence", target_nodes=RedisCluster.PRIMARIES)
        else:
            primaries = {"": client.info("persistence")}
    except Exception:
        logger.exception("readyz: Redis persistence could not be read")
        return False
    without = sorted(node for node, found in primaries.items() if found.get("aof_enabled") != 1)
    if without:
        where = f" on {', '.join(without)}" if any(without) else ""
        logger.error("readyz: Redis runs without its append-only file (appendonly no)%s", where)
        return False
    return True


def metrics(request):
    """Prometheus's scrape. With METRICS_TOKEN set, only for `Authorization: Bearer <token>`;
    without it, only for a scraper on this host (the socket peer is loopback; X-Forwarded-For
    is not believed here). Anything else is told nothing exists here."""
    if not _may_scrape(request):
        raise Http404
    body, content_type = core_metrics.render()
    return HttpResponse(body, content_type=content_type)


def _may_scrape(request) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
