"""Where a webhook may point: public addresses only, unless WEBHOOKS_ALLOW_PRIVATE is on.

A webhook URL is a request our servers make on a team's behalf, so a lead must not be able to
aim it at the deployment's own network: loopback, private ranges, link-local (which holds the
cloud metadata service at 169.254.169.254), or anything not globally routable. A name is
resolved and every address it resolves to is checked, at creation and again at delivery (a
name can be re-pointed after it was saved); delivery then connects to a checked address.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def webhook_addresses(url: str) -> list[IPAddress]:
    """The addresses `url`'s host resolves to, each allowed; ValidationError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter an http:// or https:// URL.", code="invalid_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValidationError(
            "The URL's port is not a number from 1 to 65535.", code="invalid_url"
        ) from None
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ValidationError(
            f"{parts.hostname} does not resolve to an address.", code="unresolvable"
        ) from None
    addresses = list(dict.fromkeys(_address(info[4][0]) for info in found))
    if not getattr(settings, "WEBHOOKS_ALLOW_PRIVATE", False):
        for address in addresses:
            if not _public(address):
                where = (
                    f"{address} is"
                    if parts.hostname == str(address)
                    else f"{parts.hostname} resolves to {address},"
                )
                raise ValidationError(
                    f"{where} a loopback, private, link-local or reserved address; "
                    "webhooks may only reach public addresses.",
                    code="private_address",
                )
    return addresses


def _address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    # ::ffff:10.0.0.1 reaches 10.0.0.1: judge the IPv4 address it maps to.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast
