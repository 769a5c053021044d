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


# The headline key's restrictions: every one a real key can carry, each on, each far above what
# the benchmark spends or sends, so none ever refuses it. A limit that is only fast when it is
# off is a defect, so the figures that count are this key's (bench/README.md).
HEADLINE_LIMIT_USD = "100000"
HEADLINE_RATE_LIMIT = "100000/s"
HEADLINE_EXPIRY_DAYS = 30
HEADLINE_ALLOWED_IPS = ["127.0.0.1"]


@dataclass
class BenchData:
    key_id: int
    plaintext: str = field(repr=False)
    quota: str
    # A key whose quota is used up, for the refused-key scenario (bench.measurements).
    refused_key_id: int = 0
    refused_plaintext: str = field(default="", repr=False)
    # A key with no restriction at all, in a team of its own (no budget) where its owner has
    # no cap: the relay lets its requests through on the key's snapshot alone.
    unrestricted_key_id: int = 0
    unrestricted_plaintext: str = field(default="", repr=False)
    # What the headline key carries, restriction -> setting, for the report.
    restrictions: dict[str, str] = field(default_factory=dict)

    @property
    def key_ids(self) -> list[int]:
        """The keys whose requests are the benchmark's usage (not the refused key)."""
        return [self.key_id, *([self.unrestricted_key_id] if self.unrestricted_key_id else [])]


def headline_max_concurrency(options) -> int:
    """Above the most connections or streams the benchmark opens at once, within what a key
    may be given."""
    from keys.validators import MAX_CONCURRENCY

    most = max([*options.levels, *options.search_levels, *options.stream_levels])
    return min(MAX_CONCURRENCY, 2 * most)


def prepare_data(upstream_url: str, *, quota_usd: str, max_concurrency: int) -> BenchData:
    """Teams, owner, group, price, channel + route and fresh keys, through the services: the
    headline key with every restriction, one with none, and a refused one."""
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import connections

    from billing.models import ModelPrice, RefusalCount, UsageDaily, UsageEvent
    from keys import services
    from keys.models import Group, Membership, Team
    from proxy.services import channel_upsert

    owner, _ = get_user_model().objects.get_or_create(
        username="bench-owner", defaults={"email": "bench-owner@example.com"}
    )
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
    # The unrestricted key's team: no budget, and its owner has no cap there.
    open_team, _ = Team.objects.get_or_create(
        slug="bench-unrestricted", defaults={"name": "Benchmark, unrestricted"}
    )
    for each in (team, open_team):
        if not Membership.objects.filter(team=each, user=owner).exists():
            services.membership_add(team=each, user=owner, role=Membership.Role.LEAD, actor=None)
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
            "cache_write_1h_per_mtok": Decimal("6"),
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
    # table grows), so each run starts from none. Only the benchmark teams' rows.
    UsageEvent.objects.filter(team__in=(team, open_team)).delete()
    UsageDaily.objects.filter(team__in=(team, open_team)).delete()
    RefusalCount.objects.filter(team__in=(team, open_team)).delete()
    # Now, not in the middle of a measurement, where autovacuum would otherwise get to it.
    with connections["default"].cursor() as cursor:
        for model in (UsageEvent, UsageDaily):
            cursor.execute(f'VACUUM ANALYZE "{model._meta.db_table}"')
    data = make_keys(
        team=team,
        unrestricted_team=open_team,
        owner=owner,
        group=group,
        quota_usd=quota_usd,
        max_concurrency=max_concurrency,
    )
    connections.close_all()
    return data


def make_keys(
    *, team, unrestricted_team, owner, group, quota_usd: str, max_concurrency: int
) -> BenchData:
    """The benchmark's keys, fresh each run: the headline key in `team`, with every restriction
    on (its own, `team`'s monthly budget and its owner's monthly cap there), the unrestricted
    key in `unrestricted_team` (no budget, no cap), and the refused key."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from keys import services
    from keys.models import ApiKey, Membership, Team

    services.team_budget_update(actor=None, team=team, monthly_budget_usd=HEADLINE_LIMIT_USD)
    services.team_budget_update(actor=None, team=unrestricted_team, monthly_budget_usd="0")
    for capped_team, cap in ((team, HEADLINE_LIMIT_USD), (unrestricted_team, "0")):
        services.membership_limit_update(
            actor=None,
            membership=Membership.objects.get(team=capped_team, user=owner),
            monthly_limit_usd=cap,
        )
    now = timezone.now()
    issued = services.api_key_create(
        team=team,
        owner=owner,
        name=f"bench {now:%Y-%m-%d %H:%M:%S}",
        group=group,
        actor=None,
        allowed_ips=HEADLINE_ALLOWED_IPS,
        quota_limit_usd=quota_usd,
        rate_limit=HEADLINE_RATE_LIMIT,
        expires_at=now + timedelta(days=HEADLINE_EXPIRY_DAYS),
        daily_limit_usd=HEADLINE_LIMIT_USD,
        weekly_limit_usd=HEADLINE_LIMIT_USD,
        monthly_limit_usd=HEADLINE_LIMIT_USD,
        max_concurrency=max_concurrency,
    )
    unrestricted = services.api_key_create(
        team=unrestricted_team,
        owner=owner,
        name=f"bench unrestricted {now:%Y-%m-%d %H:%M:%S}",
        group=group,
        actor=None,
        allowed_ips=None,
        quota_limit_usd="0",
        rate_limit="",
        expires_at=None,
    )
    # Its quota used up: every request is refused with 402 after the quota admission, the
    # most work a refusal does (a tool retrying its refused request in a loop).
    refused = services.api_key_create(
        team=team,
        owner=owner,
        name=f"bench refused {now:%Y-%m-%d %H:%M:%S}",
        group=group,
        actor=None,
        quota_limit_usd="1",
    )
    ApiKey.objects.filter(pk=refused.key.pk).update(spent_usd=Decimal("1"))
    return BenchData(
        key_id=issued.key.pk,
        plaintext=issued.plaintext,
        quota=quota_usd,
        refused_key_id=refused.key.pk,
        refused_plaintext=refused.plaintext,
        unrestricted_key_id=unrestricted.key.pk,
        unrestricted_plaintext=unrestricted.plaintext,
        # As stored, not as asked for.
        restrictions=describe_restrictions(
            ApiKey.objects.get(pk=issued.key.pk),
            member_cap=Membership.objects.get(team=team, user=owner).monthly_limit_usd,
            team_budget=Team.objects.get(pk=team.pk).monthly_budget_usd,
        ),
    )


def describe_restrictions(key, *, member_cap, team_budget) -> dict[str, str]:
    """What a key carries, restriction -> setting; "off" for one it does not carry."""

    def usd(amount) -> str:
        return f"${amount:,.2f}" if amount else "off"

    return {
        "IP restriction": ", ".join(key.allowed_ips) or "off",
        "lifetime quota": usd(key.quota_limit_usd),
        "daily limit": usd(key.daily_limit_usd),
        "weekly limit": usd(key.weekly_limit_usd),
        "monthly limit": usd(key.monthly_limit_usd),
        "owner's monthly cap in the team": usd(member_cap),
        "team's monthly budget": usd(team_budget),
        "rate limit": key.rate_limit or "off",
        "max concurrent requests": f"{key.max_concurrency:,}" if key.max_concurrency else "off",
        "expiry": f"{key.expires_at:%Y-%m-%d %H:%M %Z}" if key.expires_at else "off",
    }


def usage_summary(key_ids: list[int], redis_url: str, *, wait_seconds: float) -> dict:
    """Wait for the Celery worker to drain the usage stream, then count what it wrote."""
    import redis
    from django.db import connections
    from django.db.models import Count

    from billing.models import UsageEvent
    from core import keyspace

    client = redis.Redis.from_url(redis_url)

    def left_in_streams() -> int:
        return sum(client.xlen(stream) for stream in keyspace.INGESTED_STREAMS)

    deadline = time.monotonic() + wait_seconds
    started = time.monotonic()
    while left_in_streams() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = left_in_streams()
    by_status = dict(
        UsageEvent.objects.filter(key_id__in=key_ids)
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
