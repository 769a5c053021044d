"""A fast fake Anthropic upstream for the benchmark: raw asyncio (uvloop) HTTP/1.1, keep-alive.

It answers POST .../v1/messages, non-streaming (JSON) and streaming (SSE, chunked), and is
deliberately cheap so that it is never the bottleneck: no HTTP framework, no JSON parsing of
the request (streaming is recognised by `"stream": true` in the body), answers built once.
The client picks the behaviour per request with headers, which the relay forwards unchanged
(they are end-to-end headers), so one channel serves every scenario:

    x-bench-delay-ms   wait this long before the response headers (default 0)
    x-bench-gap-ms     streaming: pause between text deltas (default 0)
    x-bench-deltas     streaming: how many text deltas (default 6)

Run: python bench/upstream.py --port 0 [--processes N]; prints "listening PORT" once ready.
Several processes share the port with SO_REUSEPORT.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import sys

try:
    import uvloop
except ImportError:  # The benchmark still runs, a little slower, on the default loop.
    uvloop = None

MODEL = "claude-sonnet-4-5"
USAGE = {
    "input_tokens": 25,
    "output_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
MESSAGE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello from the bench upstream."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": USAGE,
}
_MESSAGE_BODY = json.dumps(MESSAGE).encode()
JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_MESSAGE_BODY)).encode() + b"\r\n\r\n" + _MESSAGE_BODY
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
LISTEN_BACKLOG = 4096
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_OPENING = _chunk(
    _event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                **MESSAGE,
                "content": [],
                "stop_reason": None,
                "usage": {**USAGE, "output_tokens": 1},
            },
        },
    )
    + _event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
)
STREAM_DELTA = _chunk(
    _event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " w"}},
    )
)
STREAM_CLOSING = (
    _chunk(
        _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": USAGE["output_tokens"]},
            },
        )
        + _event("message_stop", {"type": "message_stop"})
    )
    + b"0\r\n\r\n"
)
# Events in a stream of n deltas: message_start, content_block_start, n deltas,
# content_block_stop, message_delta, message_stop.
STREAM_FIXED_EVENTS = 5


class Upstream(asyncio.Protocol):
    """One connection. Requests on it are answered one after the other (no pipelining)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return  # The rest of the body has not arrived yet.
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.busy = True
        path = head[0].split(" ")[1].split("?")[0]
        if not path.endswith("/v1/messages"):
            self.answer(NOT_FOUND)
            return
        delay = float(headers.get("x-bench-delay-ms", "0")) / 1000
        if b'"stream": true' in body or b'"stream":true' in body:
            gap = float(headers.get("x-bench-gap-ms", "0")) / 1000
            deltas = int(headers.get("x-bench-deltas", "6"))
            self.later(delay, self.stream_start, gap, deltas)
        else:
            self.later(delay, self.answer, JSON_RESPONSE)

    def later(self, seconds: float, callback, *args) -> None:
        if seconds > 0:
            self.timer = self.loop.call_later(seconds, callback, *args)
        else:
            callback(*args)

    def answer(self, response: bytes) -> None:
        if self.transport is None:
            return
        self.transport.write(response)
        self.done()

    def done(self) -> None:
        self.timer = None
        self.busy = False
        if self.buffer:
            self.next_request()

    def stream_start(self, gap: float, deltas: int) -> None:
        if self.transport is None:
            return
        # The first delta goes with the opening events, so time-to-first-token is the header
        # delay; the rest are paced.
        self.transport.write(STREAM_HEAD + STREAM_OPENING + STREAM_DELTA)
        self.stream_more(gap, deltas - 1)

    def stream_more(self, gap: float, remaining: int) -> None:
        if self.transport is None:
            return
        if remaining <= 0:
            self.transport.write(STREAM_CLOSING)
            self.done()
            return
        if gap > 0:
            self.timer = self.loop.call_later(gap, self.stream_delta, gap, remaining)
        else:
            self.stream_delta(gap, remaining)

    def stream_delta(self, gap: float, remaining: int) -> None:
        if self.transport is None:
            return
        self.transport.write(STREAM_DELTA)
        self.stream_more(gap, remaining - 1)


def listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(LISTEN_BACKLOG)
    return sock


async def serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    # create_server listens again, with a backlog of 100 unless told: a burst of hundreds of
    # new connections would overflow it and wait a second for the SYN to be retried.
    server = await loop.create_server(Upstream, sock=sock, backlog=LISTEN_BACKLOG)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def run(sock: socket.socket) -> None:
    if uvloop is not None:
        uvloop.run(serve(sock))
    else:
        asyncio.run(serve(sock))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    options = parser.parse_args()
    sock = listening_socket(options.port)
    port = sock.getsockname()[1]
    children = []
    for _ in range(options.processes - 1):
        # Each extra process binds its own socket on the same port (SO_REUSEPORT): the kernel
        # spreads connections between them.
        pid = os.fork()
        if pid == 0:
            sock.close()
            run(listening_socket(port))
            os._exit(0)
        children.append(pid)
    print(f"listening {port}", flush=True)
    try:
        run(sock)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except ProcessLookupError:
                pass
    sys.exit(0)


if __name__ == "__main__":
    main()
