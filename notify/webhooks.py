"""The webhook channel: which of a team's webhooks hear of an event, and one signed POST.

The body is serialized once, and those very bytes are signed and sent, so a receiver that
checks `X-HCAI-Signature` over the raw body it got sees exactly what was signed:

    X-HCAI-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the secret>

The timestamp is in the signed text so a receiver can refuse old replays.

HTTP: aiohttp's client (already pinned for the relay), for its total timeout (10 s for
connecting, sending and reading alike; a receiver that drips its answer byte by byte cannot
hold a worker longer) and its pluggable resolver. Before connecting, the URL's host is resolved
and checked again (notify.addresses), and the connection goes to one of the checked addresses:
the resolver answers only with those, so a name re-pointed between the check and the connect
cannot reach a private address. The request still carries the URL's name in its Host header,
and for https in SNI and the certificate check. Redirects are not followed: a 3xx is a failure,
since following it would reach an address nobody checked.
"""

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import socket
import time
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.core.exceptions import ValidationError

from core import credentials

from .addresses import IPAddress, webhook_addresses
from .models import Delivery, Event, EventType, Webhook
from .outcome import EXCERPT_CHARS, Outcome

# Seconds for one try, all included. Tests lower it (monkeypatch) to keep the timeout path short.
TIMEOUT_SECONDS = 10.0
USER_AGENT = "HCAI-Keys-Webhooks/1"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# The answer is read only as far as its excerpt needs (a character is at most 4 bytes).
_EXCERPT_BYTES = EXCERPT_CHARS * 4


def new_secret() -> str:
    """A signing secret: recognisable (so secret scanners catch leaks), 256 bits of randomness."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, *, timestamp: int, body: bytes) -> str:
    """The X-HCAI-Signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def deliveries_for(event: Event) -> list[Delivery]:
    """One delivery per active webhook of the event's team that takes its type (or "*"); a test
    goes only to the webhook it was sent from."""
    webhooks = Webhook.objects.filter(team_id=event.team_id, is_active=True).order_by("id")
    if event.type == EventType.WEBHOOK_TEST:
        webhooks = webhooks.filter(pk=event.payload.get("webhook_id"))
    return [
        Delivery(channel=Delivery.Channel.WEBHOOK, webhook=webhook)
        for webhook in webhooks
        if event.type == EventType.WEBHOOK_TEST
        or "*" in webhook.event_types
        or event.type in webhook.event_types
    ]


def body(delivery: Delivery) -> bytes:
    """The JSON body of `delivery`, the same on every try."""
    event = delivery.event
    document: dict[str, Any] = {
        "id": str(delivery.uuid),
        "type": event.type,
        "created_at": event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "team": event.team.slug,
        "data": event.payload,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def send(delivery: Delivery) -> Outcome:
    webhook = delivery.webhook
    if webhook is None or not webhook.is_active:
        return Outcome(delivered=False, error="The webhook is turned off.")
    try:
        addresses = webhook_addresses(webhook.url)
    except ValidationError as refusal:
        # Checked before anything is sent: a refused address is never connected to.
        return Outcome(delivered=False, error=" ".join(refusal.messages))
    raw = body(delivery)
    try:
        secret = credentials.decrypt(webhook.secret_encrypted, owner=f"Webhook {webhook.pk}")
    except credentials.UnreadableCredential as error:
        return Outcome(delivered=False, error=str(error))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-HCAI-Event": delivery.event.type,
        "X-HCAI-Delivery": str(delivery.uuid),
        "X-HCAI-Signature": signature(secret, timestamp=int(time.time()), body=raw),
    }
    return asyncio.run(_post(webhook.url, addresses, headers, raw))


class _CheckedAddresses(AbstractResolver):
    """Answers every lookup with the addresses notify.addresses already checked."""

    def __init__(self, addresses: list[IPAddress]) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


async def _post(url: str, addresses: list[IPAddress], headers: dict, raw: bytes) -> Outcome:
    connector = aiohttp.TCPConnector(
        resolver=_CheckedAddresses(addresses), use_dns_cache=False, force_close=True
    )
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    where = _where(url)
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=timeout, trust_env=False, auto_decompress=True
            ) as session,
            session.post(url, data=raw, headers=headers, allow_redirects=False) as response,
        ):
            excerpt = _excerpt(await _read_start(response))
            if 200 <= response.status < 300:
                return Outcome(
                    delivered=True, status_code=response.status, response_excerpt=excerpt
                )
            return Outcome(delivered=False, status_code=response.status, response_excerpt=excerpt)
    except TimeoutError:
        return Outcome(delivered=False, error=f"No answer from {where} within {_seconds()}.")
    except aiohttp.ClientConnectorCertificateError as error:
        reason = getattr(error.certificate_error, "verify_message", "") or "not valid"
        return Outcome(
            delivered=False, error=f"{where}'s TLS certificate was not accepted: {reason}."
        )
    except aiohttp.ClientConnectorError as error:
        failure = error.os_error
        reason = os.strerror(failure.errno) if failure.errno else type(failure).__name__
        return Outcome(delivered=False, error=f"Could not connect to {where}: {reason}.")
    except aiohttp.ClientError as error:
        # The exception's text may hold the URL with its query string: only its kind is told.
        return Outcome(delivered=False, error=f"{where} failed: {type(error).__name__}.")


async def _read_start(response: aiohttp.ClientResponse) -> bytes:
    start = b""
    while len(start) < _EXCERPT_BYTES:
        chunk = await response.content.read(_EXCERPT_BYTES - len(start))
        if not chunk:
            break
        start += chunk
    return start


def _excerpt(start: bytes) -> str:
    return start.decode("utf-8", errors="replace")[:EXCERPT_CHARS]


def _where(url: str) -> str:
    """The host (and port) of `url`, for error texts: never its path or query, which may carry
    a receiver's own token."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or "the webhook"


def _seconds() -> str:
    return f"{TIMEOUT_SECONDS:g} s"
