"""The measurements: bench/c1.py for latency at concurrency 1, wrk for throughput (and, for
comparison, c1 too), bench/streams.py for streaming."""

import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from bench.cpu import CpuMeter, cpu_text, wait_for_quiet
from bench.environment import MODEL
from bench.servers import BENCH_DIR, PYTHON, Processes

# The acceptance bar of the rate search.
SEARCH_P99_LIMIT_MS = 1000.0
SEARCH_ERROR_LIMIT = 0.001


@dataclass
class WrkResult:
    target: str
    connections: int
    delay_ms: float
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    cpu: dict
    # Usage events waiting in the Redis stream for the Celery worker when the run ended.
    backlog: int | None = None
    note: str = ""
    mean_ms: float = float("nan")
    client: str = "wrk"

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cycle_ms(self) -> float:
        """Time per request: at concurrency 1, no mean latency can exceed it."""
        return self.seconds * 1000 / self.requests if self.requests else float("nan")

    @property
    def error_rate(self) -> float:
        return self.errors / max(self.requests + self.errors, 1)


def request_body(padding_bytes: int) -> str:
    body = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    if padding_bytes:
        body["system"] = "x" * padding_bytes
    return json.dumps(body)


class Bench:
    def __init__(self, options, processes: Processes, urls: dict, key: str, meter_groups: dict):
        self.options = options
        self.processes = processes
        self.urls = urls
        self.key = key
        self.meter_groups = meter_groups
        self.deadline = time.monotonic() + options.time_budget
        self.body = request_body(options.body_padding)
        self.skipped: list[str] = []
        # (section, cores busy with other work just before it), for the report.
        self.background: list[tuple[str, float]] = []
        # Relayed requests the clients saw complete, to compare with the usage rows written.
        self.relayed = 0
        # Imported here: billing needs Django, which prepare_data has set up by now.
        import redis

        from billing import ledger

        self.redis = redis.Redis.from_url(options.redis_url)
        self.usage_stream = ledger.usage_stream_name()

    def usage_backlog(self) -> int | None:
        try:
            return self.redis.xlen(self.usage_stream)
        except Exception:  # A figure for the report only.
            return None

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def quiet(self, section: str) -> None:
        """Before a section: note (and briefly wait out) other load on the machine."""
        wait = min(self.options.quiet_wait, max(0.0, self.time_left() - 240))
        self.background.append((section, wait_for_quiet(self.options.quiet_limit, wait)))

    def wrk(
        self,
        target: str,
        *,
        connections: int,
        seconds: float,
        delay_ms: float,
        threads: int = 2,
        warm_up: bool = False,
        note: str = "",
    ) -> WrkResult:
        self.processes.check_alive()
        threads = max(1, min(threads, connections))
        env = {
            **os.environ,
            "BENCH_BODY": self.body,
            "BENCH_DELAY_MS": f"{delay_ms:g}",
            "BENCH_KEY": self.key if target == "relay" else "",
        }
        command = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH_DIR / "post.lua"),
            self.urls[target] + "/v1/messages",
        ]
        meter = CpuMeter(self.meter_groups)
        meter.start()
        finished = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=seconds + 60
        )
        cpu = meter.stop()
        line = next(
            (row for row in finished.stdout.splitlines() if row.startswith("BENCH-JSON ")), None
        )
        if line is None:
            raise RuntimeError(f"wrk gave no summary:\n{finished.stdout}\n{finished.stderr}")
        summary = json.loads(line.removeprefix("BENCH-JSON "))
        errors = sum(
            summary[name]
            for name in (
                "connect_errors",
                "read_errors",
                "write_errors",
                "status_errors",
                "timeouts",
            )
        )
        return self._result(
            target,
            summary,
            cpu,
            connections=connections,
            delay_ms=delay_ms,
            errors=errors,
            note=note,
            client="wrk",
            label="warm-up" if warm_up else "wrk",
        )

    def c1(
        self, target: str, *, seconds: float, warm_up: bool = False, note: str = ""
    ) -> WrkResult:
        """Latency at concurrency 1 with bench/c1.py (see there for why not wrk)."""
        self.processes.check_alive()
        env = {
            **os.environ,
            "BENCH_BODY": self.body,
            "BENCH_KEY": self.key if target == "relay" else "",
        }
        command = [
            PYTHON,
            str(BENCH_DIR / "c1.py"),
            self.urls[target] + "/v1/messages",
            f"--seconds={seconds:g}",
            "--header=content-type: application/json",
            "--header=anthropic-version: 2023-06-01",
            "--header=x-bench-delay-ms: 0",
        ]
        meter = CpuMeter(self.meter_groups)
        meter.start()
        finished = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=seconds + 60
        )
        cpu = meter.stop()
        if finished.returncode != 0:
            raise RuntimeError(f"bench/c1.py failed:\n{finished.stderr}")
        summary = json.loads(finished.stdout)
        return self._result(
            target,
            summary,
            cpu,
            connections=1,
            delay_ms=0,
            errors=summary["errors"] + summary["status_errors"],
            note=note,
            client="c1.py",
            label="warm-up" if warm_up else "c1.py",
        )

    def _result(
        self,
        target: str,
        summary: dict,
        cpu: dict,
        *,
        connections: int,
        delay_ms: float,
        errors: int,
        note: str,
        client: str,
        label: str,
    ) -> WrkResult:
        """A run's result from its client's summary (times in µs, as post.lua and c1.py
        print them)."""
        result = WrkResult(
            target=target,
            connections=connections,
            delay_ms=delay_ms,
            requests=summary["requests"],
            seconds=summary["duration_us"] / 1e6,
            errors=errors,
            p50_ms=summary["p50_us"] / 1000,
            p90_ms=summary["p90_us"] / 1000,
            p99_ms=summary["p99_us"] / 1000,
            p999_ms=summary["p999_us"] / 1000,
            max_ms=summary["max_us"] / 1000,
            cpu=cpu,
            backlog=self.usage_backlog() if target == "relay" else None,
            note=note,
            mean_ms=summary["mean_us"] / 1000,
            client=client,
        )
        if target == "relay":
            self.relayed += result.requests - summary["status_errors"]
        self._print(label, result)
        return result

    @staticmethod
    def _print(label: str, result: WrkResult) -> None:
        print(
            f"  {label:<7} {result.target:<6} c{result.connections:<5} "
            f"{result.delay_ms:g} ms upstream: "
            f"{result.rps:8.0f} req/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
            f"  errors {result.errors}  cpu {cpu_text(result.cpu)}",
            flush=True,
        )

    def streams(self, target: str, mode: str, *, count: int, clients: int = 1, **knobs) -> dict:
        """Run bench/streams.py in `clients` processes, `count` streams in all."""
        self.processes.check_alive()
        start_at = time.time() + 1.5  # Time for the client processes to start.
        command_base = [
            PYTHON,
            str(BENCH_DIR / "streams.py"),
            mode,
            "--url",
            self.urls[target] + "/v1/messages",
            "--model",
            MODEL,
            "--start-at",
            f"{start_at:f}",
            *[f"--{name.replace('_', '-')}={value}" for name, value in knobs.items()],
        ]
        shares = [count // clients + (1 if n < count % clients else 0) for n in range(clients)]
        meter = CpuMeter(self.meter_groups)
        meter.start()
        # The key goes in the environment, not on a command line that `ps` shows.
        env = {**os.environ, "BENCH_KEY": self.key if target == "relay" else ""}
        running = [
            subprocess.Popen(
                [*command_base, "--count", str(share)], stdout=subprocess.PIPE, text=True, env=env
            )
            for share in shares
            if share
        ]
        streams, expected = [], 0
        for process in running:
            out, _ = process.communicate(timeout=knobs.get("time_limit", 60) + 30)
            result = json.loads(out)
            streams += result["streams"]
            expected = result["expected_events"]
        cpu = meter.stop()
        if target == "relay":
            self.relayed += sum(1 for stream in streams if stream.get("ok"))
        return {"streams": streams, "expected_events": expected, "cpu": cpu}


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    # Nearest rank: the smallest value with at least `fraction` of the values at or below it.
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure_latency(bench: Bench, seconds: float) -> dict:
    bench.quiet("latency")
    print("Latency at concurrency 1 (non-streaming, upstream answers at once)", flush=True)
    results: dict = {"wrk": {}}
    # The floor (bench/floor.py) is the leanest Python forwarder under the same server
    # command: relay minus floor is the relay's own work, floor minus direct the machine's.
    for target in ("direct", "floor", "relay"):
        bench.c1(target, seconds=2, warm_up=True)
        results[target] = bench.c1(target, seconds=seconds)
        # wrk's figures for the same target, shown beside them (see bench/c1.py).
        results["wrk"][target] = bench.wrk(
            target, connections=1, seconds=seconds, delay_ms=0, threads=1
        )
    celery = [name for name in ("celery-worker", "celery-beat") if name in bench.processes.started]
    if celery:
        # Once more with usage ingestion paused: on two cores the Celery worker and PostgreSQL
        # take CPU from the relay, so this separates the relay's own latency from theirs.
        # The usage piles up in the Redis stream meanwhile and is ingested afterwards.
        print("  ... and again with the Celery worker and beat paused (SIGSTOP)", flush=True)
        try:
            for name in celery:
                bench.processes.signal(name, signal.SIGSTOP)
            time.sleep(1)
            results["relay_paused"] = bench.c1("relay", seconds=seconds, note="Celery paused")
        finally:
            for name in celery:
                bench.processes.signal(name, signal.SIGCONT)
    return results


def measure_throughput(bench: Bench, levels: list[int], seconds: float) -> dict:
    bench.quiet("throughput")
    print("Throughput, upstream answering after 20 ms", flush=True)
    results: dict[tuple[str, int], WrkResult] = {}
    for target in ("direct", "floor", "relay"):
        bench.wrk(target, connections=64, seconds=2, delay_ms=20, warm_up=True)
        for connections in levels:
            results[target, connections] = bench.wrk(
                target, connections=connections, seconds=seconds, delay_ms=20
            )
    return results


def passes_search(result: WrkResult) -> bool:
    return result.p99_ms < SEARCH_P99_LIMIT_MS and result.error_rate < SEARCH_ERROR_LIMIT


def search_rate(bench: Bench, done: dict, levels: list[int], seconds: float) -> dict:
    """Closed-loop, stepped: more connections until p99 >= 1 s or errors >= 0.1% (or the
    levels or the time budget run out). The best passing step's rate is the answer."""
    bench.quiet("rate search")
    print("Rate search (20 ms upstream): more connections until p99 >= 1 s or errors >= 0.1%")
    found = {}
    for target in ("direct", "relay"):
        steps = [done[key] for key in sorted(done) if key[0] == target]
        failed = any(not passes_search(step) for step in steps)
        for connections in levels:
            if failed:
                break
            if any(step.connections == connections for step in steps):
                continue
            if bench.time_left() < seconds + 120:
                bench.skipped.append(f"rate search of {target} beyond c{steps[-1].connections}")
                break
            step = bench.wrk(target, connections=connections, seconds=seconds, delay_ms=20)
            steps.append(step)
            failed = not passes_search(step)
        passing = [step for step in steps if passes_search(step)]
        best = max(passing, key=lambda step: step.rps) if passing else None
        found[target] = {
            "steps": steps,
            "best": best,
            "bounded": not failed,  # True: every step passed, so the limit lies higher
        }
    return found


def measure_ttft(bench: Bench, count: int) -> dict:
    bench.quiet("time to first token")
    print(f"Streaming time to first token at concurrency 1 ({count} streams each)", flush=True)
    results = {}
    for target in ("direct", "relay"):
        bench.streams(target, "ttft", count=20, deltas=3, gap_ms=2, time_limit=30)  # warm-up
        outcome = bench.streams(target, "ttft", count=count, deltas=3, gap_ms=2, time_limit=60)
        ok = [stream for stream in outcome["streams"] if stream.get("ok")]
        ttfts = [stream["ttft_ms"] for stream in ok]
        results[target] = {
            "count": len(outcome["streams"]),
            "ok": len(ok),
            "p50": percentile(ttfts, 0.50),
            "p99": percentile(ttfts, 0.99),
        }
        print(
            f"  ttft {target:<6} {len(ok)}/{len(outcome['streams'])} ok: "
            f"p50 {results[target]['p50']:.2f} ms  p99 {results[target]['p99']:.2f} ms",
            flush=True,
        )
    return results


@dataclass
class StreamLevel:
    target: str
    streams: int
    ok: int
    stalled: int
    max_gap_ms: float
    p99_gap_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    errors: dict
    cpu: dict

    @property
    def passed(self) -> bool:
        return self.ok == self.streams and self.stalled == 0


def measure_streams(bench: Bench, levels: list[int], *, deltas: int, gap_ms: float) -> dict:
    bench.quiet("concurrent streams")
    stall_ms = max(10 * gap_ms, 500.0)
    print(
        f"Concurrent streams: {deltas} deltas {gap_ms:g} ms apart each; a stall is a gap "
        f"> {stall_ms:g} ms",
        flush=True,
    )
    stream_seconds = deltas * gap_ms / 1000
    results: dict[str, list[StreamLevel]] = {"direct": [], "relay": []}
    for target in ("direct", "relay"):
        for count in levels:
            if bench.time_left() < stream_seconds + 90:
                bench.skipped.append(f"{target} streams at {count} and above")
                break
            outcome = bench.streams(
                target,
                "concurrent",
                count=count,
                clients=bench.options.stream_clients,
                deltas=deltas,
                gap_ms=gap_ms,
                time_limit=stream_seconds + 30,
            )
            streams = outcome["streams"]
            complete = [
                stream
                for stream in streams
                if stream.get("ok") and stream["events"] == outcome["expected_events"]
            ]
            gaps = [stream["max_gap_ms"] for stream in complete]
            errors: dict[str, int] = {}
            for stream in streams:
                if not (stream.get("ok") and stream["events"] == outcome["expected_events"]):
                    reason = stream.get("error") or f"{stream.get('events')} events"
                    errors[reason] = errors.get(reason, 0) + 1
            level = StreamLevel(
                target=target,
                streams=count,
                ok=len(complete),
                stalled=sum(1 for gap in gaps if gap > stall_ms),
                max_gap_ms=max(gaps, default=float("nan")),
                p99_gap_ms=percentile(gaps, 0.99),
                ttft_p50_ms=percentile([s["ttft_ms"] for s in complete], 0.50),
                ttft_p99_ms=percentile([s["ttft_ms"] for s in complete], 0.99),
                errors=errors,
                cpu=outcome["cpu"],
            )
            results[target].append(level)
            print(
                f"  streams {target:<6} {count:>4}: {level.ok} complete, {level.stalled} "
                f"stalled, max gap {level.max_gap_ms:.0f} ms, ttft p99 {level.ttft_p99_ms:.1f} "
                f"ms{' errors ' + str(errors) if errors else ''}  cpu {cpu_text(level.cpu)}",
                flush=True,
            )
            if not level.passed:
                break
    return {"levels": results, "stall_ms": stall_ms, "deltas": deltas, "gap_ms": gap_ms}
