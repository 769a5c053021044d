"""The measurements: bench/c1.py for latency at concurrency 1, wrk for throughput (and, for
comparison, c1 too), bench/streams.py for streaming."""

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from bench.c1 import nearest_rank, summarize
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
    def __init__(
        self, options, processes: Processes, urls: dict, keys: dict[str, str], meter_groups: dict
    ):
        """`keys`: the key each relayed target sends, "relay" the headline key's (every
        restriction on), "unrestricted" the key's with none; `urls` gives both the relay's."""
        self.options = options
        self.processes = processes
        self.urls = urls
        self.keys = keys
        self.meter_groups = meter_groups
        self.deadline = time.monotonic() + options.time_budget
        self.body = request_body(options.body_padding)
        self.skipped: list[str] = []
        # (section, cores busy with other work just before it), for the report.
        self.background: list[tuple[str, float]] = []
        # Relayed requests the clients saw complete (both keys), to compare with the usage rows
        # written.
        self.relayed = 0
        # Imported here: billing needs Django, which prepare_data has set up by now.
        import redis

        from core import keyspace

        self.redis = redis.Redis.from_url(options.redis_url)
        self.usage_streams = keyspace.INGESTED_STREAMS

    def usage_backlog(self) -> int | None:
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for stream in self.usage_streams:
                    pipe.xlen(stream)
                return sum(pipe.execute())
        except Exception:  # A figure for the report only.
            return None

    def wait_for_ingestion(self, limit: float) -> None:
        """Wait (at most `limit` seconds) until Celery has taken every usage event waiting
        in the stream."""
        deadline = time.monotonic() + limit
        while (self.usage_backlog() or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.1)

    def relayed_target(self, target: str) -> bool:
        return target in self.keys

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
        running = self.wrk_start(
            target, connections=connections, seconds=seconds, delay_ms=delay_ms, threads=threads
        )
        return self.wrk_finish(running, warm_up=warm_up, note=note)

    def wrk_start(
        self,
        target: str,
        *,
        connections: int,
        seconds: float,
        delay_ms: float,
        threads: int = 2,
        key: str | None = None,
    ) -> dict:
        """Start a wrk run in the background; `key` instead of the target's own (relayed)."""
        self.processes.check_alive()
        threads = max(1, min(threads, connections))
        env = {
            **os.environ,
            "BENCH_BODY": self.body,
            "BENCH_DELAY_MS": f"{delay_ms:g}",
            "BENCH_KEY": (key or self.keys[target]) if self.relayed_target(target) else "",
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
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return {
            "process": process,
            "meter": meter,
            "target": target,
            "connections": connections,
            "delay_ms": delay_ms,
            "seconds": seconds,
            # Another key's requests (a refused key's) are not the benchmark key's usage.
            "counted": key is None,
        }

    def wrk_finish(self, running: dict, *, warm_up: bool = False, note: str = "") -> WrkResult:
        process = running["process"]
        try:
            stdout, stderr = process.communicate(timeout=running["seconds"] + 60)
        finally:
            if process.poll() is None:
                process.kill()
        cpu = running["meter"].stop()
        target = running["target"]
        line = next((row for row in stdout.splitlines() if row.startswith("BENCH-JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no summary:\n{stdout}\n{stderr}")
        summary = json.loads(line.removeprefix("BENCH-JSON "))
        if self.relayed_target(target) and running["counted"]:
            self.relayed += summary["requests"] - summary["status_errors"]
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
            connections=running["connections"],
            delay_ms=running["delay_ms"],
            errors=errors,
            note=note,
            client="wrk",
            label="warm-up" if warm_up else "wrk",
        )

    def c1_run(self, target: str, seconds: float) -> tuple[dict, dict]:
        """One bench/c1.py run (see there for why not wrk): its summary, with every latency
        in `latencies_us`, and the CPU used meanwhile."""
        self.processes.check_alive()
        env = {
            **os.environ,
            "BENCH_BODY": self.body,
            "BENCH_KEY": self.keys.get(target, ""),
        }
        command = [
            PYTHON,
            str(BENCH_DIR / "c1.py"),
            self.urls[target] + "/v1/messages",
            f"--seconds={seconds:g}",
            "--raw",
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
        if self.relayed_target(target):
            self.relayed += summary["requests"] - summary["status_errors"]
            summary["backlog"] = self.usage_backlog()
        return summary, cpu

    def c1(
        self, target: str, *, seconds: float, warm_up: bool = False, note: str = ""
    ) -> WrkResult:
        """Latency at concurrency 1, one run."""
        summary, cpu = self.c1_run(target, seconds)
        return self.c1_result(target, summary, cpu, note=note, warm_up=warm_up)

    def c1_result(
        self, target: str, summary: dict, cpu: dict, *, note: str = "", warm_up: bool = False
    ) -> WrkResult:
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
            backlog=(
                summary.get("backlog", self.usage_backlog())
                if self.relayed_target(target)
                else None
            ),
            note=note,
            mean_ms=summary["mean_us"] / 1000,
            client=client,
        )
        self._print(label, result)
        return result

    @staticmethod
    def _print(label: str, result: WrkResult) -> None:
        print(
            f"  {label:<7} {result.target:<12} c{result.connections:<5} "
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
        env = {**os.environ, "BENCH_KEY": self.keys.get(target, "")}
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
        if self.relayed_target(target):
            self.relayed += sum(1 for stream in streams if stream.get("ok"))
        return {"streams": streams, "expected_events": expected, "cpu": cpu}


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return nearest_rank(sorted(values), fraction)


def measure_latency(bench: Bench, rounds: int, seconds: float, wrk_seconds: float) -> dict:
    """Concurrency 1, in `rounds` rounds of `seconds` per target, pooled per target.

    This machine's speed moves within minutes (see bench/README.md), so the targets are not
    measured one after another but in turns, each round taking every target once: direct, the
    floor, the relay with usage ingestion running (the headline key and the unrestricted key,
    which goes first in every other round, so neither always follows the other), the relay
    with ingestion paused. Every target meets the same spells, and the pooled percentiles are
    over all its rounds. The relayed turns come after 2 s of relayed traffic, so ingestion is
    at its steady pace; after the paused turn the backlog is ingested before the next round
    starts, so direct and the floor run with ingestion idle, as before any relayed traffic."""
    bench.quiet("latency")
    print(
        f"Latency at concurrency 1 (non-streaming, upstream answers at once): {rounds} rounds "
        f"of {seconds:g} s a target, in turns",
        flush=True,
    )
    celery = [name for name in ("celery-worker", "celery-beat") if name in bench.processes.started]
    targets = ["direct", "floor", "relay", "unrestricted", *(["relay_paused"] if celery else [])]
    runs: dict[str, list[tuple[dict, dict]]] = {target: [] for target in targets}
    for target in ("direct", "floor", "relay", "unrestricted"):
        bench.c1(target, seconds=2, warm_up=True)
    for number in range(1, rounds + 1):
        runs["direct"].append(bench.c1_run("direct", seconds))
        runs["floor"].append(bench.c1_run("floor", seconds))
        bench.c1_run("relay", 2)  # Relayed traffic before the turn: ingestion at its pace.
        for target in relayed_order(number):
            runs[target].append(bench.c1_run(target, seconds))
        if celery:
            # The relay alone: on two cores the Celery worker and PostgreSQL take CPU from the
            # relay, so this separates the relay's own latency from theirs. The usage piles up
            # in the Redis stream meanwhile and is ingested afterwards.
            try:
                for name in celery:
                    bench.processes.signal(name, signal.SIGSTOP)
                time.sleep(0.5)
                runs["relay_paused"].append(bench.c1_run("relay", seconds))
            finally:
                for name in celery:
                    bench.processes.signal(name, signal.SIGCONT)
            bench.wait_for_ingestion(limit=10)
        print(
            f"  round {number}: p99 "
            + ", ".join(
                f"{target} {runs[target][-1][0]['p99_us'] / 1000:.2f} ms" for target in targets
            ),
            flush=True,
        )
    results: dict = {
        "rounds": [{target: runs[target][n][0] for target in targets} for n in range(rounds)]
    }
    for target in targets:
        pooled, cpu = _pooled(runs[target], backlog=target not in ("direct", "floor"))
        note = f"{rounds} rounds pooled" + (", Celery paused" if target == "relay_paused" else "")
        name = "relay" if target == "relay_paused" else target
        results[target] = bench.c1_result(name, pooled, cpu, note=note)
    # wrk's figures for the same targets, shown beside them (see bench/c1.py).
    results["wrk"] = {
        target: bench.wrk(target, connections=1, seconds=wrk_seconds, delay_ms=0, threads=1)
        for target in ("direct", "floor", "relay")
    }
    return results


def relayed_order(number: int) -> tuple[str, str]:
    """The two keys' turns in round `number` (from 1): the headline key first in odd rounds,
    the unrestricted key in even ones, so what a turn inherits from the one before it (the
    usage backlog, a warm cache) falls on both alike."""
    return ("relay", "unrestricted") if number % 2 else ("unrestricted", "relay")


def _pooled(runs: list[tuple[dict, dict]], *, backlog: bool) -> tuple[dict, dict]:
    """One target's c1 rounds (summary, cpu) as one summary and one CPU share; with `backlog`,
    the largest usage backlog left at the end of a round."""
    summaries = [summary for summary, _ in runs]
    pooled = summarize(
        [latency for summary in summaries for latency in summary["latencies_us"]],
        sum(summary["duration_us"] for summary in summaries),
        sum(summary["status_errors"] for summary in summaries),
        sum(summary["errors"] for summary in summaries),
    )
    cpu = merge_cpu([(cpu, summary["duration_us"]) for summary, cpu in runs])
    if backlog:
        pooled["backlog"] = max((summary["backlog"] or 0) for summary in summaries)
    return pooled, cpu


def measure_refused(
    bench: Bench, refused_key: str, rounds: int, seconds: float, connections: int = 4
) -> dict:
    """The benchmark key's latency at concurrency 1 (bench/c1.py) alone, then while one wrk
    loop of `connections` connections sends, as fast as the relay answers, requests of a key
    whose quota is used up (402: a tool retrying its refused request), in turns, `rounds`
    times; and the refusal counts written for that key (billing.refusals: one row per
    minute and reason, however many requests)."""
    bench.quiet("refused")
    print(
        f"A refused key hammered: c1 latency of the benchmark key alone and beside wrk "
        f"c{connections} on a key refused with 402, {rounds} rounds of {seconds:g} s",
        flush=True,
    )
    bench.c1("relay", seconds=2, warm_up=True)
    runs: dict[str, list[tuple[dict, dict]]] = {"alone": [], "hammered": []}
    hammers: list[WrkResult] = []
    for number in range(1, rounds + 1):
        runs["alone"].append(bench.c1_run("relay", seconds))
        hammer = bench.wrk_start(
            "relay",
            connections=connections,
            seconds=seconds + 1,
            delay_ms=0,
            threads=1,
            key=refused_key,
        )
        time.sleep(0.5)  # The loop at full speed before the measured turn.
        runs["hammered"].append(bench.c1_run("relay", seconds))
        hammers.append(bench.wrk_finish(hammer, note="refused key, 402"))
        print(
            f"  round {number}: p99 alone {runs['alone'][-1][0]['p99_us'] / 1000:.2f} ms, "
            f"hammered {runs['hammered'][-1][0]['p99_us'] / 1000:.2f} ms",
            flush=True,
        )
    results: dict = {"hammers": hammers}
    for name, note in (("alone", "alone"), ("hammered", "beside the refused key's loop")):
        pooled, cpu = _pooled(runs[name], backlog=True)
        results[name] = bench.c1_result(
            "relay", pooled, cpu, note=f"{rounds} rounds pooled, {note}"
        )
    # Every answer the loop got was a refusal (402), each to be counted.
    results["refused_requests"] = sum(hammer.requests for hammer in hammers)
    return results


def merge_cpu(parts: list[tuple[dict, float]]) -> dict:
    """CPU figures (cores) of several runs as one, each run weighted by its length."""
    total = sum(weight for _, weight in parts) or 1
    merged: dict = {}
    for cpu, weight in parts:
        for name, value in cpu.items():
            if isinstance(value, list):
                # Each worker's share, busiest first: summed place by place.
                shares = merged.setdefault(name, [])
                shares += [0.0] * (len(value) - len(shares))
                for place, share in enumerate(value):
                    shares[place] += share * weight / total
            else:
                merged[name] = merged.get(name, 0.0) + value * weight / total
    return merged


def measure_throughput(bench: Bench, levels: list[int], seconds: float) -> dict:
    """wrk at each of `levels` connections, 20 ms upstream: direct, the floor, then the two
    keys through the relay level by level, in turns (relayed_order), since the one compared
    with the other is a target of its own."""
    bench.quiet("throughput")
    print("Throughput, upstream answering after 20 ms", flush=True)
    results: dict[tuple[str, int], WrkResult] = {}
    for target in ("direct", "floor"):
        bench.wrk(target, connections=64, seconds=2, delay_ms=20, warm_up=True)
        for connections in levels:
            results[target, connections] = bench.wrk(
                target, connections=connections, seconds=seconds, delay_ms=20
            )
    for target in ("relay", "unrestricted"):
        bench.wrk(target, connections=64, seconds=2, delay_ms=20, warm_up=True)
    for number, connections in enumerate(levels, start=1):
        for target in relayed_order(number):
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
    for target in ("direct", "relay", "unrestricted"):
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
            f"  ttft {target:<12} {len(ok)}/{len(outcome['streams'])} ok: "
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
