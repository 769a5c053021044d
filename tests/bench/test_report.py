"""bench/report.py: the headline key (every restriction) against the unrestricted key, and
issue 16's targets, met or missed."""

from argparse import Namespace

from bench.c1 import summarize
from bench.measurements import WrkResult
from bench.report import report, restriction_lines, restriction_targets, restrictions_text

OPTIONS = Namespace(levels=[16, 256], quick=True, workers=2)


def run(target: str, *, rps: float = 1000, p50_ms: float = 0.5, errors: int = 0, connections=1):
    """A run of `rps` requests over one second with the given p50 (p99 is twice it)."""
    return WrkResult(
        target=target,
        connections=connections,
        delay_ms=20 if connections > 1 else 0,
        requests=int(rps),
        seconds=1.0,
        errors=errors,
        p50_ms=p50_ms,
        p90_ms=p50_ms,
        p99_ms=2 * p50_ms,
        p999_ms=2 * p50_ms,
        max_ms=2 * p50_ms,
        cpu={"machine": 1.0},
    )


def latency(*, restricted_p50: float, unrestricted_p50: float, errors: int = 0) -> dict:
    return {
        "direct": run("direct", p50_ms=0.1),
        "floor": run("floor", p50_ms=0.4),
        "relay": run("relay", p50_ms=restricted_p50, errors=errors),
        "unrestricted": run("unrestricted", p50_ms=unrestricted_p50),
    }


def throughput(shares: dict[int, float], *, errors: int = 0) -> dict:
    """The unrestricted key at 2,000 req/s at every level, the headline key at `shares` of it."""
    results = {}
    for connections, share in shares.items():
        results["relay", connections] = run(
            "relay", rps=2000 * share, errors=errors, connections=connections
        )
        results["unrestricted", connections] = run(
            "unrestricted", rps=2000, connections=connections
        )
    return results


def test_targets_met_when_the_restrictions_cost_little():
    targets = restriction_targets(
        OPTIONS,
        latency(restricted_p50=0.75, unrestricted_p50=0.5),
        throughput({16: 1.0, 256: 0.85}),
    )

    assert targets == [
        (
            "latency p50, c1: the headline key adds at most 0.3 ms to the unrestricted key's",
            "+0.250 ms (0.75 ms against 0.50 ms)",
            True,
        ),
        (
            "req/s at c16, 20 ms upstream: the headline key keeps at least 85% of the "
            "unrestricted key's",
            "100.0% (2,000 against 2,000)",
            True,
        ),
        (
            "req/s at c256, 20 ms upstream: the headline key keeps at least 85% of the "
            "unrestricted key's",
            "85.0% (1,700 against 2,000)",
            True,
        ),
    ]


def test_targets_missed_just_past_the_bar_and_shown_precisely_enough_to_see_why():
    targets = restriction_targets(
        OPTIONS,
        latency(restricted_p50=0.801, unrestricted_p50=0.5),
        throughput({16: 0.99, 256: 0.8495}),
    )

    assert [(measured, met) for _, measured, met in targets] == [
        ("+0.301 ms (0.80 ms against 0.50 ms)", False),
        ("99.0% (1,980 against 2,000)", True),
        ("84.9% (1,699 against 2,000)", False),
    ]


def test_a_run_with_refusals_meets_no_target_whatever_its_figures():
    targets = restriction_targets(
        OPTIONS,
        latency(restricted_p50=0.5, unrestricted_p50=0.5, errors=3),
        throughput({16: 1.2, 256: 1.2}, errors=7),
    )

    assert [met for _, _, met in targets] == [False, False, False]
    assert (
        targets[0][1] == "+0.000 ms (0.50 ms against 0.50 ms); errors: headline 3, unrestricted 0"
    )
    assert targets[2][1] == "120.0% (2,400 against 2,000); errors: headline 7, unrestricted 0"


def test_no_unrestricted_figures_no_targets_and_no_section():
    only_headline = {"direct": run("direct"), "floor": run("floor"), "relay": run("relay")}

    assert restriction_targets(OPTIONS, only_headline, None) == []
    assert restriction_lines(OPTIONS, only_headline, None, None) == []


def test_the_section_has_both_keys_their_difference_and_the_verdicts():
    ttft = {
        "direct": {"p50": 0.3, "p99": 0.6},
        "relay": {"p50": 1.5, "p99": 3.0},
        "unrestricted": {"p50": 1.0, "p99": 2.0},
    }

    lines = restriction_lines(
        OPTIONS,
        latency(restricted_p50=0.9, unrestricted_p50=0.5),
        throughput({16: 1.0, 256: 0.5}),
        ttft,
    )

    assert lines[1] == "## Every restriction against none"
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == (
        "| key | latency p50 / p99, c1 | over the floor p50 / p99 | req/s at c16, 20 ms | "
        "req/s at c256, 20 ms | time to first token p50 / p99 |"
    )
    assert table[1:4] == [
        "| every restriction (headline) | 0.90 ms / 1.80 ms | +0.50 ms / +1.00 ms | 2,000 | "
        "1,000 | 1.50 ms / 3.00 ms |",
        "| none | 0.50 ms / 1.00 ms | +0.10 ms / +0.20 ms | 2,000 | 2,000 | 1.00 ms / 2.00 ms |",
        "| headline against none | +0.40 ms / +0.80 ms |  | 100.0% | 50.0% | +0.50 ms / +1.00 ms |",
    ]
    assert [line.rsplit("|", 2)[-2].strip() for line in table[5:]] == [
        "**missed**",
        "**met**",
        "**missed**",
    ]


def test_the_restrictions_sentence_names_what_is_on_and_what_is_off():
    assert restrictions_text({"IP restriction": "127.0.0.1", "rate limit": "100000/s"}) == (
        "IP restriction 127.0.0.1; rate limit 100000/s"
    )
    assert restrictions_text({"IP restriction": "127.0.0.1", "lifetime quota": "off"}) == (
        "IP restriction 127.0.0.1; off: lifetime quota"
    )
    assert restrictions_text({"lifetime quota": "off"}) == (
        "none (this run's key carries no restriction)"
    )


def test_the_whole_report_carries_the_section_after_the_summary():
    data = Namespace(restrictions={"rate limit": "100000/s"}, quota="100000")
    facts = {"date": "2026-12-07 13:00:00 UTC", "nproc": 2}

    text = report(
        facts,
        OPTIONS,
        data,
        latency(restricted_p50=0.6, unrestricted_p50=0.5)
        | {
            "rounds": [
                {
                    name: summarize([500], 1000, 0, 0)
                    for name in ("direct", "floor", "relay", "unrestricted")
                }
            ]
        },
        throughput({16: 1.0, 256: 0.9}),
        None,
        None,
        None,
        None,
        [],
        None,
        [],
    )

    assert "carries every restriction a key can" in text
    assert "rate limit 100000/s" in text
    assert text.index("## Summary") < text.index("## Every restriction against none")
    assert text.index("## Every restriction against none") < text.index("## Details")
    assert (
        "| round | direct | floor | relay (ingestion running) | "
        "unrestricted key (ingestion running) | added p99 |"
    ) in text
