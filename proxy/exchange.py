"""One request to the relay and what has been sent back so far."""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from .dialects import ErrorShape
from .errors import RelayError


@dataclass
class Exchange:
    scope: dict
    receive: Callable[[], Awaitable[dict]]
    send: Callable[[dict], Awaitable[None]]
    request_id: str
    # The shape refusals take: the request's dialect's, or for an unknown path the shape of
    # the API it looks like.
    errors: ErrorShape
    client_ip: str
    # The endpoint's short name (proxy.app.ENDPOINTS); empty for an unknown path.
    endpoint: str = ""
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=timezone.now)
    response_started: bool = False
    status: int = 0
    # Headers of ours added to whatever is answered (see proxy.app.OUTPUT_LOWERED_HEADER).
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Whether a checkpoint of this request's usage was kept (see proxy.recording.checkpoint).
    checkpointed: bool = False
    # For the metrics (proxy.metrics), time.monotonic() when the request was sent upstream and
    # when the answer began (0: not yet), and the refusal's code ("" when served).
    forwarded_at: float = 0.0
    answered_at: float = 0.0
    refused: str = ""

    def header(self, name: bytes) -> str | None:
        for header_name, value in self.scope["headers"]:
            if header_name == name:
                return value.decode("latin-1")
        return None

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.response_started = True
        self.status = status
        self.answered_at = time.monotonic()
        request_id = self.request_id.encode()
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *headers,
                    *self.extra_headers,
                    (b"request-id", request_id),
                    (b"x-request-id", request_id),
                ],
            }
        )

    async def body(self, data: bytes, *, more: bool) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], data: bytes) -> None:
        await self.start(status, [*headers, (b"content-length", str(len(data)).encode())])
        await self.body(data, more=False)

    async def refuse(self, error: RelayError) -> None:
        self.refused = error.reason or error.code
        headers = [(b"content-type", b"application/json"), *error.headers]
        await self.respond(
            self.errors.status(error), headers, self.errors.body(error, self.request_id)
        )
