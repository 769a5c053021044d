"""proxy.redis_client: the relay's multiplexed Redis connection.

Against a real Redis where one is configured (REDIS_URL), and against small fake servers on
127.0.0.1 for what a real one will not do on demand: hang, hang up, or demand a password.
"""

import asyncio
import gc
import socket
from urllib.parse import urlsplit

import hiredis
import pytest
import redis
from django.conf import settings

from proxy.redis_client import (
    RedisClient,
    RedisConnectionError,
    RedisReplyError,
    encode_command,
)

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


def run(coroutine):
    async def bounded():
        # A hang is a failure, not a stuck test run.
        async with asyncio.timeout(20):
            return await coroutine

    return asyncio.run(bounded())


class FakeRedis:
    """A RESP server that records each command and answers it with `reply(command)`: bytes to
    send, or None to stay silent; `hang_up=True` closes the connection on the first command."""

    def __init__(self, reply=lambda command: b"+OK\r\n", *, hang_up: bool = False) -> None:
        self.reply = reply
        self.hang_up = hang_up
        self.commands: list[list[bytes]] = []
        # The commands of each read from the socket, in order.
        self.reads: list[list[list[bytes]]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            self.reads.append([])
            while (command := parser.gets()) is not False:
                self.commands.append(command)
                self.reads[-1].append(command)
                if self.hang_up:
                    writer.close()
                    return
                answer = self.reply(command)
                if answer is not None:
                    writer.write(answer)
        writer.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings():
    assert encode_command(("SET", b"k\r\n", 42)) == (
        b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n42\r\n"
    )
    assert (
        encode_command(("GET", "ключ"))
        == b"*2\r\n$3\r\nGET\r\n$8\r\n\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\r\n"
    )


@needs_redis
def test_many_commands_in_flight_each_get_their_own_reply():
    """Every in-flight request shares the one connection; replies must not cross."""
    count = 1000

    async def scenario():
        client = RedisClient(settings.REDIS_URL)
        names = [f"redis-client-test:{n}" for n in range(count)]
        try:
            await asyncio.gather(
                *(
                    client.execute("SET", name, f"value-{n}", "EX", 60)
                    for n, name in enumerate(names)
                )
            )
            return await asyncio.gather(*(client.execute("GET", name) for name in names))
        finally:
            await client.execute("DEL", *names)
            await client.close()

    assert run(scenario()) == [f"value-{n}".encode() for n in range(count)]


@needs_redis
def test_reply_types_and_an_error_reply_that_leaves_the_connection_usable():
    async def scenario():
        client = RedisClient(settings.REDIS_URL)
        try:
            await client.execute("SET", "redis-client-test:text", "abc", "EX", 60)
            with pytest.raises(RedisReplyError) as error:
                await client.execute("INCR", "redis-client-test:text")
            return (
                str(error.value),
                await client.execute("GET", "redis-client-test:missing"),
                await client.execute("INCRBY", "redis-client-test:counter", 5),
                await client.execute("EVAL", "return {1, 'two', {3}}", 0),
                await client.execute("GET", "redis-client-test:text"),
            )
        finally:
            await client.execute("DEL", "redis-client-test:text", "redis-client-test:counter")
            await client.close()

    message, missing, counter, nested, text = run(scenario())
    assert message == "ERR value is not an integer or out of range"
    assert missing is None
    assert counter == 5
    assert nested == [1, b"two", [3]]
    assert text == b"abc"


@needs_redis
def test_a_script_loads_itself_again_after_redis_forgets_it():
    async def scenario():
        client = RedisClient(settings.REDIS_URL)
        script = client.script("return {KEYS[1], ARGV[1], ARGV[2]}")
        try:
            first = await script(keys=["a-key"], args=["text", 7])
            await client.execute("SCRIPT", "FLUSH")
            again = await script(keys=["b-key"], args=["more", 8])
            return first, again
        finally:
            await client.close()

    assert run(scenario()) == ([b"a-key", b"text", b"7"], [b"b-key", b"more", b"8"])


@needs_redis
def test_commands_sent_together_get_their_replies_in_order_with_errors_in_place():
    async def scenario():
        client = RedisClient(settings.REDIS_URL)
        script = client.script("return {KEYS[1], ARGV[1]}")
        try:
            await client.execute("SET", "redis-client-test:text", "abc", "EX", 60)
            await client.execute("SCRIPT", "FLUSH")
            replies = await client.execute_together(
                ("GET", "redis-client-test:text"),
                ("INCR", "redis-client-test:text"),
                script.command(keys=["k"], args=["v"]),
                ("GET", "redis-client-test:missing"),
            )
            # The script's reply said NOSCRIPT: result() runs it with EVAL; other error
            # replies are raised.
            loaded = await script.result(replies[2], keys=["k"], args=["v"])
            with pytest.raises(RedisReplyError) as raised:
                await script.result(replies[1], keys=["k"], args=["v"])
            return (
                replies,
                loaded,
                raised.value,
                await client.execute("GET", "redis-client-test:text"),
            )
        finally:
            await client.execute("DEL", "redis-client-test:text")
            await client.close()

    replies, loaded, raised, after = run(scenario())
    text, not_a_number, unknown_script, missing = replies
    assert text == b"abc"
    assert isinstance(not_a_number, RedisReplyError)
    assert str(not_a_number) == "ERR value is not an integer or out of range"
    assert isinstance(unknown_script, RedisReplyError)
    assert str(unknown_script).startswith("NOSCRIPT")
    assert loaded == [b"k", b"v"]
    assert raised is not_a_number
    assert missing is None
    assert after == b"abc"  # the connection is still usable


def test_commands_sent_together_go_out_in_one_write():
    """One round trip: both commands reach the server in its first read, so the second was
    not waiting for the first one's reply."""
    fake = FakeRedis(lambda command: b"$1\r\n" + command[1][-1:] + b"\r\n")

    async def scenario():
        address = await fake.__aenter__()
        client = RedisClient(f"redis://{address}/0")
        try:
            return await client.execute_together(("GET", "a"), ("GET", "b"))
        finally:
            await client.close()
            await fake.__aexit__()

    assert run(scenario()) == [b"a", b"b"]
    assert fake.reads[0] == [[b"GET", b"a"], [b"GET", b"b"]]


def test_commands_sent_together_fail_together_when_the_connection_drops(caplog):
    fake = FakeRedis(hang_up=True)

    async def scenario():
        address = await fake.__aenter__()
        client = RedisClient(f"redis://{address}/0")
        try:
            with pytest.raises(RedisConnectionError, match=r"^the connection to Redis was lost$"):
                await client.execute_together(("GET", "a"), ("GET", "b"), ("GET", "c"))
        finally:
            await client.close()
            await fake.__aexit__()

    run(scenario())
    gc.collect()  # asyncio reports an unretrieved failure when its future is collected
    # The failures of the commands after the first were consumed, not left for asyncio to
    # report as never retrieved.
    assert "never retrieved" not in caplog.text


@needs_redis
def test_the_database_named_in_the_url_is_selected():
    parts = urlsplit(settings.REDIS_URL)
    other_db = 15
    url = f"{parts.scheme}://{parts.netloc}/{other_db}"
    checker = redis.Redis.from_url(url)
    default_db = redis.Redis.from_url(f"{parts.scheme}://{parts.netloc}/0")

    async def scenario():
        client = RedisClient(url)
        try:
            await client.execute("SET", "redis-client-test:db", "here", "EX", 60)
        finally:
            await client.close()

    try:
        run(scenario())
        assert checker.get("redis-client-test:db") == b"here"
        assert default_db.get("redis-client-test:db") is None
    finally:
        checker.delete("redis-client-test:db")


@needs_redis
def test_a_killed_connection_is_replaced_by_the_next_command():
    admin = redis.Redis.from_url(settings.REDIS_URL)

    async def scenario():
        client = RedisClient(settings.REDIS_URL)
        try:
            first_id = await client.execute("CLIENT", "ID")
            admin.client_kill_filter(_id=first_id)
            # Let the event loop see the connection close.
            for _ in range(100):
                if client._connection.lost:
                    break
                await asyncio.sleep(0.01)
            second_id = await client.execute("CLIENT", "ID")
            return first_id, second_id, await client.execute("PING")
        finally:
            await client.close()

    first_id, second_id, pong = run(scenario())
    assert second_id != first_id
    assert pong == b"PONG"


def test_password_and_database_are_sent_before_the_first_command():
    fake = FakeRedis()

    async def scenario():
        address = await fake.__aenter__()
        client = RedisClient(f"redis://relay:s3cret@{address}/4")
        try:
            return await client.execute("PING")
        finally:
            await client.close()
            await fake.__aexit__()

    assert run(scenario()) == b"OK"
    assert fake.commands == [[b"AUTH", b"relay", b"s3cret"], [b"SELECT", b"4"], [b"PING"]]


def test_a_refused_password_is_an_error_reply():
    fake = FakeRedis(lambda command: b"-WRONGPASS invalid username-password pair\r\n")

    async def scenario():
        address = await fake.__aenter__()
        client = RedisClient(f"redis://:wrong@{address}/0")
        try:
            await client.execute("GET", "anything")
        finally:
            await client.close()
            await fake.__aexit__()

    with pytest.raises(RedisReplyError, match=r"^WRONGPASS invalid username-password pair$"):
        run(scenario())
    assert fake.commands == [[b"AUTH", b"wrong"]]


def test_unreachable_redis_is_a_connection_error():
    client = RedisClient(f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(RedisConnectionError, match=r"^could not connect to Redis \(.+\)$"):
        run(client.execute("GET", "anything"))


def test_commands_in_flight_fail_when_the_connection_drops():
    fake = FakeRedis(hang_up=True)

    async def scenario():
        address = await fake.__aenter__()
        client = RedisClient(f"redis://{address}/0")
        try:
            return await asyncio.gather(
                client.execute("GET", "a"), client.execute("GET", "b"), return_exceptions=True
            )
        finally:
            await client.close()
            await fake.__aexit__()

    results = run(scenario())
    assert [type(result) for result in results] == [RedisConnectionError, RedisConnectionError]
    assert str(results[0]) == "the connection to Redis was lost"


def test_a_silent_redis_fails_the_command_after_the_timeout_and_the_next_one_reconnects():
    answering = False
    fake = FakeRedis(lambda command: b"+PONG\r\n" if answering else None)

    async def scenario():
        nonlocal answering
        address = await fake.__aenter__()
        client = RedisClient(f"redis://{address}/0", command_timeout=0.2)
        try:
            with pytest.raises(RedisConnectionError) as error:
                await client.execute("PING")
            answering = True
            return str(error.value), await client.execute("PING")
        finally:
            await client.close()
            await fake.__aexit__()

    message, pong = run(scenario())
    assert message == "Redis did not answer within 0.2 s"
    assert pong == b"PONG"


def test_requests_arriving_while_a_connection_opens_share_that_one_attempt():
    """A Redis that cannot be reached (a partition drops the handshake): before, each waiting
    request made its own attempt of the full connect timeout, one after another."""
    attempts = 0

    async def scenario():
        nonlocal attempts
        client = RedisClient("redis://127.0.0.1:6379/0", connect_timeout=0.2)

        async def handshake_never_completes(options: dict):
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(30)

        client._open = handshake_never_completes
        return await asyncio.gather(
            *(client.execute("PING") for _ in range(10)), return_exceptions=True
        )

    results = run(scenario())
    assert attempts == 1
    assert [str(result) for result in results] == ["could not connect to Redis (TimeoutError)"] * 10


@needs_redis
def test_a_subscription_gets_each_message_and_reports_its_lost_connection():
    """A subscription on its own connection: the client's commands go on beside it, each
    message reaches the callback, and a killed connection turns `lost` (the caller subscribes
    again)."""
    admin = redis.Redis.from_url(settings.REDIS_URL)
    channel = "redis-client-test:events"

    async def scenario():
        client = RedisClient(settings.REDIS_URL)
        received: list[bytes] = []
        try:
            subscription = await client.subscribe(channel, received.append)
            await client.execute("PUBLISH", channel, "one")
            await client.execute("PUBLISH", channel, "two")
            while len(received) < 2:
                await asyncio.sleep(0.005)
            name = (await client.execute("CLIENT", "INFO")).decode()
            # This subscription's connection only, by its address (other clients share the
            # server).
            host, port = subscription.transport.get_extra_info("sockname")[:2]
            [subscriber] = [
                line for line in admin.client_list() if line["addr"] == f"{host}:{port}"
            ]
            assert subscriber["sub"] == "1"
            admin.client_kill_filter(_id=subscriber["id"])
            while not subscription.lost:
                await asyncio.sleep(0.005)
            return received, name, await client.execute("PING")
        finally:
            await client.close()

    received, name, pong = run(scenario())

    assert received == [b"one", b"two"]
    assert "sub=0" in name  # the client's own connection is not the subscribed one
    assert pong == b"PONG"
