"""Private redis-servers for the fault tests: started in a temporary folder, so a test can kill
one, pause it (SIGSTOP) or restart it without touching the shared one. A free port by
default, or a given one; optionally over TLS (TlsFiles), as a replica of another, or as a
sentinel (Sentinels)."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import hiredis

from . import certificates

REDIS_SERVER = shutil.which("redis-server")
START_SECONDS = 10


class RedisServer:
    def __init__(
        self,
        folder: Path,
        *,
        append_only: bool = False,
        port: int | None = None,
        tls: "TlsFiles | None" = None,
        replica_of: "RedisServer | None" = None,
    ) -> None:
        self.folder = folder
        self.append_only = append_only
        self.tls = tls
        self.replica_of = replica_of
        if port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    def arguments(self) -> list[str]:
        folder = self.folder / f"redis-{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        arguments = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "yes" if self.append_only else "no",
            "--appendfsync", "always",
            # A replica's first sync at once (Redis waits 5 s for more replicas by default).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.tls:
            arguments += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            arguments += ["--port", str(self.port)]
        if self.replica_of:
            arguments += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
            if self.tls:
                arguments += ["--tls-replication", "yes"]
        return arguments

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(self.arguments(), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            assert self.process.poll() is None, f"redis-server on port {self.port} exited"
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        return self.command("PING") == b"PONG"

    def command(self, *args: str):
        """One command's reply (None when the server does not answer)."""
        return _command(self.port, *args, tls=self.tls)

    def info(self, section: str) -> dict[str, str]:
        reply = self.command("INFO", section) or b""
        return dict(
            line.split(":", 1)
            for line in reply.decode().splitlines()
            if ":" in line and not line.startswith("#")
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would; what is on disk (append_only) survives a restart."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as in a network partition."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(10)


class Sentinels:
    """`redis-server --sentinel` processes watching `primary` as SERVICE, quick to act: the
    primary is taken for down after `down_after_ms` without an answer, and a failover that
    stalls is retried after `failover_timeout_ms`."""

    SERVICE = "hcai"

    def __init__(
        self,
        folder: Path,
        primary: RedisServer,
        ports: list[int],
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 2000,
        tls: "TlsFiles | None" = None,
    ) -> None:
        self.tls = tls
        self.folder = folder
        self.primary = primary
        self.ports = ports
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.processes: list[subprocess.Popen] = []

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> "Sentinels":
        # A majority of the sentinels must agree the primary is down.
        quorum = len(self.ports) // 2 + 1
        for port in self.ports:
            config = self.folder / f"sentinel-{port}.conf"
            # Sentinel rewrites its configuration file as it learns: one file each.
            config.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.folder}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            if self.tls:
                # TLS to the servers and to each other (on a port of their own, 20 above
                # the one their clients reach them on without TLS).
                with config.open("a") as lines:
                    lines.write(
                        f"tls-port {port + 20}\n"
                        "tls-replication yes\n"
                        f"tls-cert-file {self.tls.cert}\n"
                        f"tls-key-file {self.tls.key}\n"
                        f"tls-ca-cert-file {self.tls.ca}\n"
                    )
            self.processes.append(
                subprocess.Popen(
                    [REDIS_SERVER, str(config), "--sentinel"], stdout=subprocess.DEVNULL
                )
            )
        deadline = time.monotonic() + START_SECONDS
        for port in self.ports:
            while self.primary_port(port) != self.primary.port:
                assert time.monotonic() < deadline, f"sentinel on port {port} did not start"
                time.sleep(0.05)
        return self

    def primary_port(self, port: int) -> int | None:
        """The primary's port as the sentinel on `port` names it (None: it does not answer)."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                command = f"SENTINEL get-master-addr-by-name {self.SERVICE}\r\n"
                probe.sendall(command.encode())
                reply = probe.recv(256).split(b"\r\n")
                return int(reply[4]) if reply[0] == b"*2" else None
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate authority, a server certificate it signed for 127.0.0.1 and localhost,
    and the server's key; `other_ca`, an authority that signed nothing here."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path

    @classmethod
    def make(cls, folder: Path) -> "TlsFiles":
        folder.mkdir(parents=True, exist_ok=True)
        files = cls(
            folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other.pem"
        )
        ca = certificates.authority("HCAI test CA")
        ca.write(files.ca)
        certificates.authority("Somebody else's CA").write(files.other_ca)
        server = certificates.issue(ca, "127.0.0.1", dns=["localhost"], ips=["127.0.0.1"])
        server.write(files.cert, files.key)
        return files


# Ports of the Sentinel tests' servers (a private range: these tests start and kill them).
PRIMARY_PORT, REPLICA_PORT = 17101, 17102
SENTINEL_PORTS = [17111, 17112, 17113]
# Listed first in REDIS_SENTINELS and never started: clients must go on to the next sentinel.
ABSENT_SENTINEL_PORT = 17119


class SentinelSetup:
    """A primary, its replica and three sentinels (quorum two), each a process of the test."""

    def __init__(self, folder: Path, *, tls: "TlsFiles | None" = None) -> None:
        self.primary = RedisServer(folder, port=PRIMARY_PORT, append_only=True, tls=tls)
        self.replica = RedisServer(
            folder, port=REPLICA_PORT, append_only=True, replica_of=self.primary, tls=tls
        )
        self.sentinels = Sentinels(folder, self.primary, SENTINEL_PORTS, tls=tls)

    @property
    def sentinel_addresses(self) -> str:
        """REDIS_SENTINELS, an absent sentinel first."""
        return f"127.0.0.1:{ABSENT_SENTINEL_PORT},{self.sentinels.addresses}"

    def start(self) -> "SentinelSetup":
        self.primary.start()
        self.replica.start()
        deadline = time.monotonic() + START_SECONDS
        while self.replica.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        self.sentinels.start()
        # A failover needs the sentinels to know the replica and each other (they learn it
        # through the primary within a few seconds).
        for port in SENTINEL_PORTS:
            while True:
                state = _sentinel_master(port)
                if state.get("num-slaves") == "1" and state.get("num-other-sentinels") == "2":
                    break
                assert time.monotonic() < deadline + 10, f"sentinel {port} did not learn enough"
                time.sleep(0.05)
        return self

    def wait_for_failover(self, timeout: float = 20) -> RedisServer:
        """Wait until every sentinel names the replica as the primary; returns it."""
        deadline = time.monotonic() + timeout
        for port in SENTINEL_PORTS:
            while self.sentinels.primary_port(port) != self.replica.port:
                assert time.monotonic() < deadline, "the sentinels did not fail over"
                time.sleep(0.05)
        while self.replica.info("replication").get("role") != "master":
            assert time.monotonic() < deadline, "the replica was not promoted"
            time.sleep(0.05)
        return self.replica

    def stop(self) -> None:
        self.sentinels.stop()
        self.replica.stop()
        self.primary.stop()


def _sentinel_master(port: int) -> dict[str, str]:
    reply = _command(port, "SENTINEL", "master", Sentinels.SERVICE)
    if not isinstance(reply, list):
        return {}
    values = [value.decode() for value in reply]
    return dict(zip(values[::2], values[1::2], strict=True))


def _command(port: int, *args: str, tls: "TlsFiles | None" = None):
    """One command's reply (None when the server does not answer)."""
    reader = hiredis.Reader()
    command = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg), arg.encode()) for arg in args
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            if tls:
                context = ssl.create_default_context(cafile=str(tls.ca))
                probe = context.wrap_socket(probe, server_hostname="127.0.0.1")
            probe.sendall(command)
            while (reply := reader.gets()) is False:
                chunk = probe.recv(65536)
                if not chunk:
                    return None
                reader.feed(chunk)
            return None if isinstance(reply, hiredis.ReplyError) else reply
    except OSError:
        return None
