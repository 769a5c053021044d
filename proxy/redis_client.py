"""The relay's Redis client: one multiplexed connection per worker process.

Why not redis-py's asyncio client: measured in bench/, its per-command bookkeeping (checking a
connection out of a pool under a lock and an asyncio timeout, then back in) was a fifth of the
relay workers' CPU, and the relay sends two or three commands per request. Redis answers the
commands on one connection in the order it received them, so a single connection can carry
every in-flight request's commands at once: each command is written straight to the socket
and queues a future, and each reply completes the oldest future. hiredis (the parser redis-py
itself uses) decodes the replies. Redis runs commands one at a time anyway, so one connection
per process costs no parallelism. The commands queued in one turn of the event loop go out in
one socket write.

A connection that breaks fails the commands waiting on it and is replaced by the next command.
A reply that takes longer than `command_timeout` means the connection is stuck (Redis paused, a
network partition); it is dropped, which fails everything waiting on it rather than letting
requests hang, and the relay answers its retryable 503. Opening a connection is bounded the
same way, and the requests that arrive while one is being opened wait for that one attempt and
share its outcome, so a dead Redis costs each request one timeout at most, not one per request
queued ahead of it.

Through Sentinel (`sentinels` and `service`, from REDIS_SENTINELS): each connection is opened
to the address the sentinels give (asked in order, each bounded by the connect timeout; the one
that answered is asked first next time), and used only once the server says it is the primary
(ROLE). Every later command goes straight to it: no extra round trip per request. A connection
lost, stuck or answered READONLY (a primary demoted to a replica by a failover) is dropped, and
the next command's connection asks the sentinels again. While the failover runs (the old
primary gone, no new one promoted yet) connecting fails, and the relay answers its retryable
503, as it does whenever Redis is unreachable.

Usage recorded during a failover: a record the script could not write is spooled on disk and
sent again (proxy.spool). A record the old primary acknowledged but had not yet passed to its
replica before dying is lost with it (Redis replicates asynchronously). Following each record
with `WAIT 1 <ms>` would not be worth it here: WAIT blocks the connection that sends it until a
replica acknowledges, and this client has one connection per process, so every request's
commands would queue behind every record's replica round trip, and a replica that is down
would add the whole timeout to each of them. Nor would it close the window: Redis documents
that WAIT does not make a write strongly consistent (a failover may still promote a replica that
missed it). The window is the replication lag, sub-millisecond between healthy hosts; an
operator who would rather have writes refused while no replica keeps up sets
`min-replicas-to-write 1` on the primary, and the refused records are spooled like any other.

TLS (rediss://) is set up the way redis-py's SSLConnection sets it up from the URL's options
(ssl_cert_reqs, ssl_ca_certs, ssl_ca_path, ssl_certfile, ssl_keyfile, ssl_password,
ssl_check_hostname), so one REDIS_URL means the same to both clients.

A subscription (`subscribe`, Redis pub/sub) needs a connection of its own, since a subscribed
connection takes no other command; it is opened the same way (TLS, password, database) and
hands each message to a callback. Off the request path: proxy.store.channel_health uses it.
"""

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import hiredis
from redis.connection import SSLConnection, parse_url

from core.redis_config import CERT_REQS

# Far longer than any healthy reply (each command is a key lookup or a short script, answered
# in well under a millisecond), and short enough that a request whose state cannot be read is
# answered with a 503 the SDKs retry, not left waiting. A stuck connection is dropped after
# this, failing what waits on it.
COMMAND_TIMEOUT_SECONDS = 0.5
CONNECT_TIMEOUT_SECONDS = 0.5


READONLY = "Redis answered READONLY: it is a replica now (a failover)"


class RedisError(Exception):
    """Redis could not be used: no connection, a dropped one, or an error reply."""


class RedisConnectionError(RedisError):
    pass


class RedisReplyError(RedisError):
    """Redis answered the command with an error (the connection stays usable)."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """Arguments encoded once, as RESP bulk strings, and sent as they are: the part of a
    command that stays the same request after request (a key's names in a script call)."""

    count: int
    resp: bytes

    @classmethod
    def of(cls, args) -> "Encoded":
        return cls(len(args), b"".join(_bulk(arg) for arg in args))


def _bulk(arg: str | bytes | int) -> bytes:
    if isinstance(arg, str):
        arg = arg.encode()
    elif isinstance(arg, int):
        arg = b"%d" % arg
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def encode_command(args: tuple) -> bytes:
    """A command as a RESP array of bulk strings."""
    count = len(args)
    parts = [b""]
    for arg in args:
        if type(arg) is Encoded:
            count += arg.count - 1
            parts.append(arg.resp)
        else:
            parts.append(_bulk(arg))
    parts[0] = b"*%d\r\n" % count
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        # Futures of the commands written and not answered yet, oldest first, with the time
        # each was sent.
        self.waiting: deque[tuple[asyncio.Future, float]] = deque()
        # Commands queued in this turn of the event loop, written together at its end.
        self.unwritten: list[bytes] = []
        self.lost = False
        self.lost_reason = "the connection to Redis was lost"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def write(self, loop: asyncio.AbstractEventLoop, command: bytes) -> None:
        # One socket write per turn of the loop for all the commands queued in it: on loopback
        # each write also runs the kernel's delivery to Redis, and it was the relay's largest
        # single cost under load (measured in bench/).
        if not self.unwritten:
            loop.call_soon(self.flush)
        self.unwritten.append(command)

    def flush(self) -> None:
        data = b"".join(self.unwritten)
        self.unwritten.clear()
        # A lost or closing connection has failed (or is about to fail) what waits on it.
        if not self.lost and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:
                self.drop("Redis sent a reply that could not be parsed")
                return
            if reply is False:
                return
            if not self.waiting:
                self.drop("Redis sent a reply nobody asked for")
                return
            future, _ = self.waiting.popleft()
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("READONLY"):
                # A failover made this server a replica: nothing written here would count.
                if not future.done():
                    future.set_exception(RedisConnectionError(READONLY))
                self.drop(READONLY)
                return
            if future.done():  # Its caller was cancelled; the reply is still consumed in order.
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError(self.lost_reason))

    def drop(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost = True
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows and fails what is waiting


class _Subscription(_Connection):
    """A subscribed connection: the replies to its commands (AUTH, SELECT, SUBSCRIBE) complete
    their futures as on any connection; the messages published to it go to `on_message`."""

    def __init__(self, on_message: Callable[[bytes], None]) -> None:
        super().__init__()
        self.on_message = on_message

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:
                self.drop("Redis sent a reply that could not be parsed")
                return
            if reply is False:
                return
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self.on_message(reply[2])
                continue
            if not self.waiting:
                self.drop("Redis sent a reply nobody asked for")
                return
            future, _ = self.waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisReplyError(str(reply)))
            else:
                future.set_result(reply)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RedisClient:
    def __init__(
        self,
        url: str,
        *,
        command_timeout: float = COMMAND_TIMEOUT_SECONDS,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        sentinels: Sequence[tuple[str, int]] = (),
        service: str = "",
        sentinel_password: str = "",
    ) -> None:
        """`url`: the server's (redis-py's URL syntax). With `sentinels`, the URL gives only the
        scheme, credentials, database and TLS options; the primary of `service` is asked for
        on every connect."""
        self._options = parse_url(url)
        # Built once: a missing CA file fails here, at start, not on the first request.
        self._ssl = (
            _ssl_context(self._options)
            if self._options.get("connection_class") is SSLConnection
            else None
        )
        self._sentinels = list(sentinels)
        self._service = service
        self._sentinel_password = sentinel_password
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def execute(self, *args: str | bytes | int):
        """Send one command; return its reply (bytes, int, None or a list of them)."""
        connection = self._connection
        if connection is None or connection.lost:
            connection = await self._connect()
        return await self._send(connection, args)

    async def execute_together(self, *commands: tuple) -> list:
        """Send several commands in one write; return their replies in order. An error reply
        takes its command's place in the list (a RedisReplyError, not raised), so one
        command's error does not hide the others' replies; a lost connection raises."""
        connection = self._connection
        if connection is None or connection.lost:
            connection = await self._connect()
        futures = [self._send(connection, args) for args in commands]
        replies = []
        try:
            for future in futures:
                try:
                    replies.append(await future)
                except RedisReplyError as error:
                    replies.append(error)
        except BaseException:
            for future in futures:
                # Mark the other failures as seen, or asyncio logs them as never retrieved.
                if future.done() and not future.cancelled():
                    future.exception()
                else:
                    future.cancel()
            raise
        return replies

    async def subscribe(self, channel: str, on_message: Callable[[bytes], None]) -> "_Subscription":
        """Subscribe to a pub/sub channel on a connection of its own; `on_message` is called
        with each message, on the event loop. Returns once subscribed; the subscription's
        `lost` turns true when its connection breaks (the caller subscribes again)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        try:
            address = await self._address()
            async with asyncio.timeout(self._connect_timeout):
                connection = await self._open(address, lambda: _Subscription(on_message))
                try:
                    await self._send(connection, ("SUBSCRIBE", channel))
                except BaseException:
                    connection.close()
                    raise
        except (OSError, TimeoutError) as error:
            raise RedisConnectionError(f"could not subscribe in Redis ({_why(error)})") from None
        return connection

    def script(self, source: str) -> "Script":
        return Script(self, source)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        self._connection = None

    def _send(self, connection: _Connection, args: tuple) -> asyncio.Future:
        loop = self._loop
        future = loop.create_future()
        connection.waiting.append((future, loop.time()))
        connection.write(loop, encode_command(args))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._command_timeout, self._check_stuck)
        return future

    def _check_stuck(self) -> None:
        self._watchdog = None
        connection = self._connection
        if connection is None or connection.lost or not connection.waiting:
            return
        _, sent = connection.waiting[0]
        waited = self._loop.time() - sent
        if waited >= self._command_timeout:
            connection.drop(f"Redis did not answer within {self._command_timeout:g} s")
            return
        self._watchdog = self._loop.call_later(self._command_timeout - waited, self._check_stuck)

    async def _connect(self) -> _Connection:
        """A new connection, opened once for every request that needs it meanwhile."""
        if self._opening is None:
            self._loop = asyncio.get_running_loop()
            self._opening = self._loop.create_task(self._open_within_timeout())
            self._opening.add_done_callback(self._opened)
        # Shielded: one request giving up must not cancel the attempt the others wait for.
        return await asyncio.shield(self._opening)

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        # Runs before the waiters resume (the first callback added to the task).
        self._opening = None
        if not task.cancelled() and task.exception() is None:
            self._connection = task.result()

    async def _open_within_timeout(self) -> _Connection:
        try:
            address = await self._address()
            async with asyncio.timeout(self._connect_timeout):
                return await self._open(address)
        except (OSError, TimeoutError) as error:
            raise RedisConnectionError(f"could not connect to Redis ({_why(error)})") from None

    async def _address(self) -> tuple[str, int] | str:
        """Where to connect: the URL's host and port or socket path, or the primary the
        sentinels name."""
        if self._sentinels:
            return await self._primary_address()
        if "path" in self._options:
            return self._options["path"]
        return self._options.get("host", "localhost"), self._options.get("port", 6379)

    async def _primary_address(self) -> tuple[str, int]:
        """Ask the sentinels, in order, where the primary is; the first that knows is asked
        first next time."""
        failures = []
        for index, (host, port) in enumerate(self._sentinels):
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _, connection = await self._loop.create_connection(_Connection, host, port)
                    try:
                        if self._sentinel_password:
                            await self._send(connection, ("AUTH", self._sentinel_password))
                        reply = await self._send(
                            connection, ("SENTINEL", "get-master-addr-by-name", self._service)
                        )
                    finally:
                        connection.transport.close()
            except (OSError, TimeoutError, RedisError) as error:
                failures.append(f"{host}:{port}: {_why(error)}")
                continue
            if not reply:
                failures.append(f"{host}:{port}: does not know {self._service!r}")
                continue
            if index:
                self._sentinels.insert(0, self._sentinels.pop(index))
            return reply[0].decode(), int(reply[1])
        raise RedisConnectionError(
            f"could not connect to Redis: no sentinel named the primary of {self._service!r} "
            f"({'; '.join(failures)})"
        )

    async def _open(
        self, address: tuple[str, int] | str, factory: Callable[[], _Connection] = _Connection
    ):
        """Connect, then authenticate and select the database the URL names; through Sentinel,
        check that the server is the primary."""
        options = self._options
        if isinstance(address, str):
            _, connection = await self._loop.create_unix_connection(factory, address)
        else:
            host, port = address
            _, connection = await self._loop.create_connection(
                factory,
                host,
                port,
                ssl=self._ssl,
                server_hostname=host if self._ssl and self._ssl.check_hostname else None,
            )
        try:
            if options.get("password"):
                credentials = [options.get("username"), options["password"]]
                await self._send(connection, ("AUTH", *filter(None, credentials)))
            if options.get("db"):
                await self._send(connection, ("SELECT", options["db"]))
            if self._sentinels:
                role = (await self._send(connection, ("ROLE",)))[0]
                if role != b"master":
                    raise RedisConnectionError(
                        f"could not connect to Redis: {address[0]}:{address[1]}, named the "
                        f"primary of {self._service!r} by Sentinel, is a replica (a failover "
                        f"is under way)"
                    )
        except BaseException:
            connection.transport.close()
            raise
        return connection


def _ssl_context(options: dict) -> ssl.SSLContext:
    """The TLS context redis-py's SSLConnection makes from the same URL options."""
    cert_reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(cert_reqs, str):
        cert_reqs = CERT_REQS[cert_reqs]
    elif cert_reqs is None:
        cert_reqs = ssl.CERT_NONE
    check_hostname = options.get("ssl_check_hostname", True)
    if isinstance(check_hostname, str):
        check_hostname = check_hostname.lower() not in ("false", "0", "no", "off")
    context = ssl.create_default_context()
    context.check_hostname = bool(check_hostname) and cert_reqs != ssl.CERT_NONE
    context.verify_mode = cert_reqs
    if options.get("ssl_certfile") or options.get("ssl_keyfile"):
        context.load_cert_chain(
            certfile=options.get("ssl_certfile"),
            keyfile=options.get("ssl_keyfile"),
            password=options.get("ssl_password"),
        )
    if options.get("ssl_ca_certs") or options.get("ssl_ca_path"):
        context.load_verify_locations(
            cafile=options.get("ssl_ca_certs"), capath=options.get("ssl_ca_path")
        )
    return context


def _why(error: BaseException) -> str:
    """A failed connect, in a few words: the TLS verification's reason when it was refused."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate was refused: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, RedisError):
        return str(error)
    return type(error).__name__


class Script:
    """A Lua script run by its SHA-1 (EVALSHA), loaded with EVAL when Redis does not know it
    (first use, or after a restart or SCRIPT FLUSH)."""

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self._source = source
        # SHA-1 because it is the name Redis gives scripts, not for security.
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def command(self, *, keys: list[str] | Encoded, args: list) -> tuple:
        """The EVALSHA command, for RedisClient.execute_together; pass its reply to `result`.
        `keys` may come encoded already (Encoded), as may any of `args`."""
        return ("EVALSHA", self._sha, *_keys(keys), *args)

    async def result(self, reply, *, keys: list[str] | Encoded, args: list):
        """The script's result from the reply to `command()`: an error reply is raised, and
        when Redis did not know the script, it is run (and so loaded) with EVAL."""
        if not isinstance(reply, RedisReplyError):
            return reply
        if not str(reply).startswith("NOSCRIPT"):
            raise reply
        return await self._client.execute("EVAL", self._source, *_keys(keys), *args)

    async def __call__(self, *, keys: list[str] | Encoded, args: list):
        try:
            reply = await self._client.execute(*self.command(keys=keys, args=args))
        except RedisReplyError as error:
            reply = error
        return await self.result(reply, keys=keys, args=args)


def _keys(keys: list[str] | Encoded) -> tuple:
    """A script call's key count and keys."""
    if type(keys) is Encoded:
        return (keys.count, keys)
    return (len(keys), *keys)
