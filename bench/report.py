"""The markdown report: summary against the targets, details, profile, machine."""

import math

from bench.cpu import cpu_text
from bench.measurements import StreamLevel

# What is measured against what; each is checked and reported as met or missed.
TARGET_ADDED_P99_C1_MS = 2.0
TARGET_RELAYED_RPS = 1000
TARGET_STREAMS = 256
TARGET_ADDED_TTFT_MS = 2.0
# Issue 16's: the headline key (every restriction on) against the key with none, through the
# same relay. Its share of the unrestricted key's req/s at 20 ms upstream, at every level.
TARGET_RESTRICTED_SHARE = 0.85
# What it may add to the unrestricted key's c1 p50 (usage ingestion running for both).
TARGET_RESTRICTED_ADDED_P50_C1_MS = 0.3


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def _run_row(row, leading: list[str], times_ms: list[float], trailing: list[str]) -> str:
    """One run's table row: target, the table's own leading columns, its times, its own
    trailing columns, then errors, usage backlog and cpu."""
    target = f"{row.target} ({row.note})" if row.note else row.target
    backlog = "" if row.backlog is None else f"{row.backlog:,}"
    cells = [
        target,
        *leading,
        *map(_ms, times_ms),
        *trailing,
        f"{row.errors} ({row.error_rate:.2%})",
        backlog,
        cpu_text(row.cpu),
    ]
    return "| " + " | ".join(cells) + " |"


def _signed_ms(value: float) -> str:
    return f"{'+' if value >= 0 else '−'}{abs(value):.2f} ms"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def best_streams(levels: list[StreamLevel]) -> int:
    best = 0
    for level in levels:
        if not level.passed:
            break
        best = level.streams
    return best


def profile_lines(profile: dict) -> list[str]:
    run = profile["run"]
    lines = [
        "## Where the relay's time goes",
        "",
        f"py-spy (`record --nonblocking --rate 200`, active samples only) on every relay "
        f"worker during a relayed c64 run at 20 ms upstream: {run.rps:,.0f} req/s, "
        f"{profile['samples']:,} samples. Share of the workers' busy time, by the innermost "
        "frame's package:",
        "",
        "| area | share |",
        "|---|---|",
    ]
    lines += [f"| {name} | {share:.0%} |" for name, share in profile["areas"]]
    lines += [
        "",
        "The project's functions by inclusive time (share of samples with the function "
        "on the stack):",
        "",
    ]
    lines += ["| function | inclusive |", "|---|---|"]
    lines += [f"| `{name}` | {share:.0%} |" for name, share in profile["inclusive"]]
    lines += ["", "Functions by self time:", "", "| function | self |", "|---|---|"]
    lines += [f"| `{name}` | {share:.1%} |" for name, share in profile["self"]]
    lines.append("")
    return lines


def report(
    facts,
    options,
    data,
    latency,
    throughput,
    search,
    ttft,
    streams,
    usage,
    skipped,
    profile,
    background,
    refused=None,
):
    lines = ["# Relay benchmark results", ""]
    lines += [
        f"Run on {facts['date']} with `.venv/bin/python bench/run.py"
        f"{' --quick' if options.quick else ''}`. "
        "Direct = the client talks to the fake upstream itself; relay = through "
        f"`gunicorn hcai.asgi:application -c gunicorn.conf.py` ({options.workers} uvicorn "
        "workers, production settings, PostgreSQL, Redis, Celery worker and beat running). "
        "The relay's figures are those of the headline key, which carries every restriction a "
        "key can, each on and each far above what the benchmark spends or sends: "
        f"{restrictions_text(data.restrictions)}. *Unrestricted* = through the same relay "
        "with a key that has none (no quota, window, cap, budget, rate limit, concurrency "
        'limit, IP restriction or expiry); see "Every restriction against none".',
        "",
        f"**The load generator shares this {facts['nproc']}-core machine with the relay, the "
        "upstream, Redis, PostgreSQL and Celery**: every relayed figure is what is left "
        "after the client's own CPU (the `cpu` column shows who used the cores).",
        "",
        "**Floor** = the same client through the leanest Python forwarder under the same "
        "server command (`bench/floor.py`: a bare ASGI app forwarding with one aiohttp session, "
        "no Django, no Redis): floor minus direct is what this machine charges any Python "
        "forwarder, and relay minus floor (*relay over floor*) is the relay's own work. The "
        "floor is context; the targets compare the relay with direct.",
        "",
        "## Summary",
        "",
        "| measurement | direct | floor | through relay | added / ratio | relay over floor "
        "| target | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if latency:
        direct, relay = latency["direct"], latency["relay"]
        floor = latency.get("floor")
        floor_p50 = _ms(floor.p50_ms) if floor else ""
        floor_p99 = _ms(floor.p99_ms) if floor else ""
        over_p50 = _signed_ms(relay.p50_ms - floor.p50_ms) if floor else ""
        over_p99 = _signed_ms(relay.p99_ms - floor.p99_ms) if floor else ""
        lines.append(
            f"| latency p50, concurrency 1, non-streaming | {_ms(direct.p50_ms)} | {floor_p50} | "
            f"{_ms(relay.p50_ms)} | +{_ms(relay.p50_ms - direct.p50_ms)} | {over_p50} | | |"
        )
        added = relay.p99_ms - direct.p99_ms
        lines.append(
            f"| latency p99, concurrency 1, non-streaming (usage ingestion running) | "
            f"{_ms(direct.p99_ms)} | {floor_p99} | "
            f"{_ms(relay.p99_ms)} | +{_ms(added)} | {over_p99} | "
            f"added < {TARGET_ADDED_P99_C1_MS:g} ms | "
            f"{_met(added < TARGET_ADDED_P99_C1_MS)} |"
        )
        paused = latency.get("relay_paused")
        if paused:
            added = paused.p99_ms - direct.p99_ms
            over = (
                f"{_signed_ms(paused.p50_ms - floor.p50_ms)} / "
                f"{_signed_ms(paused.p99_ms - floor.p99_ms)}"
                if floor
                else ""
            )
            lines.append(
                f"| latency p50 / p99, c1, usage ingestion paused (the relay alone) | "
                f"{_ms(direct.p50_ms)} / {_ms(direct.p99_ms)} | "
                f"{f'{floor_p50} / {floor_p99}' if floor else ''} | "
                f"{_ms(paused.p50_ms)} / {_ms(paused.p99_ms)} | "
                f"+{_ms(paused.p50_ms - direct.p50_ms)} / +{_ms(added)} | {over} | "
                f"added p99 < {TARGET_ADDED_P99_C1_MS:g} ms | "
                f"{_met(added < TARGET_ADDED_P99_C1_MS)} (without ingestion) |"
            )
    if throughput:
        relayed_best = 0.0
        for connections in options.levels:
            direct = throughput.get(("direct", connections))
            floor = throughput.get(("floor", connections))
            relay = throughput.get(("relay", connections))
            if not (direct and relay):
                continue
            relayed_best = max(relayed_best, relay.rps)
            target = f"≥ {TARGET_RELAYED_RPS:,} req/s" if connections == max(options.levels) else ""
            verdict = _met(relayed_best >= TARGET_RELAYED_RPS) if target else ""
            lines.append(
                f"| req/s at c{connections}, 20 ms upstream | {direct.rps:,.0f} | "
                f"{f'{floor.rps:,.0f}' if floor else ''} | "
                f"{relay.rps:,.0f} | {relay.rps / direct.rps:.0%} of direct | "
                f"{f'{relay.rps / floor.rps:.0%} of floor' if floor and floor.rps else ''} | "
                f"{target} {'(best of the three)' if target else ''} | {verdict} |"
            )
    if search:
        cells = []
        for target in ("direct", "relay"):
            found = search[target]
            best = found["best"]
            if best is None:
                cells.append("none passed")
            else:
                more = "≥ " if found["bounded"] else ""
                cells.append(
                    f"{more}{best.rps:,.0f} (c{best.connections}, p99 {best.p99_ms:.0f} ms)"
                )
        lines.append(
            "| highest req/s with p99 < 1 s and errors < 0.1% (20 ms upstream, closed loop) | "
            f"{cells[0]} | | {cells[1]} | | | | |"
        )
    if ttft:
        direct, relay = ttft["direct"], ttft["relay"]
        added50 = relay["p50"] - direct["p50"]
        lines.append(
            f"| streaming time to first token p50, c1 | {_ms(direct['p50'])} | | "
            f"{_ms(relay['p50'])} | +{_ms(added50)} | | added < {TARGET_ADDED_TTFT_MS:g} ms | "
            f"{_met(added50 < TARGET_ADDED_TTFT_MS)} |"
        )
        lines.append(
            f"| streaming time to first token p99, c1 | {_ms(direct['p99'])} | | "
            f"{_ms(relay['p99'])} | +{_ms(relay['p99'] - direct['p99'])} | | | |"
        )
    if streams:
        direct_best = best_streams(streams["levels"]["direct"])
        relay_best = best_streams(streams["levels"]["relay"])
        tried = max(options.stream_levels)
        lines.append(
            f"| most concurrent streams, all events delivered, none stalled (tried up to "
            f"{tried}) | {direct_best or 'none'} | | {relay_best or 'none'} | | | "
            f"{TARGET_STREAMS} | {_met(relay_best >= TARGET_STREAMS)} |"
        )
    if refused:
        alone, hammered = refused["alone"], refused["hammered"]
        rate = sum(row.requests for row in refused["hammers"]) / max(
            sum(row.seconds for row in refused["hammers"]), 1e-9
        )
        lines.append(
            f"| latency p50 / p99, c1, beside one loop on a refused key ({rate:,.0f} "
            "refusals/s, 402) | | | "
            f"{_ms(hammered.p50_ms)} / {_ms(hammered.p99_ms)} | "
            f"{_signed_ms(hammered.p50_ms - alone.p50_ms)} / "
            f"{_signed_ms(hammered.p99_ms - alone.p99_ms)} over alone "
            f"({_ms(alone.p50_ms)} / {_ms(alone.p99_ms)}) | | | |"
        )
    lines += restriction_lines(options, latency, throughput, ttft)
    lines += ["", "## Details", ""]
    if refused:
        lines += refused_lines(refused)
    if latency:
        c1_rows = [row for name, row in latency.items() if name not in ("wrk", "rounds")]
        lines += [
            "Latency at concurrency 1 (one connection, one request at a time, upstream "
            f"answering at once), in {len(latency['rounds'])} rounds: each round takes every "
            "target in turn, and each target's figures are over all its rounds pooled. The "
            "summary's figures come from `bench/c1.py`; wrk's for the "
            "same targets are shown beside them. time/request = run length / requests: in a "
            "closed loop of one connection no mean latency can exceed it, and wrk's does, so "
            "its tail at this concurrency is not used (see `bench/c1.py`). Columns as in the "
            "wrk table below.",
            "",
            "| target | client | req/s | p50 | p90 | p99 | p99.9 | max | mean | time/request | "
            "errors | usage backlog | cpu (cores) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in [*c1_rows, *latency.get("wrk", {}).values()]:
            lines.append(
                _run_row(
                    row,
                    [row.client, f"{row.rps:,.0f}"],
                    [row.p50_ms, row.p90_ms, row.p99_ms, row.p999_ms, row.max_ms, row.mean_ms],
                    [_ms(row.cycle_ms)],
                )
            )
        lines += ["", *_round_lines(latency["rounds"]), ""]
    wrk_rows = []
    if search:
        wrk_rows += search["direct"]["steps"]
        # The floor is measured at the throughput levels only, not searched.
        wrk_rows += [row for key, row in throughput.items() if key[0] == "floor"]
        wrk_rows += search["relay"]["steps"]
        wrk_rows += [row for key, row in throughput.items() if key[0] == "unrestricted"]
    elif throughput:
        wrk_rows += list(throughput.values())
    if wrk_rows:
        lines += [
            "wrk runs (closed loop: each connection sends its next request when the last "
            "answer arrives). usage backlog = usage events still in the Redis stream, not yet "
            "ingested by Celery, when the run ended. cpu = cores busy during the run "
            "(/proc/stat), then by component (relay = gunicorn and its workers, each worker in "
            "brackets; floor = the floor's gunicorn and workers; client = wrk; postgres = the "
            "benchmark database's backends; other = "
            "every other process, e.g. PostgreSQL's WAL writer or unrelated work; "
            "unattributed = busy time /proc/stat counts but no process does, mostly the "
            "kernel's loopback networking; shares are tick-sampled, so approximate). "
            "steal (shown when not zero) = time the hypervisor gave this VM's vCPUs to someone "
            "else while they had work to run, in cores; it is not part of busy.",
            "",
            "| target | upstream delay | connections | req/s | p50 | p90 | p99 | p99.9 | max | "
            "errors | usage backlog | cpu (cores) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in wrk_rows:
            lines.append(
                _run_row(
                    row,
                    [f"{row.delay_ms:g} ms", str(row.connections), f"{row.rps:,.0f}"],
                    [row.p50_ms, row.p90_ms, row.p99_ms, row.p999_ms, row.max_ms],
                    [],
                )
            )
        lines.append("")
    if streams:
        lines += [
            f"Concurrent streams ({options.stream_clients} client processes, aiohttp): each "
            f"stream has {streams['deltas']} text deltas {streams['gap_ms']:g} ms apart "
            f"(plus 5 framing events); a stall is a gap between two events over "
            f"{streams['stall_ms']:g} ms. Every stream is opened at the same moment.",
            "",
            "| target | streams | complete | stalled | max gap | p99 of per-stream max gap | "
            "ttft p50 | ttft p99 | cpu (cores) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for target in ("direct", "relay"):
            for level in streams["levels"][target]:
                errors = f" ({level.errors})" if level.errors else ""
                lines.append(
                    f"| {target} | {level.streams} | {level.ok}{errors} | {level.stalled} | "
                    f"{_ms(level.max_gap_ms)} | {_ms(level.p99_gap_ms)} | "
                    f"{_ms(level.ttft_p50_ms)} | {_ms(level.ttft_p99_ms)} | {cpu_text(level.cpu)} |"
                )
        lines.append("")
    if usage:
        written = sum(usage["by_status"].values())
        lines += [
            "Usage ingestion (Celery `ingest_usage` moving the Redis stream into `UsageEvent`): "
            f"{written:,} events written for the headline and unrestricted keys, by status "
            f"{usage['by_status']}; the clients saw {bench_relayed(usage):,} relayed requests "
            "complete (requests still in flight when wrk stops are recorded too, with status "
            f"499 if cut). Stream drained {usage['drain_seconds']:.1f} s after the last run; "
            f"{usage['left_in_stream']} entries left.",
            "",
        ]
    if profile:
        lines += profile_lines(profile)
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped) + ".", ""]
    lines += ["## Machine", ""]
    lines += [f"- {name}: {value}" for name, value in facts.items()]
    if background:
        lines.append(
            "- load on the machine just before each section (cores, all processes, no "
            "measurement running): "
            + ", ".join(f"{section} {load:.2f}" for section, load in background)
        )
    lines.append("")
    return "\n".join(lines)


def refused_lines(refused: dict) -> list[str]:
    """The refused-key scenario (bench.measurements.measure_refused)."""
    lines = [
        "A refused key hammered: the benchmark key's latency at concurrency 1 (`bench/c1.py`) "
        "alone, then beside one wrk loop sending a key's requests as fast as the relay "
        "refuses them (its quota used up: 402 after the quota admission), in turns per "
        "round. A refusal is counted with one Redis script and never written on its own "
        "(billing.refusals). Columns as in the wrk table below.",
        "",
        "| target | client | req/s | p50 | p90 | p99 | p99.9 | max | mean | time/request | "
        "errors | usage backlog | cpu (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in (refused["alone"], refused["hammered"], *refused["hammers"]):
        lines.append(
            _run_row(
                row,
                [row.client, f"{row.rps:,.0f}"],
                [row.p50_ms, row.p90_ms, row.p99_ms, row.p999_ms, row.max_ms, row.mean_ms],
                [_ms(row.cycle_ms)],
            )
        )
    counts = refused.get("counts")
    lines.append("")
    if counts:
        lines += [
            f"The loop's {refused['refused_requests']:,} refused requests (every one an "
            f"error for wrk) were written as {counts['rows']} `RefusalCount` row(s) over "
            f"{counts['minutes']} minute(s), counting {counts['counted']:,}: "
            f"{', '.join(counts['reasons']) or 'none'}.",
            "",
        ]
    return lines


def bench_relayed(usage: dict) -> int:
    return usage.get("relayed", 0)


def _round_lines(rounds: list[dict]) -> list[str]:
    """Each round's p50 / p99 per target, and the relay's added p99 in that round."""
    targets = [
        name
        for name in ("direct", "floor", "relay", "unrestricted", "relay_paused")
        if name in rounds[0]
    ]
    titles = {
        "relay": "relay (ingestion running)",
        "unrestricted": "unrestricted key (ingestion running)",
        "relay_paused": "relay (Celery paused)",
    }
    lines = [
        "Each round's p50 / p99 (the machine's spells show here: a slow round is slow for "
        "every target):",
        "",
        "| round | " + " | ".join(titles.get(name, name) for name in targets) + " | added p99 |",
        "|---" * (len(targets) + 2) + "|",
    ]
    for number, round_ in enumerate(rounds, start=1):
        cells = [
            f"{_ms(round_[name]['p50_us'] / 1000)} / {_ms(round_[name]['p99_us'] / 1000)}"
            for name in targets
        ]
        added = (round_["relay"]["p99_us"] - round_["direct"]["p99_us"]) / 1000
        lines.append(f"| {number} | " + " | ".join(cells) + f" | +{_ms(added)} |")
    return lines


def restrictions_text(restrictions: dict[str, str]) -> str:
    """The headline key's restrictions in a sentence, or a warning when it carries none."""
    on = [f"{name} {setting}" for name, setting in restrictions.items() if setting != "off"]
    off = [name for name, setting in restrictions.items() if setting == "off"]
    if not on:
        return "none (this run's key carries no restriction)"
    return "; ".join(on) + (f"; off: {', '.join(off)}" if off else "")


def restriction_targets(
    options, latency: dict | None, throughput: dict | None
) -> list[tuple[str, str, bool]]:
    """Issue 16's targets, the headline key against the unrestricted key: (target, measured,
    met). A run with errors on either key does not meet a target: a refused request is cheap,
    so its rate says nothing of an admitted one's."""
    rows = []
    if latency and "unrestricted" in latency:
        restricted, unrestricted = latency["relay"], latency["unrestricted"]
        # c1 latencies are whole microseconds (bench/c1.py): so is their difference, and the
        # figure shown is the one judged.
        added_us = round((restricted.p50_ms - unrestricted.p50_ms) * 1000)
        rows.append(
            (
                "latency p50, c1: the headline key adds at most "
                f"{TARGET_RESTRICTED_ADDED_P50_C1_MS:g} ms to the unrestricted key's",
                f"{'+' if added_us >= 0 else '−'}{abs(added_us) / 1000:.3f} ms "
                f"({_ms(restricted.p50_ms)} against {_ms(unrestricted.p50_ms)})"
                f"{_errors_text(restricted, unrestricted)}",
                added_us <= TARGET_RESTRICTED_ADDED_P50_C1_MS * 1000
                and not (restricted.errors or unrestricted.errors),
            )
        )
    for connections in options.levels if throughput else []:
        restricted = throughput.get(("relay", connections))
        unrestricted = throughput.get(("unrestricted", connections))
        if not (restricted and unrestricted):
            continue
        share = _share(restricted, unrestricted)
        rows.append(
            (
                f"req/s at c{connections}, 20 ms upstream: the headline key keeps at least "
                f"{TARGET_RESTRICTED_SHARE:.0%} of the unrestricted key's",
                f"{_percent(share)} ({restricted.rps:,.0f} against {unrestricted.rps:,.0f})"
                f"{_errors_text(restricted, unrestricted)}",
                share >= TARGET_RESTRICTED_SHARE * 1000
                and not (restricted.errors or unrestricted.errors),
            )
        )
    return rows


def _share(restricted, unrestricted) -> int:
    """The headline key's req/s as a share of the unrestricted key's, in tenths of a percent,
    rounded down: the figure shown is the one judged (84.95 % shows as 84.9 %, not as a
    missed 85.0 %)."""
    return math.floor(restricted.rps / unrestricted.rps * 1000) if unrestricted.rps else 0


def _percent(share: int) -> str:
    return f"{share / 10:.1f}%"


def _errors_text(restricted, unrestricted) -> str:
    if not (restricted.errors or unrestricted.errors):
        return ""
    return f"; errors: headline {restricted.errors}, unrestricted {unrestricted.errors}"


def restriction_lines(options, latency, throughput, ttft) -> list[str]:
    """The headline key beside the unrestricted key, and issue 16's targets."""
    has_latency = bool(latency and "unrestricted" in latency)
    has_throughput = bool(throughput and any(key[0] == "unrestricted" for key in throughput))
    has_ttft = bool(ttft and "unrestricted" in ttft)
    if not (has_latency or has_throughput or has_ttft):
        return []
    levels = options.levels if has_throughput else []
    lines = [
        "",
        "## Every restriction against none",
        "",
        "The same relay, in the same minutes, with the headline key (every restriction on) "
        "and with a key that has none. c1 figures with usage ingestion running for both; "
        "the two keys take turns (each goes first in every other round or level).",
        "",
        "| key | latency p50 / p99, c1 | over the floor p50 / p99 | "
        + "".join(f"req/s at c{connections}, 20 ms | " for connections in levels)
        + "time to first token p50 / p99 |",
        "|---|---|---|" + "---|" * len(levels) + "---|",
    ]
    floor = latency.get("floor") if has_latency else None
    for target, title in (("relay", "every restriction (headline)"), ("unrestricted", "none")):
        cells = [title]
        if has_latency:
            row = latency[target]
            cells.append(f"{_ms(row.p50_ms)} / {_ms(row.p99_ms)}")
            cells.append(
                f"{_signed_ms(row.p50_ms - floor.p50_ms)} / {_signed_ms(row.p99_ms - floor.p99_ms)}"
                if floor
                else ""
            )
        else:
            cells += ["", ""]
        for connections in levels:
            row = throughput.get((target, connections))
            errors = f" ({row.errors} errors)" if row and row.errors else ""
            cells.append(f"{row.rps:,.0f}{errors}" if row else "")
        cells.append(f"{_ms(ttft[target]['p50'])} / {_ms(ttft[target]['p99'])}" if has_ttft else "")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["headline against none"]
    if has_latency:
        restricted, unrestricted = latency["relay"], latency["unrestricted"]
        cells.append(
            f"{_signed_ms(restricted.p50_ms - unrestricted.p50_ms)} / "
            f"{_signed_ms(restricted.p99_ms - unrestricted.p99_ms)}"
        )
        cells.append("")
    else:
        cells += ["", ""]
    for connections in levels:
        restricted = throughput.get(("relay", connections))
        unrestricted = throughput.get(("unrestricted", connections))
        cells.append(
            _percent(_share(restricted, unrestricted)) if restricted and unrestricted else ""
        )
    cells.append(
        f"{_signed_ms(ttft['relay']['p50'] - ttft['unrestricted']['p50'])} / "
        f"{_signed_ms(ttft['relay']['p99'] - ttft['unrestricted']['p99'])}"
        if has_ttft
        else ""
    )
    lines.append("| " + " | ".join(cells) + " |")
    targets = restriction_targets(options, latency, throughput)
    if targets:
        lines += [
            "",
            "Issue 16's targets (a run with errors on either key meets none):",
            "",
            "| target | measured | |",
            "|---|---|---|",
        ]
        lines += [f"| {target} | {measured} | {_met(ok)} |" for target, measured, ok in targets]
    return lines
