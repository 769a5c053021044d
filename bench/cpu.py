"""CPU accounting: who used the two cores during a measurement."""

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Groups that are a gunicorn master and its workers: each worker's share is shown too.
_WORKER_GROUPS = ("relay", "floor")


def _process_ticks() -> dict[int, int]:
    """CPU ticks (user + system) used so far by every process on the machine."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def machine_seconds() -> dict[str, float]:
    """The machine's CPU time so far, all vCPUs together, from the `cpu` line of /proc/stat:
    busy (user, nice, system, irq, softirq), idle (idle, iowait), and steal: time a vCPU
    was ready to run but the hypervisor gave its physical core to someone else. Steal is
    neither busy nor idle here (it used to count as busy)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return {
        "busy": (user + nice + system + irq + softirq) / CLOCK_TICKS,
        "idle": (idle + iowait) / CLOCK_TICKS,
        "steal": steal / CLOCK_TICKS,
    }


def steal_share(started: dict[str, float], ended: dict[str, float]) -> float:
    """Steal as a share of all vCPU time between two machine_seconds() samples."""
    used = {name: ended[name] - started[name] for name in ended}
    return used["steal"] / max(sum(used.values()), 1e-9)


@dataclass
class CpuMeter:
    """CPU used per component between start() and stop(), in cores (1.0 = one core busy).

    Components are named groups of processes; the clients (wrk, bench/streams.py) are this
    script's children and are counted when reaped; "other" is every other process. The
    machine's total comes from /proc/stat, and on this VM it is the one to believe: under the
    relay's load the processes' own times add up to a third of a core less than it, while a
    nice-19 busy loop run alongside got only what /proc/stat called idle. So "unattributed"
    (the difference) is real work, mostly the kernel's loopback networking. "steal" is the
    vCPU time the hypervisor gave to someone else during the measurement, in cores too."""

    groups: dict
    started: dict = field(default_factory=dict)

    def _sample(self) -> dict:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "ticks": _process_ticks(),
            "pids": {name: set(pids()) for name, pids in self.groups.items()},
            "client": children.ru_utime + children.ru_stime,
            "machine": machine_seconds(),
            "wall": time.monotonic(),
        }

    def start(self) -> None:
        self.started = self._sample()

    def stop(self) -> dict:
        ended = self._sample()
        wall = ended["wall"] - self.started["wall"]
        # A process that started during the measurement counts from zero.
        used = {
            pid: (ticks - self.started["ticks"].get(pid, 0)) / CLOCK_TICKS / wall
            for pid, ticks in ended["ticks"].items()
        }
        used.pop(os.getpid(), None)  # This script only waits for its clients.
        cores = {"client": (ended["client"] - self.started["client"]) / wall}
        grouped: set[int] = set()
        for name in self.groups:
            pids = (ended["pids"][name] | self.started["pids"][name]) & used.keys()
            cores[name] = sum(used[pid] for pid in pids)
            grouped |= pids
        # Each server worker on its own: connections are not always spread evenly.
        for name in _WORKER_GROUPS:
            workers = sorted(
                (used[pid] for pid in ended["pids"].get(name, ()) if pid in used), reverse=True
            )
            cores[f"{name}_workers"] = [share for share in workers if share >= 0.005]
        cores["other"] = sum(share for pid, share in used.items() if pid not in grouped)
        machine = {
            name: (ended["machine"][name] - self.started["machine"][name]) / wall
            for name in ("busy", "steal")
        }
        cores["machine"] = machine["busy"]
        cores["steal"] = machine["steal"]
        cores["unattributed"] = max(0.0, cores["machine"] - sum(used.values()) - cores["client"])
        return cores


_COMPONENTS = [
    "relay",
    "floor",
    "upstream",
    "client",
    "redis",
    "postgres",
    "celery",
    "other",
    "unattributed",
]


def cpu_text(cpu: dict) -> str:
    parts = []
    for name in _COMPONENTS:
        if cpu.get(name, 0) < 0.005:
            continue
        part = f"{name} {cpu[name]:.2f}"
        workers = cpu.get(f"{name}_workers", [])
        if len(workers) > 1:
            part += " (" + " + ".join(f"{share:.2f}" for share in workers) + ")"
        parts.append(part)
    text = f"{cpu['machine']:.2f} busy: " + ", ".join(parts)
    if cpu.get("steal", 0) >= 0.005:
        text += f"; steal {cpu['steal']:.2f}"
    return text


def background_load(seconds: float = 3.0) -> float:
    """Cores busy while no measurement runs (the benchmark's own servers included: a Celery
    worker still ingesting the last section's usage counts too)."""
    meter = CpuMeter({})
    meter.start()
    time.sleep(seconds)
    return meter.stop()["machine"]


def wait_for_quiet(limit_cores: float, max_seconds: float) -> float:
    """Wait (bounded) until the machine is nearly idle; return the load last seen."""
    deadline = time.monotonic() + max_seconds
    load = background_load()
    while load > limit_cores and time.monotonic() < deadline:
        print(f"  the machine is busy ({load:.2f} cores); waiting", flush=True)
        load = background_load()
    return load
