"""Calling a channel's upstream through a Transport: the vendors' HTTP APIs here (HttpTransport),
the local mock in proxy.mock; the relay picks one by the channel's provider.

HTTP: aiohttp's client, because measured here it forwards about four times faster than httpx's
async client (see the relay issue); one session per process, created lazily inside the
running event loop, so its connection pool is reused by every request.

Nothing about the channel leaves this module towards the client: not its base URL, not its
credential, not the vendor's headers about the channel's account (organisation, rate limits).
Only an allow-list of response headers is passed on.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from .channels import ChannelTable
from .dialects import Dialect
from .keystate import ChannelState

# Hop-by-hop headers (RFC 9110 7.6.1) and what the relay sets itself: the client's credential
# is replaced by the channel's, the body length and encoding are aiohttp's business, and the
# client's address stays here.
_DROP_REQUEST_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "accept-encoding",
        "authorization",
        "x-api-key",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
    }
)
# What a client may see of the upstream's response headers.
PASSED_RESPONSE_HEADERS = frozenset({"content-type", "retry-after", "x-should-retry"})

# Read at most this much of a failed upstream's error body (it is only passed on for 529).
_ERROR_BODY_LIMIT = 64 * 1024
_CONNECT_TIMEOUT_SECONDS = 10


class UpstreamFailure(Exception):
    """The channel did not answer usably: a connection error, a timeout or a 5xx.

    `reason` is short and names no host, URL or credential (the admin shows it as the channel's
    last error). `upstream_fault`: False when the upstream was never called (the channel was
    deactivated, or its credential is unreadable): not counted against its health
    (proxy.breaker)."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        body: bytes = b"",
        upstream_fault: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body
        self.upstream_fault = upstream_fault


class Answer(Protocol):
    """An upstream's answer, its headers in: a stream to relay as it comes, or a whole body."""

    status: int
    # Only those a client may see (PASSED_RESPONSE_HEADERS), names in lower case.
    headers: list[tuple[str, str]]
    is_stream: bool

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    def close(self) -> None: ...


class Transport(Protocol):
    async def open(
        self, channel: ChannelState, *, dialect: Dialect, scope: dict, payload: dict, body: bytes
    ) -> Answer:
        """Send the client's request (`scope`: its method, path, query and headers as the ASGI
        server gave them) with `body` (`payload`: its fields the relay read); return once the
        answer's headers are in. Raises UpstreamFailure for anything worth failing over to the
        channel after: no connection, a timeout, a 5xx."""
        ...


@dataclass
class StreamAnswer:
    """A streaming answer, read as it arrives."""

    status: int
    headers: list[tuple[str, str]]
    _response: aiohttp.ClientResponse
    is_stream: bool = True

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def read(self) -> bytes:
        return await self._response.read()

    def close(self) -> None:
        self._response.close()


@dataclass
class ReadAnswer:
    """A non-streaming answer, already read in full."""

    status: int
    headers: list[tuple[str, str]]
    data: bytes
    is_stream: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.data

    async def read(self) -> bytes:
        return self.data

    def close(self) -> None:
        pass


def upstream_url(base_url: str, path: str, query: bytes) -> URL:
    """base_url + the request path. A base URL ending in /v1 (as OpenAI's is usually written)
    does not double it."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    url = base + path
    if query:
        url += "?" + query.decode("latin-1")
    # encoded=True: the path and query go upstream exactly as the client sent them.
    return URL(url, encoded=True)


def upstream_headers(
    provider: str, credential: str, client_headers: list[tuple[bytes, bytes]]
) -> list[tuple[str, str]]:
    connection_tokens = {
        token.strip().lower()
        for name, value in client_headers
        if name == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in client_headers
        if name.decode("latin-1") not in _DROP_REQUEST_HEADERS
        and name.decode("latin-1") not in connection_tokens
    ]
    if provider == "anthropic":
        headers.append(("x-api-key", credential))
    else:
        headers.append(("authorization", f"Bearer {credential}"))
    return headers


class HttpTransport:
    """The vendors' HTTP APIs, with each channel's URL and credential (proxy.channels)."""

    def __init__(self) -> None:
        self.channels = ChannelTable()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=1024, ttl_dns_cache=300)
            # No session-wide timeout: each channel sets its own per request.
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            )
            self._loop = loop
        return self._session

    async def open(
        self, channel: ChannelState, *, dialect: Dialect, scope: dict, payload: dict, body: bytes
    ) -> Answer:
        secrets = await self.channels.secrets(channel)
        if secrets is None:
            raise UpstreamFailure("channel no longer active", upstream_fault=False)
        timeout = aiohttp.ClientTimeout(
            total=channel.timeout_seconds,
            sock_connect=min(_CONNECT_TIMEOUT_SECONDS, channel.timeout_seconds),
        )
        try:
            response = await self.session().request(
                scope["method"],
                upstream_url(secrets.base_url, scope["path"], scope.get("query_string", b"")),
                headers=upstream_headers(channel.provider, secrets.credential, scope["headers"]),
                data=body,
                timeout=timeout,
                allow_redirects=False,
            )
        except TimeoutError:
            raise UpstreamFailure("timeout") from None
        except aiohttp.ClientError as error:
            # The exception's text names the upstream host: only its type is kept.
            raise UpstreamFailure(type(error).__name__) from None
        if response.status >= 500:
            try:
                body = await response.content.read(_ERROR_BODY_LIMIT)
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                response.close()
            raise UpstreamFailure(f"status {response.status}", status=response.status, body=body)
        passed_headers = [
            (name.lower(), value)
            for name, value in response.headers.items()
            if name.lower() in PASSED_RESPONSE_HEADERS
        ]
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamAnswer(response.status, passed_headers, response)
        # A whole body is read here, before anything reaches the client, so a failure while
        # reading it can still fail over to the next channel.
        try:
            data = await response.read()
        except TimeoutError:
            raise UpstreamFailure("timeout") from None
        except aiohttp.ClientError as error:
            raise UpstreamFailure(type(error).__name__) from None
        finally:
            response.close()
        return ReadAnswer(response.status, passed_headers, data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
