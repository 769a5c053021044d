"""A real Redis Cluster for the tests: three primaries on 127.0.0.1, each a redis-server in a
temporary folder, joined with `redis-cli --cluster create`; without replicas, or with one
replica each (six nodes) for the tests of a failover.

`cluster-require-full-coverage no`: a node that dies leaves its slots unserved, and the other
primaries go on serving theirs (with the default, every node refuses every command until the
lost slots are served again), which is what the relay's tests of a lost node expect.

With replicas, `node_timeout` is best short (1000 ms): a primary is declared failed after it,
and its replica promoted within a second or two more.
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
    def __init__(
        self, folder: Path, ports: list[int], *, replicas: int = 0, node_timeout_ms: int = 2000
    ) -> None:
        """`ports`: one per node; with `replicas` 1, the first half become the primaries (as
        redis-cli --cluster create picks them) and the second half their replicas."""
        self.folder = folder
        self.ports = list(ports)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
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
                [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas",
                 str(self.replicas), "--cluster-yes"],
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
            for port in self.replica_ports():
                self._wait(
                    lambda port=port: (
                        self.client(port).info("replication")["master_link_status"] == "up"
                    ),
                    f"replica {port} in sync with its primary",
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
            "--cluster-node-timeout", str(self.node_timeout_ms),
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

    def alive(self, port: int) -> bool:
        return port in self.processes and self.processes[port].poll() is None

    def roles(self) -> dict[int, str]:
        """Each live node's role as it says itself: "master" or "slave"."""
        return {
            port: self.client(port).execute_command("ROLE")[0].decode()
            for port in self.ports
            if self.alive(port)
        }

    def replica_ports(self) -> list[int]:
        return [port for port, role in self.roles().items() if role == "slave"]

    def replica_of(self, primary: int) -> int:
        """The port of the (live) replica of the primary on `primary`."""
        for port in self.replica_ports():
            # A replica's ROLE: "slave", its primary's host and port, its link's state, offset.
            if int(self.client(port).execute_command("ROLE")[2]) == primary:
                return port
        raise AssertionError(f"no replica of {primary}")

    def pause_writes(self, port: int, seconds: float) -> None:
        """Hold every write sent to the node for `seconds` (CLIENT PAUSE WRITE): its clients'
        writes wait, unanswered; reads go on."""
        self.client(port).execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE")

    def wait_for_replica(self, primary: int, timeout: float = 5) -> int:
        """Wait until the replica of `primary` has applied every write the primary took (its
        replication offset the primary's); return its port. A primary killed then loses
        nothing it acknowledged: replication is asynchronous, so a write acknowledged in the
        last moment before a crash can otherwise be missing on the promoted replica."""
        replica = self.replica_of(primary)
        target = self.client(primary).info("replication")["master_repl_offset"]
        deadline = time.monotonic() + timeout
        while self.client(replica).info("replication")["slave_repl_offset"] < target:
            assert time.monotonic() < deadline, f"replica {replica} did not catch up with {primary}"
            time.sleep(0.01)
        return replica

    def wait_for_failover(self, killed: int, replica: int, timeout: float = 15) -> None:
        """Wait until `replica` is a primary and every live node's slot map names it where it
        named `killed`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                promoted = self.client(replica).execute_command("ROLE")[0] == b"master"
                maps = [
                    self.client(port).execute_command("CLUSTER", "SLOTS")
                    for port in self.ports
                    if self.alive(port)
                ]
                served_by = {int(row[2][1]) for reply in maps for row in reply}
                if promoted and killed not in served_by and replica in served_by:
                    return
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, f"{replica} was not promoted in place of {killed}"
            time.sleep(0.05)

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
