"""The benchmark's environment: settings, database, data made through the services, usage
recorded, and the facts about the machine."""

import os
import platform
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

from bench.servers import PROJECT_DIR

MODEL = "claude-sonnet-4-5"


def bench_env(options, var_dir: Path, proxy_port: int) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hcai.settings.production",
        # Generated per run: production settings refuse to start without one.
        "SECRET_KEY": secrets.token_urlsafe(50),
        # Likewise the key channel credentials are encrypted with (this process sets up the
        # channel, the servers decrypt it).
        "CHANNEL_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": options.database_url,
        "REDIS_URL": options.redis_url,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "HCAI_VAR_DIR": str(var_dir),
        "WEB_CONCURRENCY": str(options.workers),
        "BIND": f"127.0.0.1:{proxy_port}",
        "PYTHONUNBUFFERED": "1",
    }


def ensure_database(database_url: str) -> None:
    import psycopg

    name = database_url.rstrip("/").rpartition("/")[2]
    server = database_url.rstrip("/").rpartition("/")[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')
            print(f"  created database {name}")


def flush_bench_redis(redis_url: str) -> None:
    import redis

    # The benchmark's own Redis database (see --redis-url): stale totals, snapshots or a
    # half-ingested stream from an earlier run would change what this run measures.
    redis.Redis.from_url(redis_url).flushdb()


@dataclass
class BenchData:
    key_id: int
    plaintext: str = field(repr=False)
    quota: str
    # A key whose quota is used up, for the refused-key scenario (bench.measurements).
    refused_key_id: int = 0
    refused_plaintext: str = field(default="", repr=False)


def prepare_data(upstream_url: str, *, quota_usd: str) -> BenchData:
    """Team, owner, group, price, channel + route and a fresh key, through the services."""
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import connections

    from billing.models import ModelPrice, RefusalCount, UsageDaily, UsageEvent
    from keys import services
    from keys.models import ApiKey, Group, Membership, Team
    from proxy.services import channel_upsert

    owner, _ = get_user_model().objects.get_or_create(
        username="bench-owner", defaults={"email": "bench-owner@example.com"}
    )
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
    if not Membership.objects.filter(team=team, user=owner).exists():
        services.membership_add(team=team, user=owner, role=Membership.Role.LEAD, actor=None)
    group = Group.objects.filter(name="Benchmark").first() or Group(name="Benchmark")
    group.models = ["claude-*"]
    group.multiplier = Decimal("1.0")
    group.is_active = True
    services.group_save(group=group, actor=None)
    ModelPrice.objects.update_or_create(
        model=MODEL,
        defaults={
            "input_per_mtok": Decimal("3"),
            "output_per_mtok": Decimal("15"),
            "cache_write_per_mtok": Decimal("3.75"),
            "cache_read_per_mtok": Decimal("0.30"),
        },
    )
    channel_upsert(
        name="bench-anthropic",
        provider="anthropic",
        base_url=upstream_url,
        credential="sk-ant-bench-upstream-credential",
        timeout_seconds=60,
        groups=[group],
    )
    # Usage rows of earlier runs would make this run's ingestion slower than the last (the
    # table grows), so each run starts from none. Only the benchmark team's rows.
    UsageEvent.objects.filter(team=team).delete()
    UsageDaily.objects.filter(team=team).delete()
    RefusalCount.objects.filter(team=team).delete()
    # Now, not in the middle of a measurement, where autovacuum would otherwise get to it.
    with connections["default"].cursor() as cursor:
        for model in (UsageEvent, UsageDaily):
            cursor.execute(f'VACUUM ANALYZE "{model._meta.db_table}"')
    issued = services.api_key_create(
        team=team,
        owner=owner,
        name=f"bench {time.strftime('%Y-%m-%d %H:%M:%S')}",
        group=group,
        actor=None,
        quota_limit_usd=quota_usd,
    )
    # Its quota used up: every request is refused with 402 after the quota admission, the
    # most work a refusal does (a tool retrying its refused request in a loop).
    refused = services.api_key_create(
        team=team,
        owner=owner,
        name=f"bench refused {time.strftime('%Y-%m-%d %H:%M:%S')}",
        group=group,
        actor=None,
        quota_limit_usd="1",
    )
    ApiKey.objects.filter(pk=refused.key.pk).update(spent_usd=Decimal("1"))
    connections.close_all()
    return BenchData(issued.key.pk, issued.plaintext, quota_usd, refused.key.pk, refused.plaintext)


def usage_summary(key_id: int, redis_url: str, *, wait_seconds: float) -> dict:
    """Wait for the Celery worker to drain the usage stream, then count what it wrote."""
    import redis
    from django.db import connections
    from django.db.models import Count

    from billing.models import UsageEvent
    from core import keyspace

    client = redis.Redis.from_url(redis_url)
    stream = keyspace.USAGE_STREAM
    deadline = time.monotonic() + wait_seconds
    started = time.monotonic()
    while client.xlen(stream) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = client.xlen(stream)
    by_status = dict(
        UsageEvent.objects.filter(key_id=key_id)
        .values_list("status_code")
        .annotate(n=Count("id"))
        .values_list("status_code", "n")
    )
    connections.close_all()
    return {
        "by_status": by_status,
        "left_in_stream": left,
        "drain_seconds": time.monotonic() - started,
    }


def refusal_summary(key_id: int, refused: int, *, wait_seconds: float) -> dict:
    """Wait for the collector (Celery `collect_refusals`) to write `refused` refusals of the
    key, then describe the rows it wrote."""
    from django.db import connections

    from billing.models import RefusalCount

    deadline = time.monotonic() + wait_seconds
    while True:
        rows = list(
            RefusalCount.objects.filter(key_id=key_id).values_list(
                "minute", "status_code", "code", "endpoint", "count"
            )
        )
        counted = sum(row[-1] for row in rows)
        if counted >= refused or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    connections.close_all()
    return {
        "rows": len(rows),
        "minutes": len({row[0] for row in rows}),
        "counted": counted,
        "reasons": sorted({f"{row[1]} {row[2]} ({row[3]})" for row in rows}),
    }


def python_speed() -> str:
    """How fast this machine runs plain Python, best of three: the same model name and clock
    can run two or three times slower on a busier host, and every figure here scales with it."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(5_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return f"a loop of 5,000,000 additions in {best * 1000:.0f} ms (best of 3; lower is faster)"


def machine_facts(options) -> dict:
    from importlib.metadata import version

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "unknown",
    )
    mhz = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "cpu MHz" in line), "?"
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    packages = [
        "Django",
        "aiohttp",
        "uvicorn",
        "uvicorn-worker",
        "gunicorn",
        "uvloop",
        "httptools",
        "redis",
        "hiredis",
        "celery",
        "psycopg",
    ]
    versions = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except Exception:
            versions[package] = "not installed"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": f"{model} ({mhz} MHz)",
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(f"{name} {v}" for name, v in versions.items()),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0].strip(),
        "python speed": python_speed(),
    }
    try:
        import psycopg
        import redis

        with psycopg.connect(options.database_url) as connection:
            facts["postgresql"] = connection.execute("SHOW server_version").fetchone()[0]
        facts["redis"] = redis.Redis.from_url(options.redis_url).info("server")["redis_version"]
    except Exception as error:  # Facts only: a failure here must not stop the run.
        facts["servers"] = f"could not read versions ({error})"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    # The results file is the last run's output, not the code measured.
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", ".", ":(exclude)bench/results.md"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
    )
    facts["commit"] = commit.stdout.strip() + (
        " (with uncommitted changes)" if dirty.stdout.strip() else ""
    )
    return facts
