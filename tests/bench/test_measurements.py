"""bench/measurements.py's pooling of the interleaved concurrency-1 rounds."""

import pytest

from bench.measurements import merge_cpu


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
