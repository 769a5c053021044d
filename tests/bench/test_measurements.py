"""bench/measurements.py's pooling of the interleaved concurrency-1 rounds."""

import pytest

from bench.c1 import summarize
from bench.measurements import Bench, WrkResult, measure_refused, merge_cpu
from bench.report import refused_lines


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
