"""The benchmark's concurrency-1 latency client, run by bench/run.py in its own process.

One keep-alive connection, one request at a time, for SECONDS: each latency is taken with the
monotonic clock from just before the request is written to just after the last byte of its
response is read. Prints one JSON object with the same fields as post.lua's wrk summary.

Why not wrk for this one figure: at concurrency 1 on the 2-core machine, wrk's own figures
contradict themselves. Its mean latency came out above its time per request (e.g. 106 µs
against 80 µs straight to the fake upstream), which no closed loop of one connection can do,
and its p99 was 4 to 8 times this client's for the same target at the same time (direct
1.3 ms against 0.16 ms). This client's mean equals its time per request, and it reports that
check (`cycle_us`) so a reader can see it hold. wrk still measures every rate.
"""

import argparse
import json
import math
import os
import socket
import time
from urllib.parse import urlsplit

# A response bigger than this is not a benchmark answer: it is refused as an error.
MAX_RESPONSE_BYTES = 1 << 20


class ResponseError(Exception):
    pass


def build_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"host: {host}:{port}",
        *(f"{name}: {value}" for name, value in headers.items()),
        f"content-length: {len(body)}",
    ]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(sock: socket.socket) -> int:
    """Read one response with a Content-Length; return its status."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        data += _recv(sock)
        if len(data) > MAX_RESPONSE_BYTES:
            raise ResponseError("response headers too long")
    head = data[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None or length > MAX_RESPONSE_BYTES:
        raise ResponseError("response without a usable content-length")
    while len(data) < end + 4 + length:
        data += _recv(sock)
    return status


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ResponseError("connection closed")
    return chunk


def connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run(
    url: str,
    body: bytes,
    headers: dict[str, str],
    seconds: float,
    timeout: float,
    raw: bool = False,
) -> dict:
    host, port, request = build_request(url, body, headers)
    sock = connect(host, port, timeout)
    latencies: list[int] = []
    status_errors = other_errors = 0
    clock = time.perf_counter_ns
    started = clock()
    stop = started + int(seconds * 1e9)
    try:
        while (sent := clock()) < stop:
            try:
                sock.sendall(request)
                status = read_response(sock)
            except (OSError, ResponseError, ValueError, IndexError):
                other_errors += 1
                sock.close()
                sock = connect(host, port, timeout)
                continue
            latencies.append((clock() - sent) // 1000)
            if status >= 400:
                status_errors += 1
    finally:
        sock.close()
    duration_us = (clock() - started) // 1000
    summary = summarize(latencies, duration_us, status_errors, other_errors)
    if raw:
        summary["latencies_us"] = latencies
    return summary


def summarize(
    latencies: list[int], duration_us: int, status_errors: int, other_errors: int
) -> dict:
    """The summary of one run, or of several pooled (bench/measurements.py): times in µs."""
    latencies = sorted(latencies)
    count = len(latencies)

    def rank(fraction: float) -> int:
        return nearest_rank(latencies, fraction) if count else 0

    return {
        "requests": count,
        "duration_us": duration_us,
        "status_errors": status_errors,
        "errors": other_errors,
        "p50_us": rank(0.50),
        "p90_us": rank(0.90),
        "p99_us": rank(0.99),
        "p999_us": rank(0.999),
        "max_us": latencies[-1] if count else 0,
        "mean_us": sum(latencies) / count if count else 0.0,
        # The closed loop's check: the mean latency cannot exceed the time per request.
        "cycle_us": duration_us / count if count else 0.0,
    }


def nearest_rank(ordered: list, fraction: float):
    """The smallest value with at least `fraction` of the (sorted) values at or below it, as
    wrk's percentiles. Rounded first, so that 0.7 x 10 (7.000000000000001) is rank 7."""
    return ordered[min(len(ordered), max(1, math.ceil(round(fraction * len(ordered), 9)))) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--header", action="append", default=[], help="name: value")
    parser.add_argument(
        "--raw", action="store_true", help="add every latency (µs) to the output, for pooling"
    )
    options = parser.parse_args()
    headers = {}
    for header in options.header:
        name, colon, value = header.partition(":")
        if not name.strip() or not colon:
            parser.error(f"--header must be 'name: value', not {header!r}")
        headers[name.strip()] = value.strip()
    if options.seconds <= 0:
        parser.error("--seconds must be more than 0")
    parts = urlsplit(options.url)
    if parts.scheme != "http" or not parts.hostname:
        parser.error(f"the URL must be http://host:port/path, not {options.url!r}")
    # The body and the key come in the environment: a command line is visible to `ps`.
    if not os.environ.get("BENCH_BODY"):
        parser.error("BENCH_BODY (in the environment) must hold the request body")
    if os.environ.get("BENCH_KEY"):
        headers["x-api-key"] = os.environ["BENCH_KEY"]
    body = os.environ["BENCH_BODY"].encode()
    try:
        result = run(options.url, body, headers, options.seconds, options.timeout, options.raw)
    except OSError as error:
        parser.exit(1, f"c1.py: cannot reach {options.url}: {error}\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
