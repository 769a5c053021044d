"""What a dialect is made of (how its answers report usage, its output limit, how its requests
go upstream) and what it shares with its vendor's other APIs (the shape refusals take, the
model listing's fields)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..body import Body
from ..errors import RelayError
from ..usage import Usage


class ErrorShape(Protocol):
    """A refusal (proxy.errors.RelayError) as this API's SDK expects it."""

    def status(self, error: RelayError) -> int: ...

    def body(self, error: RelayError, request_id: str) -> bytes: ...


class UsageReader(Protocol):
    """The usage an answer reports, read into `usage` (proxy.usage.Usage)."""

    def event(self, usage: Usage, data: dict) -> bool:
        """One stream event's JSON; True if the event carries only usage (see
        Dialect.upstream_request: such an event is not passed on to a client that did not ask
        for it)."""
        ...

    def body(self, usage: Usage, data: dict) -> None:
        """A whole (non-streaming) answer's JSON."""
        ...


# The payload and bytes sent upstream for a request's body, and whether the answer's
# usage-only events are to be removed on the way back (the relay asked for them, the client
# did not).
Outgoing = tuple[dict, bytes, bool]


def as_sent(body: Body) -> Outgoing:
    """The body goes upstream byte for byte."""
    return body.fields, body.raw, False


@dataclass(frozen=True, slots=True, eq=False)
class Vendor:
    """What a vendor's APIs share."""

    # The channel provider that serves them (a mock channel serves every dialect).
    provider: str
    # As a message to a person names it.
    name: str
    errors: ErrorShape
    # One model of GET /v1/models in this vendor's fields (its name, priced since), and the
    # listing around such objects (proxy.listing: one listing carries both vendors').
    model_object: Callable[[str, datetime], dict]
    model_list: Callable[[list[dict]], dict]


@dataclass(frozen=True, slots=True, eq=False)
class Dialect:
    """One vendor API the relay forwards (a module constant; compared by identity)."""

    name: str
    vendor: Vendor
    usage: UsageReader
    # The request's output limit under this API's name, which the quota may lower; None: the
    # API writes no output (count_tokens), so only the input is reserved.
    output_field: str | None
    # The body as it goes upstream (see as_sent).
    upstream_request: Callable[[Body], Outgoing] = as_sent

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"
