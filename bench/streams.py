"""The benchmark's streaming client (aiohttp), run by bench/run.py in its own processes.

Two measurements, each printed as one JSON object on stdout:

    ttft        COUNT streams one after another; the time from sending the request to the
                first text delta (time to first token) of each.
    concurrent  COUNT streams opened together at START_AT (a wall-clock time, so several
                client processes start as one); for each, whether every event arrived, the
                time to first token and the longest gap between two events.

An event is counted when its blank-line terminator arrives; gaps are measured between
arrivals, so the first gap starts at the first event, not at the request.
"""

import argparse
import asyncio
import json
import os
import time

import aiohttp

try:
    import uvloop
except ImportError:
    uvloop = None

# message_start, content_block_start, the deltas, content_block_stop, message_delta,
# message_stop (see bench/upstream.py).
FIXED_EVENTS = 5


def request_body(model: str) -> bytes:
    return json.dumps(
        {
            "model": model,
            "max_tokens": 256,
            "stream": True,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    ).encode()


async def one_stream(session: aiohttp.ClientSession, url: str, headers: dict, body: bytes) -> dict:
    started = time.perf_counter()
    first_token = None
    last_event = None
    max_gap = 0.0
    events = 0
    tail = b""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                await response.read()
                return {"ok": False, "error": f"status {response.status}"}
            async for chunk in response.content.iter_any():
                now = time.perf_counter()
                buffer = tail + chunk
                complete = buffer.count(b"\n\n")
                if not complete:
                    tail = buffer
                    continue
                cut = buffer.rfind(b"\n\n") + 2
                finished, tail = buffer[:cut], buffer[cut:]
                if last_event is not None:
                    max_gap = max(max_gap, now - last_event)
                last_event = now
                events += complete
                if first_token is None and b"content_block_delta" in finished:
                    first_token = now - started
                last = finished
    except (aiohttp.ClientError, TimeoutError) as error:
        return {"ok": False, "error": type(error).__name__, "events": events}
    return {
        "ok": events > 0 and b"message_stop" in last and not tail.strip(),
        "events": events,
        "ttft_ms": (first_token or 0) * 1000,
        "max_gap_ms": max_gap * 1000,
        "total_ms": (time.perf_counter() - started) * 1000,
    }


def session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections or 1),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def ttft(options, headers: dict, body: bytes) -> dict:
    results = []
    async with session(1) as client:
        deadline = time.monotonic() + options.time_limit
        for _ in range(options.count):
            if time.monotonic() > deadline:
                break
            results.append(await one_stream(client, options.url, headers, body))
    return {"streams": results}


async def concurrent(options, headers: dict, body: bytes) -> dict:
    async with session(options.count) as client:
        await asyncio.sleep(max(0.0, options.start_at - time.time()))
        tasks = [
            asyncio.create_task(one_stream(client, options.url, headers, body))
            for _ in range(options.count)
        ]
        done, pending = await asyncio.wait(tasks, timeout=options.time_limit)
        for task in pending:
            task.cancel()
        results = [task.result() for task in done]
        results += [{"ok": False, "error": "time limit"} for _ in pending]
    return {"streams": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ttft", "concurrent"])
    parser.add_argument("--url", required=True, help="…/v1/messages; the key is in BENCH_KEY")
    parser.add_argument("--model", default="claude-sonnet-4-5")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--deltas", type=int, default=6)
    parser.add_argument("--gap-ms", type=float, default=0)
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--start-at", type=float, default=0)
    parser.add_argument("--time-limit", type=float, default=60)
    options = parser.parse_args()
    headers = {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-bench-delay-ms": str(options.delay_ms),
        "x-bench-gap-ms": str(options.gap_ms),
        "x-bench-deltas": str(options.deltas),
    }
    # From the environment, so the key never shows on a command line.
    key = os.environ.get("BENCH_KEY", "")
    if key:
        headers["x-api-key"] = key
    body = request_body(options.model)
    measure = ttft if options.mode == "ttft" else concurrent
    runner = uvloop.run if uvloop is not None else asyncio.run
    result = runner(measure(options, headers, body))
    result["expected_events"] = options.deltas + FIXED_EVENTS
    print(json.dumps(result))


if __name__ == "__main__":
    main()
