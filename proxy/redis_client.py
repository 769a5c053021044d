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

A subscription (`subscribe`, Redis pub/sub) needs a connection of its own, since a subscribed
connection takes no other command; it is opened the same way (TLS, password, database) and
hands each message to a callback. Off the request path: proxy.store.channel_health uses it.
"""

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import hiredis
from redis.connection import SSLConnection, parse_url

# Far longer than any healthy reply (each command is a key lookup or a short script, answered
# in well under a millisecond), and short enough that a request whose state cannot be read is
# answered with a 503 the SDKs retry, not left waiting. A stuck connection is dropped after
# this, failing what waits on it.
COMMAND_TIMEOUT_SECONDS = 0.5
CONNECT_TIMEOUT_SECONDS = 0.5


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
    ) -> None:
        self._options = parse_url(url)
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
            async with asyncio.timeout(self._connect_timeout):
                connection = await self._open(self._options, lambda: _Subscription(on_message))
                try:
                    await self._send(connection, ("SUBSCRIBE", channel))
                except BaseException:
                    connection.close()
                    raise
        except (OSError, TimeoutError) as error:
            raise RedisConnectionError(
                f"could not subscribe in Redis ({type(error).__name__})"
            ) from None
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
            async with asyncio.timeout(self._connect_timeout):
                return await self._open(self._options)
        except (OSError, TimeoutError) as error:
            raise RedisConnectionError(
                f"could not connect to Redis ({type(error).__name__})"
            ) from None

    async def _open(self, options: dict, factory: Callable[[], _Connection] = _Connection):
        """Connect, then authenticate and select the database the URL names."""
        if "path" in options:
            _, connection = await self._loop.create_unix_connection(factory, options["path"])
        else:
            secure = options.get("connection_class") is SSLConnection
            _, connection = await self._loop.create_connection(
                factory,
                options.get("host", "localhost"),
                options.get("port", 6379),
                ssl=ssl.create_default_context() if secure else None,
            )
        try:
            if options.get("password"):
                credentials = [options.get("username"), options["password"]]
                await self._send(connection, ("AUTH", *filter(None, credentials)))
            if options.get("db"):
                await self._send(connection, ("SELECT", options["db"]))
        except BaseException:
            connection.transport.close()
            raise
        return connection


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
