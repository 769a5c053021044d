"""Proof without a Redis Cluster that the relay's scripts and multi-key commands touch one hash
slot each (core.keyspace): every command the relay's client (proxy.redis_client) and the
synchronous redis-py clients (the ledger, ingestion, the services, Django's cache) send is
checked as it is sent, the slots of its keys computed as a Cluster computes them
(redis.crc.key_slot). A command whose keys span slots, or a MULTI/EXEC transaction whose
commands do, is a failure of the test that sent it, even if the code that sent it swallowed
the error.

The keys of a command are found the way a Cluster client finds them: a script's KEYS (EVAL,
EVALSHA, FCALL: after the key count), the streams of XREAD/XREADGROUP (after STREAMS), every
argument of the multi-key commands below, the first argument of any other command (used only
for transactions, where every command must be in the transaction's slot). Only commands that
name one of the project's names (PREFIX) are checked: Celery's broker queues are kombu's.
"""

import threading
from collections.abc import Iterable

import redis
import redis.client
from redis.crc import key_slot

from core import keyspace
from proxy import redis_client

_OURS = keyspace.PREFIX.split(":")[0] + ":"

# Commands whose every argument is a key.
_ALL_KEYS = {
    "DEL", "UNLINK", "EXISTS", "TOUCH", "MGET", "WATCH", "SINTER", "SUNION", "SDIFF",
    "SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE", "PFCOUNT", "PFMERGE", "RENAME", "RENAMENX",
}  # fmt: skip
# Commands whose keys are every other argument (key, value, key, value...).
_PAIRS = {"MSET", "MSETNX"}
# Commands whose first two arguments are keys.
_TWO_KEYS = {"SMOVE", "LMOVE", "BLMOVE", "RPOPLPUSH", "BRPOPLPUSH", "COPY", "LCS"}
_SCRIPTS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"}
_STREAM_READS = {"XREAD", "XREADGROUP"}
# Commands with no key at all (in a transaction: they take no part in its slot).
_NO_KEY = {"MULTI", "EXEC", "DISCARD", "PING", "TIME", "SELECT", "AUTH", "INFO", "FLUSHDB"}


def _text(arg) -> str:
    if isinstance(arg, bytes):
        return arg.decode()
    return str(arg)


def _flatten(args: Iterable) -> list:
    """The arguments as sent, an Encoded run (proxy.redis_client) read back into its parts."""
    flat = []
    for arg in args:
        if type(arg) is redis_client.Encoded:
            flat += _bulk_strings(arg.resp)
        else:
            flat.append(arg)
    return flat


def _bulk_strings(resp: bytes) -> list[bytes]:
    parts = []
    at = 0
    while at < len(resp):
        assert resp[at : at + 1] == b"$", resp
        end = resp.index(b"\r\n", at)
        length = int(resp[at + 1 : end])
        parts.append(resp[end + 2 : end + 2 + length])
        at = end + 2 + length + 2
    return parts


def command_keys(args: Iterable, *, first_if_unknown: bool = False) -> list:
    """The keys a command names (see the module's docstring)."""
    args = _flatten(args)
    if not args:
        return []
    name = _text(args[0]).upper()
    rest = args[1:]
    if name in _SCRIPTS:
        return rest[2 : 2 + int(rest[1])]
    if name in _STREAM_READS:
        upper = [_text(arg).upper() for arg in rest]
        streams = rest[upper.index("STREAMS") + 1 :]
        return streams[: len(streams) // 2]
    if name in _ALL_KEYS:
        return rest
    if name in _PAIRS:
        return rest[::2]
    if name in _TWO_KEYS:
        return rest[:2]
    if first_if_unknown and name not in _NO_KEY and rest:
        return rest[:1]
    return []


def slots(keys: Iterable) -> set[int]:
    return {key_slot(arg if isinstance(arg, bytes) else _text(arg).encode()) for arg in keys}


class SlotChecker:
    """Collects the commands sent while it is installed whose keys span hash slots."""

    def __init__(self) -> None:
        self.cross_slot: list[str] = []
        self._lock = threading.Lock()

    def check(self, keys: list, what) -> None:
        # Only the project's names (core.keyspace's, and Django's cache's under the same
        # prefix); Celery's broker queues are kombu's, not part of this layout.
        if not any(_text(key).startswith(_OURS) for key in keys):
            return
        if len(slots(keys)) > 1:
            described = f"{_describe(what)}: keys {[_text(key) for key in keys]} span slots"
            with self._lock:
                self.cross_slot.append(described)
            raise AssertionError(f"cross-slot Redis command {described}")

    def check_command(self, args) -> None:
        self.check(command_keys(args), args)

    def check_transaction(self, commands: list) -> None:
        keys = []
        for args in commands:
            keys += command_keys(args, first_if_unknown=True)
        self.check(keys, [args[0] for args in commands])

    def install(self, monkeypatch) -> None:
        checker = self
        send = redis_client.RedisClient._send

        def checked_send(client, connection, args):
            checker.check_command(args)
            return send(client, connection, args)

        monkeypatch.setattr(redis_client.RedisClient, "_send", checked_send)

        execute = redis.Redis.execute_command

        def checked_execute(client, *args, **options):
            checker.check_command(args)
            return execute(client, *args, **options)

        monkeypatch.setattr(redis.Redis, "execute_command", checked_execute)

        pipeline_execute = redis.client.Pipeline.execute_command

        def checked_pipeline_execute(pipeline, *args, **options):
            checker.check_command(args)
            return pipeline_execute(pipeline, *args, **options)

        monkeypatch.setattr(redis.client.Pipeline, "execute_command", checked_pipeline_execute)

        transaction = redis.client.Pipeline._execute_transaction

        def checked_transaction(pipeline, connection, commands, raise_on_error):
            checker.check_transaction([args for args, _ in commands])
            return transaction(pipeline, connection, commands, raise_on_error)

        monkeypatch.setattr(redis.client.Pipeline, "_execute_transaction", checked_transaction)


def _describe(what) -> str:
    shown = [_text(part) for part in _flatten(what)]
    if shown and shown[0].upper() in _SCRIPTS:
        shown[1] = shown[1][:12]  # a script's SHA-1 or source, cut short
    text = " ".join(shown)
    return text if len(text) < 300 else text[:300] + "..."
