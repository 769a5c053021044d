"""The relay's Redis client for a Redis Cluster: RedisClient's interface over one RedisClient
per primary node.

Each node gets the relay's own client (proxy.redis_client), so every node's connection is the
same single multiplexed connection, with its watchdog for a stuck node and its errors; this
module only decides which node a command goes to. The slot map (which primary serves each of
the 16,384 hash slots) is read with CLUSTER SLOTS from any reachable node on first use and
read again after a node's connection failed or a MOVED reply said a slot has moved.

A command goes to the node serving the hash slot of its keys (the first key after numkeys for
EVAL and EVALSHA); a command without keys (PING, TIME, SCRIPT, PUBLISH ...) to any node. Redis
Cluster runs a command only when all its keys are in one slot, so a command naming keys in
several slots is refused here, before it is sent, with a message naming the keys and slots
(hash tags, `{t1}:a` and `{t1}:b`, put keys in one slot: core.keyspace).

Redirections, as the cluster specification asks of a client: MOVED (the slot has a new owner)
updates that slot in the map and retries the command once at the named node, and the whole map
is read again before a later command (at most once a second); ASK (the slot is being migrated
and this key is already on the target) sends ASKING and the command to the named node in one
write, without changing the map. A node whose connection fails (or that does not answer within
command_timeout) fails only the commands to its slots, with the relay's RedisConnectionError
(the retryable 503) naming the node; the other nodes' commands go on. (Redis itself refuses
every command on every node, CLUSTERDOWN, once it declares a primary without replica failed,
unless the nodes run with `cluster-require-full-coverage no`.)

Pub/sub: a classic PUBLISH reaches the subscribers on every node, so `subscribe` uses any one
node, and the next subscription after a lost one tries the other nodes first.
"""

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import NoReturn
from urllib.parse import quote, urlencode

from redis.connection import SSLConnection
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .redis_client import (
    COMMAND_TIMEOUT_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    Encoded,
    RedisClient,
    RedisConnectionError,
    RedisReplyError,
    Script,
    _Subscription,
)

Address = tuple[str, int]

# Commands that name no key: sent to any node. PUBLISH names a channel, not a key, and Redis 7
# delivers a classic PUBLISH to the subscribers of every node.
_KEYLESS = frozenset(
    {
        "ASKING", "AUTH", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DBSIZE", "ECHO", "HELLO",
        "INFO", "LASTSAVE", "MEMORY", "PING", "PUBLISH", "READONLY", "READWRITE", "ROLE",
        "SCRIPT", "SELECT", "TIME",
    }
)  # fmt: skip
# Commands whose every argument is a key.
_ALL_KEYS = frozenset({"DEL", "EXISTS", "MGET", "TOUCH", "UNLINK", "WATCH"})
# Commands taking keys and values in turn.
_KEY_VALUE_PAIRS = frozenset({"MSET", "MSETNX"})
# Scripts and functions: numkeys, then the keys.
_NUMKEYS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})

# After a node's connection failed, the map is read again at most this often: a dead node's
# slots fail each command sent to them, and each must not cost every other command a CLUSTER
# SLOTS round trip.
MAP_REFRESH_INTERVAL_SECONDS = 1.0

# How many nodes are asked for the slot map at once.
_MAP_READERS = 3

# The slots of the encoded key lists the relay reuses request after request (Encoded is
# hashable and its bytes keep their hash), so they are parsed once, not per command.
_ENCODED_SLOTS_LIMIT = 10_000


class CrossSlotError(RedisReplyError):
    """A command naming keys in different hash slots, refused before it was sent."""


class ClusterClient:
    """RedisClient's interface (execute, execute_together, subscribe, script, close) over a
    Redis Cluster's primaries. `startup_nodes` are (host, port) pairs to learn the cluster
    from (any one reachable is enough); `url_options` the credentials and TLS every node is
    reached with, as redis.connection.parse_url returns them for the configured URL."""

    def __init__(
        self,
        startup_nodes: Iterable[Address],
        *,
        url_options: dict | None = None,
        command_timeout: float = COMMAND_TIMEOUT_SECONDS,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self._startup_nodes = [(str(host), int(port)) for host, port in startup_nodes]
        if not self._startup_nodes:
            raise ValueError("A Redis Cluster client needs at least one node to start from")
        options = dict(url_options or {})
        if int(options.get("db") or 0) != 0:
            raise ValueError(
                f"A Redis Cluster has only database 0; the URL names database {options['db']}"
            )
        if "path" in options:
            raise ValueError("A Redis Cluster is reached over TCP, not a Unix socket")
        self._url_options = options
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._nodes: dict[Address, RedisClient] = {}
        # The primary serving each slot; None until the map is read.
        self._slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._map_stale = True
        self._map_read_at: float | None = None
        self._refreshing: asyncio.Task | None = None
        # Nodes whose connection failed last time: asked last for the map, never for keyless
        # commands while another node is known.
        self._failed: set[Address] = set()
        self._encoded_slots: dict[Encoded, int | None] = {}
        # The node the last subscription was made on: when it is lost, the next subscription
        # tries that node last.
        self._subscribed_on: Address | None = None

    # --- the interface RedisClient has -----------------------------------------------------

    async def execute(self, *args: str | bytes | int):
        """Send one command to the node serving its keys; return its reply."""
        slot = self.slot_of(args)
        if self._map_stale and self._refresh_due():
            await self._refresh_map()
        address = self._address(slot)
        try:
            reply = await self._node(address).execute(*args)
        except RedisReplyError as error:
            return await self._redirected(error, args)
        except RedisConnectionError as error:
            raise self._lost(address, error) from None
        return reply

    async def execute_together(self, *commands: tuple) -> list:
        """Send several commands, each node's share in one write (the nodes concurrently);
        return their replies in order. As RedisClient's: an error reply (a cross-slot command
        too) takes its command's place in the list, and a lost connection raises."""
        if self._map_stale and self._refresh_due():
            await self._refresh_map()
        replies: list = [None] * len(commands)
        shares: dict[Address, list[int]] = {}
        for index, command in enumerate(commands):
            try:
                slot = self.slot_of(command)
            except CrossSlotError as error:
                replies[index] = error
                continue
            shares.setdefault(self._address(slot), []).append(index)
        if len(shares) == 1:
            ((address, indexes),) = shares.items()
            try:
                share_replies = await self._node(address).execute_together(
                    *(commands[index] for index in indexes)
                )
            except RedisConnectionError as error:
                raise self._lost(address, error) from None
            outcomes = [share_replies]
        else:
            outcomes = await asyncio.gather(
                *(
                    self._node(address).execute_together(*(commands[i] for i in indexes))
                    for address, indexes in shares.items()
                ),
                return_exceptions=True,
            )
            failure = None
            for address, outcome in zip(shares, outcomes, strict=True):
                if isinstance(outcome, RedisConnectionError):
                    failure = failure or self._lost(address, outcome)
                elif isinstance(outcome, BaseException):
                    failure = failure or outcome
            if failure is not None:
                raise failure
        redirected = []
        for indexes, share_replies in zip(shares.values(), outcomes, strict=True):
            for index, reply in zip(indexes, share_replies, strict=True):
                replies[index] = reply
                if isinstance(reply, RedisReplyError) and _redirection(reply) is not None:
                    redirected.append(index)
        if redirected:
            followed = await asyncio.gather(
                *(self._redirected(replies[i], commands[i]) for i in redirected),
                return_exceptions=True,
            )
            for index, outcome in zip(redirected, followed, strict=True):
                if isinstance(outcome, RedisReplyError):
                    replies[index] = outcome
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    replies[index] = outcome
        return replies

    async def subscribe(self, channel: str, on_message: Callable[[bytes], None]) -> _Subscription:
        """Subscribe on one node: a classic PUBLISH reaches the subscribers of every node of
        the cluster. As with RedisClient, the subscription's `lost` turns true when its node's
        connection breaks; subscribing again then tries the other nodes first."""
        candidates = self._known_addresses()
        if self._subscribed_on in candidates:
            candidates.remove(self._subscribed_on)
            candidates.append(self._subscribed_on)
        failure: RedisConnectionError | None = None
        for address in candidates:
            try:
                subscription = await self._node(address).subscribe(channel, on_message)
            except RedisConnectionError as error:
                failure = self._lost(address, error)
                continue
            self._failed.discard(address)
            self._subscribed_on = address
            return subscription
        raise RedisConnectionError(f"could not subscribe on any Redis Cluster node ({failure})")

    def script(self, source: str) -> Script:
        # Script needs only `execute`: EVALSHA is routed by its keys, and a NOSCRIPT reply's
        # EVAL goes to the same slot, so to the node that did not know the script.
        return Script(self, source)  # type: ignore[arg-type]

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None
        for node in self._nodes.values():
            await node.close()
        self._nodes.clear()

    # --- routing ---------------------------------------------------------------------------

    def slot_of(self, args: tuple) -> int | None:
        """The hash slot of the command's keys, None for a command without keys. A command
        whose keys are in different slots raises CrossSlotError."""
        name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
        if name in _KEYLESS or len(args) < 2:
            return None
        if name in _NUMKEYS:
            keys = _script_keys(args)
            if type(keys) is Encoded:
                return self._encoded_slot(name, keys)
        elif name in _ALL_KEYS:
            keys = args[1:]
        elif name in _KEY_VALUE_PAIRS:
            keys = args[1::2]
        else:
            return _key_slot(args[1])
        return _one_slot(name, keys)

    def node_of(self, key: str | bytes) -> Address | None:
        """The node this client sends `key`'s commands to (None before the map is read)."""
        return self._slots[key_slot(_as_bytes(key))]

    def _encoded_slot(self, name: str, keys: Encoded) -> int | None:
        try:
            return self._encoded_slots[keys]
        except KeyError:
            pass
        slot = _one_slot(name, _decode_bulk_strings(keys.resp))
        if len(self._encoded_slots) >= _ENCODED_SLOTS_LIMIT:
            self._encoded_slots.clear()
        self._encoded_slots[keys] = slot
        return slot

    def _address(self, slot: int | None) -> Address:
        if slot is None:
            return self._any_address()
        address = self._slots[slot]
        if address is None:
            # Not served by any primary the map knows: the cluster is down for this slot, until
            # a node takes it (which the next read of the map learns).
            self._map_stale = True
            raise RedisConnectionError(f"no Redis Cluster node serves hash slot {slot}")
        return address

    def _any_address(self) -> Address:
        for address in self._nodes:
            if address not in self._failed:
                return address
        return self._known_addresses()[0]

    def _lost(self, address: Address, error: RedisConnectionError) -> RedisConnectionError:
        """A node's connection failed: read the map again (its slots may have a new primary).
        Returns the error to raise, naming the node."""
        self._failed.add(address)
        self._map_stale = True
        return RedisConnectionError(f"{error} (Redis Cluster node {address[0]}:{address[1]})")

    def _node(self, address: Address) -> RedisClient:
        node = self._nodes.get(address)
        if node is None:
            node = RedisClient(
                _node_url(address, self._url_options),
                command_timeout=self._command_timeout,
                connect_timeout=self._connect_timeout,
            )
            self._nodes[address] = node
        return node

    def _known_addresses(self) -> list[Address]:
        """The nodes of the last map, then the startup nodes not among them."""
        known = list(dict.fromkeys(address for address in self._slots if address is not None))
        known += [address for address in self._startup_nodes if address not in known]
        return sorted(known, key=lambda address: address in self._failed)

    # --- the slot map ----------------------------------------------------------------------

    async def _refresh_map(self) -> None:
        """Read the slot map, once for every command that needs it meanwhile."""
        if self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._read_map())
            self._refreshing.add_done_callback(self._map_read)
        await asyncio.shield(self._refreshing)

    def _refresh_due(self) -> bool:
        if self._map_read_at is None:
            return True
        return asyncio.get_running_loop().time() - self._map_read_at >= MAP_REFRESH_INTERVAL_SECONDS

    def _map_read(self, task: asyncio.Task) -> None:
        self._refreshing = None
        if not task.cancelled() and task.exception() is None:
            self._slots = task.result()
            self._map_stale = False
            self._map_read_at = asyncio.get_running_loop().time()

    async def _read_map(self) -> list[Address | None]:
        """CLUSTER SLOTS from the first node that answers. A few nodes are asked at once, those
        that did not fail last first: a node that is down costs one connect timeout, not one
        per node tried."""
        addresses = self._known_addresses()
        failures: list[str] = []
        for start in range(0, len(addresses), _MAP_READERS):
            asking = [
                asyncio.ensure_future(self._ask_for_map(address))
                for address in addresses[start : start + _MAP_READERS]
            ]
            try:
                for answer in asyncio.as_completed(asking):
                    address, reply = await answer
                    if isinstance(reply, RedisConnectionError):
                        self._failed.add(address)
                    if isinstance(reply, RedisConnectionError | RedisReplyError):
                        failures.append(f"{address[0]}:{address[1]}: {reply}")
                        continue
                    self._failed.discard(address)
                    return _slot_map(reply, address)
            finally:
                for task in asking:
                    task.cancel()
        tried = "; ".join(failures)
        raise RedisConnectionError(
            f"could not read the Redis Cluster's slot map from any node ({tried})"
        )

    async def _ask_for_map(self, address: Address) -> tuple[Address, object]:
        try:
            return address, await self._node(address).execute("CLUSTER", "SLOTS")
        except (RedisConnectionError, RedisReplyError) as error:
            return address, error

    async def _redirected(self, error: RedisReplyError, args: tuple):
        """Follow a MOVED or ASK reply once; any other error reply is raised."""
        redirection = _redirection(error)
        if redirection is None:
            raise error
        kind, slot, address = redirection
        node = self._node(address)
        try:
            if kind == "MOVED":
                self._slots[slot] = address
                self._map_stale = True
                return await node.execute(*args)
            _, reply = await node.execute_together(("ASKING",), args)
        except RedisConnectionError as error:
            raise self._lost(address, error) from None
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply


def _slot_map(reply: list, address: Address) -> list[Address | None]:
    """The primary serving each slot, from CLUSTER SLOTS as `address` answered it."""
    slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    for first, last, primary, *_replicas in reply:
        # An empty host means "the node you asked" (an unknown cluster-preferred-endpoint-type).
        host = primary[0].decode() if primary[0] else address[0]
        slots[first : last + 1] = [(host, int(primary[1]))] * (last - first + 1)
    return slots


def _node_url(address: Address, options: dict) -> str:
    """The URL of one node, with the credentials and TLS options of the configured URL."""
    host, port = address
    scheme = "rediss" if options.get("connection_class") is SSLConnection else "redis"
    credentials = ""
    if options.get("password"):
        credentials = quote(options.get("username") or "", safe="")
        credentials += ":" + quote(options["password"], safe="") + "@"
    elif options.get("username"):
        credentials = quote(options["username"], safe="") + "@"
    if ":" in host:
        host = f"[{host}]"
    taken = {"username", "password", "host", "port", "db", "connection_class", "path"}
    query = urlencode({name: value for name, value in options.items() if name not in taken})
    return f"{scheme}://{credentials}{host}:{port}/0" + (f"?{query}" if query else "")


def _redirection(error: RedisReplyError) -> tuple[str, int, Address] | None:
    """("MOVED" or "ASK", slot, node) from a redirection reply, else None."""
    message = str(error)
    if not message.startswith(("MOVED ", "ASK ")):
        return None
    kind, slot, endpoint = message.split(" ", 2)
    host, _, port = endpoint.rpartition(":")
    return kind, int(slot), (host.strip("[]"), int(port))


def _script_keys(args: tuple) -> tuple | Encoded:
    """The keys of EVAL/EVALSHA/FCALL: `count` arguments after numkeys (one Encoded argument
    may hold them all, as Script.command sends them)."""
    count = int(args[2])
    rest = args[3:]
    if count and rest and type(rest[0]) is Encoded and rest[0].count == count:
        return rest[0]
    keys: list = []
    for arg in rest:
        if len(keys) >= count:
            break
        if type(arg) is Encoded:
            keys.extend(_decode_bulk_strings(arg.resp))
        else:
            keys.append(arg)
    return tuple(keys[:count])


def _one_slot(name: str, keys: Iterable) -> int | None:
    slot = None
    for key in keys:
        this = _key_slot(key)
        if slot is None:
            slot = this
        elif this != slot:
            _refuse_cross_slot(name, keys)
    return slot


@functools.lru_cache(maxsize=65_536)
def _key_slot(key: str | bytes | int) -> int:
    """A key's hash slot. Cached: the relay names the same keys request after request (a
    key's snapshot, its holds), and CRC16 in Python cost more than the rest of the routing."""
    return key_slot(_as_bytes(key))


def _refuse_cross_slot(name: str, keys: Iterable) -> NoReturn:
    slots: dict[int, bytes] = {}
    for key in keys:
        slots.setdefault(_key_slot(key), _as_bytes(key))
    named = ", ".join(
        f"{key.decode(errors='replace')!r} (slot {slot})" for slot, key in slots.items()
    )
    raise CrossSlotError(
        f"CROSSSLOT {name} names keys in different hash slots, which a Redis Cluster "
        f"cannot run together: {named}; give them one hash tag, as in '{{t1}}:a' and '{{t1}}:b'"
    )


def _as_bytes(value: str | bytes | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b"%d" % value


def _decode_bulk_strings(resp: bytes) -> list[bytes]:
    """The strings of RESP bulk strings laid end to end (Encoded.resp)."""
    values = []
    position = 0
    while position < len(resp):
        end = resp.index(b"\r\n", position)
        length = int(resp[position + 1 : end])
        start = end + 2
        values.append(resp[start : start + length])
        position = start + length + 2
    return values
