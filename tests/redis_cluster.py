"""A real Redis Cluster for the tests: three primaries (no replicas) on 127.0.0.1, each a
redis-server in a temporary folder, joined with `redis-cli --cluster create`.

`cluster-require-full-coverage no`: a node that dies leaves its slots unserved, and the other
primaries go on serving theirs (with the default, every node refuses every command until the
lost slots are served again), which is what the relay's tests of a lost node expect.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
MISSING = (
    None
    if REDIS_SERVER and REDIS_CLI
    else "needs redis-server and redis-cli (Debian's redis-server package) for a Redis Cluster"
)

# Bounds on starting: each server answering, then the cluster agreeing on its slots.
START_SECONDS = 20


class RedisCluster:
    def __init__(self, folder: Path, ports: list[int]) -> None:
        self.folder = folder
        self.ports = list(ports)
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.ports]

    def client(self, port: int) -> redis.Redis:
        """A plain (non-cluster) client of one node, to ask it directly."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self) -> "RedisCluster":
        """Start the servers and join them; a failure stops what was started."""
        for port in self.ports:
            with socket.socket() as probe:
                in_use = probe.connect_ex(("127.0.0.1", port)) == 0
            # A server left there by an earlier run would answer in place of ours.
            assert not in_use, f"port {port} for the test Redis Cluster is in use already"
        try:
            for port in self.ports:
                self._start_server(port)
            for port in self.ports:
                self._wait(lambda port=port: self.client(port).ping(), f"node {port} answering")
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            created = subprocess.run(
                [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                 "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=START_SECONDS,
            )  # fmt: skip
            assert created.returncode == 0, f"redis-cli --cluster create failed: {created.stdout}"
            for port in self.ports:
                self._wait(
                    lambda port=port: (
                        b"cluster_state:ok" in self.client(port).execute_command("CLUSTER", "INFO")
                    ),
                    f"node {port} reporting cluster_state:ok",
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        arguments = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(folder),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(folder / "nodes.conf"),
            "--cluster-node-timeout", "2000",
            "--cluster-require-full-coverage", "no",
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        self.processes[port] = subprocess.Popen(
            arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait(self, condition, what: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, f"the Redis Cluster did not start: {what}"
            time.sleep(0.05)

    def node_id(self, port: int) -> str:
        return self.client(port).execute_command("CLUSTER", "MYID").decode()

    def port_of_slot(self, slot: int) -> int:
        """The port of the primary serving `slot`, as the first node sees it."""
        for first, last, primary, *_ in self.client(self.ports[0]).execute_command(
            "CLUSTER", "SLOTS"
        ):
            if first <= slot <= last:
                return int(primary[1])
        raise AssertionError(f"no node serves slot {slot}")

    def begin_migration(self, slot: int, source: int, target: int) -> None:
        """Mark `slot` as migrating from `source` to `target` (ports); keys move with
        `migrate_keys`, and `end_migration` gives the slot to the target."""
        self.client(target).execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source)
        )
        self.client(source).execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target)
        )

    def migrate_keys(self, source: int, target: int, keys: list[str | bytes]) -> None:
        if keys:
            self.client(source).execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )

    def end_migration(self, slot: int, source: int, target: int) -> None:
        """Move the slot's remaining keys and tell every node the target serves it."""
        remaining = self.client(source).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        self.migrate_keys(source, target, remaining)
        target_id = self.node_id(target)
        for port in [target, source] + [p for p in self.ports if p not in (source, target)]:
            if port in self.processes and self.processes[port].poll() is None:
                self.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def move_slot(self, slot: int, source: int, target: int) -> None:
        self.begin_migration(slot, source, target)
        self.end_migration(slot, source, target)

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        process = self.processes[port]
        process.kill()
        process.wait(10)

    def pause(self, port: int) -> None:
        """SIGSTOP one node: its connections stay open and nothing answers (a partition)."""
        os.kill(self.processes[port].pid, signal.SIGSTOP)

    def resume(self, port: int) -> None:
        os.kill(self.processes[port].pid, signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(10)
