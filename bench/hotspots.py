"""Where the relay's time goes: py-spy samples of every worker during a relayed run."""

import subprocess
import time
from pathlib import Path

from bench.measurements import Bench
from bench.servers import descendants


def profile_relay(bench: Bench, py_spy: str, seconds: float, work_dir: Path) -> dict:
    """Sample every relay worker with py-spy during a c64, 20 ms run; where the time goes."""
    bench.quiet("profile")
    print(f"Profiling the relay workers with py-spy during a {seconds:g} s run at c64", flush=True)
    workers = descendants(bench.processes.started["gunicorn"].pid)
    samplers = []
    for pid in workers:
        output = work_dir / f"profile-{pid}.txt"
        samplers.append(
            (
                output,
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--rate",
                        "200",
                        "--duration",
                        f"{seconds:g}",
                        "--pid",
                        str(pid),
                        "--output",
                        str(output),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            )
        )
    time.sleep(0.5)
    result = bench.wrk("relay", connections=64, seconds=seconds, delay_ms=20)
    stacks: dict[str, int] = {}
    for output, sampler in samplers:
        sampler.wait(seconds + 30)
        if output.exists():
            for line in output.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                stacks[stack] = stacks.get(stack, 0) + int(count)
    return {"run": result, **summarise_profile(stacks)}


def _frame_name(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)"; keep function and short path.
    function, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{function} ({path})"


# Labels for "where the time goes": a sample counts for the innermost frame in one of these.
_AREAS = [
    ("relay: proxy/ code itself", ("proxy/",)),
    ("Redis client (redis.asyncio)", ("redis/",)),
    ("upstream HTTP client (aiohttp)", ("aiohttp/",)),
    ("uvicorn HTTP server (httptools protocol)", ("uvicorn/",)),
    ("logging", ("logging/", "hcai/logging")),
    ("billing (pricing, usage record JSON)", ("billing/",)),
    ("Django (settings, timezone, cache keys)", ("django/", "asgiref/")),
    ("json", ("json/",)),
    ("asyncio / uvloop machinery", ("asyncio/", "uvloop")),
]
_PROJECT_CODE = ("proxy/", "billing/", "keys/", "hcai/")


def summarise_profile(stacks: dict[str, int]) -> dict:
    total = sum(stacks.values()) or 1
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    areas: dict[str, int] = {}
    for stack, count in stacks.items():
        frames = [frame for frame in stack.split(";") if frame]
        if not frames:
            continue
        leaf = _frame_name(frames[-1])
        self_time[leaf] = self_time.get(leaf, 0) + count
        # Inclusive time of the project's own functions: the shape of a request.
        for name in {_frame_name(frame) for frame in frames}:
            if name.partition(" (")[2].startswith(_PROJECT_CODE):
                inclusive[name] = inclusive.get(name, 0) + count
        area = "other"
        for frame in reversed(frames):
            found = next(
                (label for label, markers in _AREAS if any(m in frame for m in markers)), None
            )
            if found:
                area = found
                break
        areas[area] = areas.get(area, 0) + count

    def top(table: dict[str, int], n: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: -item[1])[:n]
        return [(name, count / total) for name, count in ranked]

    return {
        "samples": total,
        "self": top(self_time, 20),
        "inclusive": top(inclusive, 25),
        "areas": top(areas, 20),
    }
