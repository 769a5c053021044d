"""The relay's Redis cost per request on one server and on a Redis Cluster, without HTTP.

    DJANGO_SETTINGS_MODULE=hcai.settings.test REDIS_URL=redis://127.0.0.1:6379/7 \
        .venv/bin/python bench/redis_clients.py
    DJANGO_SETTINGS_MODULE=hcai.settings.test REDIS_CLUSTER_NODES=127.0.0.1:7000,... \
        CELERY_BROKER_URL=memory:// .venv/bin/python bench/redis_clients.py

Runs what the relay sends Redis for one fully restricted request of a key (the headline key of
bench/run.py: lifetime quota, daily/weekly/monthly limits, the member's cap and the team's
budget, a concurrency limit and a rate limit): the snapshot read together with the admission
script, then the release script, from `--concurrency` tasks of one process through the relay's
own client (proxy.store.RedisStore over client_for(settings.REDIS)), for many teams (the keys
of a Cluster spread over its primaries by team). Prints requests a second, this process's CPU
per request (the client's share of a relay worker's cost) and Redis's CPU per request (INFO
commandstats, summed over every primary).
"""

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hcai.settings.test")

import django

django.setup()

from django.conf import settings  # noqa: E402

from billing.windows import Account, LimitKind  # noqa: E402
from core import keyspace  # noqa: E402
from proxy.quota import Limit, Plan, Rate  # noqa: E402
from proxy.redis_connect import client_for  # noqa: E402
from proxy.store.redis import RedisStore  # noqa: E402

UNITS = 10**12  # far more than the run spends: every admission admits


def plan_for(team_id: int, key_id: int) -> Plan:
    account = Account(key_id, team_id, user_id=key_id, time_zone="UTC")
    now = datetime.now(UTC)
    limits = tuple(Limit(kind, account.counter(kind, now), UNITS) for kind in LimitKind)
    return Plan(
        key_id=key_id,
        team_id=team_id,
        limits=limits,
        estimate_units=1000,
        minimum_units=1,
        hold_seconds=60,
        holds=account.targets(now).holds,
        max_concurrency=10_000,
        rate=Rate(10**9, 60_000, "1000000000/m"),
    )


def redis_cpu_usec(client) -> int:
    """Redis's CPU in commands so far, summed over every primary."""
    if settings.REDIS.mode == "cluster":
        return sum(
            value["usec"]
            for node in client.info("commandstats", target_nodes=client.PRIMARIES).values()
            for value in node.values()
            if isinstance(value, dict)
        )
    return sum(value["usec"] for value in client.info("commandstats").values())


async def run(plans: list[Plan], requests: int, concurrency: int) -> float:
    store = RedisStore(client_for(settings.REDIS))
    counter = iter(range(requests))

    async def worker(number: int) -> None:
        for index in counter:
            plan = plans[index % len(plans)]
            hold = f"bench-{number}-{index}"
            _, admission = await store.get_key_state_and_admit("bench-digest", plan, hold)
            assert admission.admitted, admission
            await store.release(plan, hold)

    started = time.perf_counter()
    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--teams", type=int, default=256)
    options = parser.parse_args()
    if settings.REDIS is None:
        sys.exit("Set REDIS_URL or REDIS_CLUSTER_NODES: this measures Redis.")
    plans = [plan_for(team, 1_000_000 + team) for team in range(1, options.teams + 1)]
    client = settings.REDIS.sync_client()
    for plan in plans:  # The running totals exist, as in a warm deployment.
        for limit in plan.limits:
            client.set(limit.counter.name, 0, ex=3600)
    asyncio.run(run(plans, 2_000, options.concurrency))  # warm: scripts loaded, connections
    cpu_before, redis_before = time.process_time(), redis_cpu_usec(client)
    elapsed = asyncio.run(run(plans, options.requests, options.concurrency))
    cpu = time.process_time() - cpu_before
    redis_usec = redis_cpu_usec(client) - redis_before
    for plan in plans:
        client.delete(keyspace.rate(plan.team_id, plan.key_id))
        for limit in plan.limits:
            client.delete(limit.counter.name)
    print(
        f"{settings.REDIS.mode}: {options.requests / elapsed:,.0f} req/s at concurrency "
        f"{options.concurrency}; client CPU {cpu / options.requests * 1e6:.1f} µs/req; "
        f"Redis CPU {redis_usec / options.requests:.1f} µs/req (all primaries)"
    )


if __name__ == "__main__":
    main()
