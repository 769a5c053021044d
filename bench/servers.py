"""The processes the benchmark starts (each in its own process group, so stopping one stops
its children and nothing else), and small helpers to find and wait for them."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
PYTHON = sys.executable
VENV_BIN = Path(PYTHON).parent


class Processes:
    """Every long-running process the benchmark starts, each in its own session (process
    group), so stopping one stops its children (gunicorn's and Celery's workers) and nothing
    else."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict, **options) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            env=env,
            stdout=options.pop("stdout", log),
            stderr=log,
            start_new_session=True,
            **options,
        )
        self.started[name] = process
        return process

    def pids(self, name: str) -> list[int]:
        process = self.started.get(name)
        if process is None or process.poll() is not None:
            return []
        return [process.pid, *descendants(process.pid)]

    def signal(self, name: str, signum: int) -> None:
        _signal_group(self.started[name], signum)

    def check_alive(self) -> None:
        for name, process in self.started.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {process.returncode}; see {self.log_dir}/{name}.log"
                )

    def stop_all(self, timeout: float = 20.0) -> None:
        for process in reversed(list(self.started.values())):
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
                # A paused process (see measure_latency) must run to act on the SIGTERM.
                _signal_group(process, signal.SIGCONT)
        deadline = time.monotonic() + timeout
        for name, process in reversed(list(self.started.items())):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in {timeout:.0f} s; killing it", flush=True)
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
        self.started.clear()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def pids_named(name: str, *, argument: str = "") -> list[int]:
    """Processes called `name` (and, if given, with the word `argument` in their command
    line, as PostgreSQL names the database in each backend's title)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != name:
                    continue
                words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
                if argument and argument.encode() not in words:
                    continue
                found.append(int(entry.name))
            except OSError:
                continue
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, *, seconds: float, what: str, processes: Processes) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        processes.check_alive()
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready within {seconds:.0f} s")


def http_status(url: str, headers: dict | None = None, body: bytes | None = None) -> int:
    # Only ever the benchmark's own http://127.0.0.1 URLs.
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
