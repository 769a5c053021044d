"""Usage records that could not reach Redis, kept on this host's disk until they can.

A request that was served must be billed. When the record script cannot run (Redis down, or
refusing writes), the record goes to a file of this process's own in RELAY_SPOOL_DIR, one JSON
line each, and a task of this process sends the spooled records through the same record script
(stream, running total, reservation) once Redis answers again, oldest first. A process that
dies with records in its spool leaves its file behind; the next relay process on the host to
record anything takes the file over (an atomic rename, so only one does) and sends them too.

A record whose script ran but whose reply was lost is spooled as well and so sent twice: its
usage row is written once (the database's uniqueness on the request), and its key's running
total counts it twice until the total is rebuilt, which errs towards refusing early.
"""

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from billing.windows import Targets
from core import keyspace

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0

# A spooled record: its JSON (billing.ledger.UsageRecord.to_json), its reservation's id, the
# totals and reservations recording it touches, and its 1-hour cache writes (sent beside the
# JSON; a line an earlier release spooled has none: 0).
Entry = tuple[str, str, Targets, int]


class Spool:
    def __init__(
        self, folder: Path, send: Callable[[str, str, Targets, int], Awaitable[None]]
    ) -> None:
        self.folder = folder
        self._send = send
        self._pending: list[Entry] = []
        self._draining: asyncio.Task | None = None
        self._adopted = False
        # The file is appended to by keep and rewritten by the drain: one at a time.
        self._file_lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self.folder / f"usage-{os.getpid()}.jsonl"

    @property
    def draining(self) -> bool:
        """Records are waiting, or the file is still being brought up to date."""
        return self._draining is not None

    async def keep(
        self, record_json: str, hold_id: str, targets: Targets, one_hour_writes: int = 0
    ) -> None:
        """Keep a record that could not be sent; it is sent again from a background task."""
        entry = (record_json, hold_id, targets, one_hour_writes)
        async with self._file_lock:
            if not self._adopted:
                self._adopted = True
                self._pending.extend(await asyncio.to_thread(self._adopt_orphans))
            self._pending.append(entry)
            await asyncio.to_thread(self._append, [entry])
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    def _append(self, entries: list[Entry]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as spool:
            for entry in entries:
                spool.write(_line(entry))

    def _adopt_orphans(self) -> list[Entry]:
        """Take over the spool files of relay processes of this host that are gone."""
        adopted: list[Entry] = []
        for path in sorted(self.folder.glob("usage-*.jsonl")):
            pid = path.stem.removeprefix("usage-").partition(".")[0]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            claimed = path.with_name(f"usage-{os.getpid()}.adopting-{path.name}")
            try:
                path.rename(claimed)  # Atomic: of two processes, one wins, one finds it gone.
            except FileNotFoundError:
                continue
            entries = _read(claimed)
            self._append(entries)  # In this process's own file before the other one goes.
            claimed.unlink()
            adopted.extend(entries)
        if adopted:
            logger.warning("Took over %d spooled usage record(s) of an ended process", len(adopted))
        return adopted

    async def _drain(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(RETRY_SECONDS)
                sent = 0
                for entry in self._pending:
                    try:
                        await self._send(*entry)
                    except Exception as error:
                        logger.warning(
                            "Spooled usage still cannot be recorded (%s); %d waiting",
                            error,
                            len(self._pending) - sent,
                        )
                        break
                    sent += 1
                if sent:
                    async with self._file_lock:
                        del self._pending[:sent]
                        await asyncio.to_thread(self._rewrite)
                    logger.info("Recorded %d spooled usage record(s)", sent)
        finally:
            self._draining = None

    def _rewrite(self) -> None:
        """The file holds what is still pending (written aside, then renamed over it)."""
        if not self._pending:
            self.path.unlink(missing_ok=True)
            return
        fresh = self.path.with_suffix(".tmp")
        with fresh.open("w", encoding="utf-8") as spool:
            for entry in self._pending:
                spool.write(_line(entry))
        fresh.replace(self.path)


def _line(entry: Entry) -> str:
    record_json, hold_id, targets, one_hour_writes = entry
    data = {"e": record_json, "hold": hold_id, "n": targets.counters, "h": targets.holds}
    if one_hour_writes:
        data["o"] = one_hour_writes
    return json.dumps(data) + "\n"


def _read(path: Path) -> list[Entry]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            if "n" in data:
                targets = Targets(tuple(data["n"]), tuple(data["h"]))
                if any(map(keyspace.untagged, (*targets.counters, *targets.holds))):
                    targets = _retagged(targets, json.loads(data["e"])["team_id"])
            else:  # Spooled by an earlier release: its key's total and reservations.
                record = json.loads(data["e"])
                targets = Targets.of_key(record["team_id"], record["key_id"])
            entries.append((data["e"], data["hold"], targets, int(data.get("o", 0))))
        except (ValueError, KeyError, TypeError):
            # Only a line cut short by a crash mid-write can be unreadable.
            logger.error("Spooled usage line could not be read, dropped: %r", line[:200])
    return entries


def _retagged(targets: Targets, team_id: int) -> Targets:
    """An earlier release's line names its totals and reservations without the team's hash
    tag (core.keyspace): recorded under this release's names, in the team's slot."""
    return Targets(
        tuple(keyspace.retagged(team_id, name) for name in targets.counters),
        tuple(keyspace.retagged(team_id, name) for name in targets.holds),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
