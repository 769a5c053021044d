"""The relay's benchmark: direct-to-upstream vs through the relay, side by side, in one run.

    .venv/bin/python bench/run.py            # about 5 minutes; writes bench/results.md
    .venv/bin/python bench/run.py --quick    # about 2.5 minutes, shorter runs, for a smoke test

It starts, on 127.0.0.1 only: a fast fake Anthropic upstream (bench/upstream.py), the
production web command (gunicorn -c gunicorn.conf.py, uvicorn workers, WEB_CONCURRENCY=2) with
production settings on PostgreSQL and Redis, a Celery worker and beat (so usage is ingested
from the Redis stream as in production), and the "floor" (bench/floor.py: the leanest Python
forwarder under the same gunicorn command, as a yardstick). It measures with wrk (throughput
and non-streaming latency) and with bench/streams.py (aiohttp, for time to first token and
concurrent streams), prints a markdown report, writes it to bench/results.md, and stops
everything it started. See bench/README.md for what each figure means.
"""

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script (bench/run.py): make the project importable, as the bench package and for
# the Django setup this process does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import machine_seconds, steal_share
from bench.environment import (
    bench_env,
    ensure_database,
    flush_bench_redis,
    headline_max_concurrency,
    machine_facts,
    prepare_data,
    refusal_summary,
    usage_summary,
)
from bench.hotspots import profile_relay
from bench.measurements import (
    Bench,
    measure_latency,
    measure_refused,
    measure_streams,
    measure_throughput,
    measure_ttft,
    request_body,
    search_rate,
)
from bench.report import report
from bench.servers import (
    BENCH_DIR,
    PROJECT_DIR,
    PYTHON,
    VENV_BIN,
    Processes,
    free_port,
    http_status,
    pids_named,
    wait_until,
)


def parse_options():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/hcai_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY")
    parser.add_argument("--upstream-processes", type=int, default=1)
    parser.add_argument("--stream-clients", type=int, default=2)
    parser.add_argument(
        "--quota-usd",
        default="100000",
        help="the headline key's lifetime quota; 0 = none (its other limits stay on)",
    )
    parser.add_argument("--body-padding", type=int, default=0, help="bytes of system prompt")
    parser.add_argument(
        "--time-budget", type=float, default=540, help="seconds; later steps are skipped"
    )
    parser.add_argument("--no-celery", action="store_true", help="do not start Celery")
    parser.add_argument("--output", default=str(BENCH_DIR / "results.md"))
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--quiet-limit",
        type=float,
        default=0.25,
        help="cores of other load above which a section first waits (up to --quiet-wait s)",
    )
    parser.add_argument("--quiet-wait", type=float, default=20)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the relay workers with py-spy during a c64 run (py-spy must be "
        "installed: it is not a project requirement)",
    )
    parser.add_argument("--py-spy", default=None, help="path to py-spy (default: from PATH)")
    parser.add_argument(
        "--serve",
        type=float,
        default=0,
        metavar="SECONDS",
        help="set everything up, measure nothing, keep it running this long (for manual work)",
    )
    parser.add_argument(
        "--only",
        default="latency,throughput,search,ttft,streams,refused",
        help="comma-separated subset of: latency,throughput,search,ttft,streams,refused",
    )
    options = parser.parse_args()
    options.only = set(options.only.split(","))
    options.levels = [16, 64, 256]
    options.search_levels = [16, 64, 256, 512, 1024, 2048]
    options.stream_levels = [64, 128, 256, 512, 1024]
    options.seconds = 4 if options.quick else 8
    options.latency_rounds = 2 if options.quick else 5
    options.latency_seconds = 2 if options.quick else 3  # per target and round
    options.wrk_latency_seconds = 4 if options.quick else 10
    options.ttft_count = 100 if options.quick else 300
    options.stream_deltas = 20 if options.quick else 40
    return options


def serve(work_dir: Path, urls: dict, data, seconds: float, processes):
    """Leave everything running for a while, for measuring or profiling by hand."""
    details = work_dir / "serve.env"
    details.touch(mode=0o600)
    details.write_text(
        f"BENCH_UPSTREAM={urls['direct']}\nBENCH_FLOOR={urls['floor']}\n"
        f"BENCH_RELAY={urls['relay']}\nBENCH_KEY={data.plaintext}\n"
        f"BENCH_UNRESTRICTED_KEY={data.unrestricted_plaintext}\n"
    )
    print(f"Serving for {seconds:g} s (Ctrl-C stops); URLs and the keys are in {details}")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            processes.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        pass


def main() -> int:
    options = parse_options()
    # A plain `kill` of this script still runs the clean-up in main's finally.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed. This benchmark uses wrk (Debian package `wrk`) as its load "
            "generator: sudo apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2
    print("Load generator: wrk (throughput, latency) + bench/streams.py (aiohttp, streaming).")
    print(
        f"Note: the clients run on the same {os.cpu_count()}-core machine and compete with the "
        "relay for CPU."
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Thousands of connections on each side; children inherit the raised limit.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work_dir = Path(tempfile.mkdtemp(prefix="hcai-bench-"))
    var_dir = work_dir / "var"
    var_dir.mkdir()
    processes = Processes(work_dir)
    proxy_port = free_port()
    floor_port = free_port()
    env = bench_env(options, var_dir, proxy_port)
    # This process sets up the data through the services, with the same settings.
    os.environ.update({k: v for k, v in env.items() if k not in ("BIND",)})
    failed = True
    started = time.monotonic()
    machine_at_start = machine_seconds()
    try:
        print(f"Logs in {work_dir}")
        print("Preparing PostgreSQL and Redis", flush=True)
        ensure_database(options.database_url)
        flush_bench_redis(options.redis_url)
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=PROJECT_DIR,
            env=env,
            check=True,
            timeout=180,
        )
        facts = machine_facts(options)

        print("Starting the fake upstream", flush=True)
        upstream = processes.start(
            "upstream",
            [
                PYTHON,
                str(BENCH_DIR / "upstream.py"),
                "--processes",
                str(options.upstream_processes),
            ],
            env=env,
            stdout=subprocess.PIPE,
        )
        ready = upstream.stdout.readline().decode().split()
        if not ready or ready[0] != "listening":
            raise RuntimeError("the fake upstream did not start")
        upstream_url = f"http://127.0.0.1:{ready[1]}"

        data = prepare_data(
            upstream_url,
            quota_usd=options.quota_usd,
            max_concurrency=headline_max_concurrency(options),
        )

        print("Starting gunicorn (production command) and Celery", flush=True)
        processes.start(
            "gunicorn",
            [str(VENV_BIN / "gunicorn"), "hcai.asgi:application", "-c", "gunicorn.conf.py"],
            env=env,
        )
        if not options.no_celery:
            processes.start(
                "celery-worker",
                [str(VENV_BIN / "celery"), "-A", "hcai", "worker", "--loglevel=INFO"],
                env=env,
            )
            processes.start(
                "celery-beat",
                [
                    str(VENV_BIN / "celery"),
                    "-A",
                    "hcai",
                    "beat",
                    "--loglevel=INFO",
                ],
                env=env,
            )
        # The floor: the same server command and workers, a bare ASGI forwarder, no Django or
        # Redis (their settings are left out of its environment).
        floor_env = {
            **{
                name: value
                for name, value in env.items()
                if name
                not in (
                    "DJANGO_SETTINGS_MODULE",
                    "SECRET_KEY",
                    "CHANNEL_CREDENTIAL_KEYS",
                    "DATABASE_URL",
                    "REDIS_URL",
                )
            },
            "BIND": f"127.0.0.1:{floor_port}",
            "BENCH_FLOOR_UPSTREAM": upstream_url,
        }
        processes.start(
            "floor",
            [
                str(VENV_BIN / "gunicorn"),
                "bench.floor:app",
                "-c",
                "gunicorn.conf.py",
                # Its own control socket: the default path (~/.gunicorn) is the relay's.
                "--control-socket",
                str(work_dir / "floor.ctl"),
            ],
            env=floor_env,
        )
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        floor_url = f"http://127.0.0.1:{floor_port}"
        wait_until(
            lambda: http_status(proxy_url + "/healthz") == 200,
            seconds=60,
            what="gunicorn",
            processes=processes,
        )
        if not options.no_celery:
            wait_until(
                lambda: b"ready." in (work_dir / "celery-worker.log").read_bytes(),
                seconds=60,
                what="the Celery worker",
                processes=processes,
            )
        # Warm every worker: both keys' snapshots, price table, upstream connection pool. Each
        # urllib request is a new connection, so they spread over the workers.
        floor_headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        body = request_body(0).encode()
        for key in (data.plaintext, data.unrestricted_plaintext):
            for _ in range(40):
                status = http_status(
                    proxy_url + "/v1/messages", {**floor_headers, "x-api-key": key}, body
                )
                if status != 200:
                    raise RuntimeError(f"the relay answered {status} to a warm-up request")
        wait_until(
            lambda: http_status(floor_url + "/v1/messages", floor_headers, body) == 200,
            seconds=60,
            what="the floor (bench/floor.py under gunicorn)",
            processes=processes,
        )
        for _ in range(20):
            status = http_status(floor_url + "/v1/messages", floor_headers, body)
            if status != 200:
                raise RuntimeError(f"the floor answered {status} to a warm-up request")

        database_name = options.database_url.rstrip("/").rpartition("/")[2]
        meter_groups = {
            "relay": lambda: processes.pids("gunicorn"),
            "floor": lambda: processes.pids("floor"),
            "upstream": lambda: processes.pids("upstream"),
            "celery": lambda: processes.pids("celery-worker") + processes.pids("celery-beat"),
            "redis": lambda: pids_named("redis-server"),
            # The server's backends for the benchmark's database only: other databases on the
            # same server (a test run, say) count as "other".
            "postgres": lambda: pids_named("postgres", argument=database_name),
        }
        bench = Bench(
            options,
            processes,
            {
                "direct": upstream_url,
                "floor": floor_url,
                "relay": proxy_url,
                "unrestricted": proxy_url,
            },
            {"relay": data.plaintext, "unrestricted": data.unrestricted_plaintext},
            meter_groups,
        )
        bench.relayed = 80  # The warm-up requests, 40 of each key.
        if options.serve:
            serve(work_dir, bench.urls, data, options.serve, processes)
            failed = False
            return 0
        latency = throughput = search = ttft = streams = refused = None
        if "latency" in options.only:
            latency = measure_latency(
                bench,
                options.latency_rounds,
                options.latency_seconds,
                options.wrk_latency_seconds,
            )
        if "throughput" in options.only or "search" in options.only:
            throughput = measure_throughput(bench, options.levels, options.seconds)
        if "search" in options.only:
            search = search_rate(bench, throughput, options.search_levels, options.seconds)
        if "ttft" in options.only:
            ttft = measure_ttft(bench, options.ttft_count)
        if "streams" in options.only:
            streams = measure_streams(
                bench, options.stream_levels, deltas=options.stream_deltas, gap_ms=50
            )
        if "refused" in options.only:
            refused = measure_refused(
                bench, data.refused_plaintext, options.latency_rounds, options.latency_seconds
            )
            if not options.no_celery:
                print("Waiting for Celery to collect the refusal counts", flush=True)
                refused["counts"] = refusal_summary(
                    data.refused_key_id, refused["refused_requests"], wait_seconds=30
                )
        profile = None
        if options.profile:
            py_spy = options.py_spy or shutil.which("py-spy")
            if py_spy is None:
                bench.skipped.append("the profile (py-spy not found; see --py-spy)")
            else:
                profile = profile_relay(bench, py_spy, options.seconds, work_dir)
        usage = None
        if not options.no_celery:
            print("Waiting for Celery to ingest the usage stream", flush=True)
            usage = usage_summary(data.key_ids, options.redis_url, wait_seconds=60)
            usage["relayed"] = bench.relayed
        steal = steal_share(machine_at_start, machine_seconds())
        facts["steal (whole run)"] = (
            f"{steal:.1%} of the vCPU time ({steal * (os.cpu_count() or 1):.2f} of "
            f"{os.cpu_count()} vCPUs on average)"
        )
        text = report(
            facts,
            options,
            data,
            latency,
            throughput,
            search,
            ttft,
            streams,
            usage,
            bench.skipped,
            profile,
            bench.background,
            refused,
        )
        text += f"\nWhole run: {time.monotonic() - started:.0f} s.\n"
        Path(options.output).write_text(text)
        print()
        print(text)
        print(f"Written to {options.output}")
        failed = False
        return 0
    finally:
        print("Stopping everything the benchmark started", flush=True)
        processes.stop_all()
        if failed or options.keep_logs:
            print(f"Logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
