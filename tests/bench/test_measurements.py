"""bench/measurements.py: the interleaved rounds and turns, their pooling, and which key each
relayed run sends."""

import threading
from argparse import Namespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.c1 import summarize
from bench.measurements import (
    Bench,
    WrkResult,
    measure_latency,
    measure_refused,
    measure_throughput,
    merge_cpu,
    relayed_order,
)
from bench.report import refused_lines
from bench.servers import Processes


def test_cpu_of_several_runs_is_weighted_by_their_length():
    merged = merge_cpu(
        [
            ({"machine": 1.0, "relay": 0.5, "relay_workers": [0.4, 0.1]}, 1_000_000),
            ({"machine": 2.0, "relay": 0.8, "relay_workers": [0.8]}, 3_000_000),
        ]
    )

    assert merged["machine"] == pytest.approx(1.75)
    assert merged["relay"] == pytest.approx(0.725)
    # Each worker's share, busiest first, place by place (a run without the second worker
    # counts it as idle).
    assert merged["relay_workers"] == pytest.approx([0.7, 0.025])


def test_no_runs_merge_to_nothing():
    assert merge_cpu([]) == {}


class RefusedScenarioBench(Bench):
    """bench/measurements.py's Bench without servers: c1 runs with fixed latencies (slower
    while the refused key's loop runs) and a wrk loop that reports 1,000 requests."""

    def __init__(self) -> None:
        self.skipped, self.background, self.relayed = [], [], 0
        self.keys = {"relay": "sk-hc-headline"}
        self.hammering = False
        self.hammer_keys: list[str] = []

    def quiet(self, section: str) -> None:
        self.background.append((section, 0.0))

    def usage_backlog(self) -> int:
        return 0

    def c1_run(self, target: str, seconds: float) -> tuple[dict, dict]:
        latency = 900 if self.hammering else 600
        summary = summarize([latency] * 100, 100 * 1000, 0, 0)
        summary["latencies_us"] = [latency] * 100
        summary["backlog"] = 0
        return summary, {"machine": 1.0}

    def wrk_start(self, target: str, **options) -> dict:
        self.hammering = True
        self.hammer_keys.append(options["key"])
        return {"connections": options["connections"]}

    def wrk_finish(self, running: dict, *, warm_up: bool = False, note: str = "") -> WrkResult:
        self.hammering = False
        summary = summarize([300] * 1000, 1_000_000, 1000, 0)
        return self._result(
            "relay",
            summary,
            {"machine": 2.0},
            connections=running["connections"],
            delay_ms=0,
            errors=1000,
            note=note,
            client="wrk",
            label="wrk",
        )


def test_the_refused_key_scenario_pools_its_turns_and_reports_them():
    bench = RefusedScenarioBench()

    refused = measure_refused(bench, "sk-hc-refused", rounds=2, seconds=1)
    refused["counts"] = {"rows": 1, "minutes": 1, "counted": 2000, "reasons": ["402 x (messages)"]}

    assert bench.hammer_keys == ["sk-hc-refused", "sk-hc-refused"]
    assert (refused["alone"].requests, refused["alone"].p99_ms) == (200, 0.6)
    assert (refused["hammered"].requests, refused["hammered"].p99_ms) == (200, 0.9)
    assert refused["refused_requests"] == 2000
    assert bench.relayed == 0  # The refused key's requests are not the benchmark key's usage.
    lines = refused_lines(refused)
    assert lines[-2] == (
        "The loop's 2,000 refused requests (every one an error for wrk) were written as 1 "
        "`RefusalCount` row(s) over 1 minute(s), counting 2,000: 402 x (messages)."
    )
    assert sum(line.startswith("| relay (2 rounds pooled") for line in lines) == 2


def test_the_two_keys_take_turns_going_first():
    assert [relayed_order(number) for number in (1, 2, 3, 4)] == [
        ("relay", "unrestricted"),
        ("unrestricted", "relay"),
        ("relay", "unrestricted"),
        ("unrestricted", "relay"),
    ]


class ScriptedBench(Bench):
    """Bench without servers: every c1 and wrk run is logged as (client, target) and answers
    with a fixed latency (the unrestricted key's lower than the headline key's)."""

    LATENCY_US = {"direct": 100, "floor": 400, "relay": 800, "unrestricted": 600}

    def __init__(self) -> None:
        self.skipped, self.background, self.relayed = [], [], 0
        self.keys = {"relay": "sk-hc-headline", "unrestricted": "sk-hc-unrestricted"}
        self.processes = Namespace(started={}, check_alive=lambda: None)
        self.log: list[tuple[str, str]] = []

    def quiet(self, section: str) -> None:
        self.background.append((section, 0.0))

    def usage_backlog(self) -> int:
        return 0

    def c1_run(self, target: str, seconds: float) -> tuple[dict, dict]:
        self.log.append(("c1", target))
        latency = self.LATENCY_US[target]
        summary = summarize([latency] * 100, 100 * latency, 0, 0)
        summary["latencies_us"] = [latency] * 100
        # Usage events left in the stream after a relayed run (none left now, see usage_backlog).
        summary["backlog"] = 7 if target in self.keys else None
        return summary, {"machine": 1.0}

    def wrk_start(self, target: str, **options) -> dict:
        self.log.append(("wrk", target))
        return {"target": target, "connections": options["connections"]}

    def wrk_finish(self, running: dict, *, warm_up: bool = False, note: str = "") -> WrkResult:
        latency = self.LATENCY_US[running["target"]]
        summary = summarize([latency] * 1000, 1_000_000, 0, 0)
        return self._result(
            running["target"],
            summary,
            {"machine": 1.0},
            connections=running["connections"],
            delay_ms=20,
            errors=0,
            note=note,
            client="wrk",
            label="wrk",
        )


def test_latency_rounds_measure_both_keys_each_round_in_turns():
    bench = ScriptedBench()

    results = measure_latency(bench, rounds=2, seconds=1, wrk_seconds=1)

    measured = [run for run in bench.log if run[0] == "c1"]
    # Warm-ups, then per round: direct, floor, 2 s of relayed traffic, the two keys in turn.
    assert measured == [
        ("c1", "direct"),
        ("c1", "floor"),
        ("c1", "relay"),
        ("c1", "unrestricted"),
        *[("c1", "direct"), ("c1", "floor"), ("c1", "relay"), ("c1", "relay")],
        ("c1", "unrestricted"),
        *[("c1", "direct"), ("c1", "floor"), ("c1", "relay"), ("c1", "unrestricted")],
        ("c1", "relay"),
    ]
    assert (results["relay"].p50_ms, results["unrestricted"].p50_ms) == (0.8, 0.6)
    assert results["unrestricted"].note == "2 rounds pooled"
    assert results["unrestricted"].requests == 200
    # The backlog a relayed turn left, for either key; none for direct.
    assert (results["relay"].backlog, results["unrestricted"].backlog) == (7, 7)
    assert results["direct"].backlog is None
    assert [set(round_) for round_ in results["rounds"]] == [
        {"direct", "floor", "relay", "unrestricted"}
    ] * 2


def test_throughput_takes_both_keys_level_by_level_in_turns():
    bench = ScriptedBench()

    results = measure_throughput(bench, [16, 64, 256], seconds=1)

    relayed = [target for _, target in bench.log if target in ("relay", "unrestricted")]
    # One warm-up each, then the levels, the key going first changing from level to level.
    assert relayed == [
        "relay",
        "unrestricted",
        *["relay", "unrestricted"],
        *["unrestricted", "relay"],
        *["relay", "unrestricted"],
    ]
    assert sorted(results) == [
        (target, connections)
        for target in ("direct", "floor", "relay", "unrestricted")
        for connections in (16, 64, 256)
    ]
    assert results["unrestricted", 64].connections == 64


@pytest.fixture
def key_server():
    """An HTTP server that answers 200 and remembers the x-api-key of every request."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.headers.get("x-api-key"))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_each_relayed_target_sends_its_own_key_and_direct_sends_none(key_server, tmp_path):
    url, seen = key_server
    options = Namespace(time_budget=60, body_padding=0, redis_url="redis://127.0.0.1:1/0")
    bench = Bench(
        options,
        Processes(tmp_path),
        {"direct": url, "relay": url, "unrestricted": url},
        {"relay": "sk-hc-headline", "unrestricted": "sk-hc-unrestricted"},
        {},
    )

    requests = {}
    for target in ("unrestricted", "direct", "relay"):
        seen.clear()
        summary, _ = bench.c1_run(target, 0.2)
        requests[target] = summary["requests"]
        assert summary["requests"] == len(seen) > 0
        assert set(seen) == {
            {"relay": "sk-hc-headline", "unrestricted": "sk-hc-unrestricted"}.get(target)
        }
    # Both keys' requests are the benchmark's usage; direct ones are not.
    assert bench.relayed == requests["relay"] + requests["unrestricted"]
