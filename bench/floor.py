"""The floor: the leanest Python forwarder, to tell the relay's own work from the machine's.

A bare ASGI callable (no Django, no Redis, no key check, no accounting) served by the same
production server command as the relay (`gunicorn bench.floor:app -c gunicorn.conf.py`, same
uvicorn workers, same count). It reads the request body, forwards it with one process-wide
aiohttp session (the same connector settings as the relay's) to the fake upstream, same
path, with the headers the benchmark's wrk script sends, and returns the upstream's status,
content-type and body. Whatever the floor adds over calling the upstream directly is what
this machine charges any Python forwarder; the relay's latency above the floor is the relay's
own work.

The upstream's base URL comes from BENCH_FLOOR_UPSTREAM (http://127.0.0.1:PORT).
"""

import os

import aiohttp

UPSTREAM = os.environ["BENCH_FLOOR_UPSTREAM"].rstrip("/")
# What bench/post.lua sends (the floor's clients send no key; the upstream checks none).
_FORWARDED = frozenset({b"content-type", b"anthropic-version"})

_session: aiohttp.ClientSession | None = None


def _get_session() -> aiohttp.ClientSession:
    # Created lazily inside the worker's running loop (after gunicorn's fork), once.
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=60),
        )
    return _session


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _FORWARDED or name.startswith(b"x-bench-")
    }
    async with _get_session().request(
        scope["method"], UPSTREAM + scope["path"], headers=headers, data=body
    ) as response:
        data = await response.read()
        content_type = response.headers.get("content-type", "application/octet-stream")
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", content_type.encode("latin-1")),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
    await send({"type": "http.response.body", "body": data})
