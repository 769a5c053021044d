"""The request id: taken from a sane incoming X-Request-Id or made fresh, kept in a contextvar.

A contextvar (not a thread-local) so that the async relay and Django's threads both see
the id of the request they are serving, and every log line can carry it.
"""

import re
import secrets
from contextvars import ContextVar

current_request_id: ContextVar[str] = ContextVar("request_id", default="-")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")


def new_request_id(incoming: str | None = None) -> str:
    """Reuse a well-formed id from a load balancer, otherwise make one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return "req_" + secrets.token_hex(12)
