"""Who the client is: the socket peer, or, behind a trusted reverse proxy, the address that
proxy saw. One rule for the relay (IP restrictions) and the portal (sign-in rate limits).
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str, headers: list[tuple[bytes, bytes]], trusted: tuple[IPNetwork, ...]) -> str:
    """The socket peer, unless the peer is a trusted proxy: then the right-most address in
    X-Forwarded-For that is not itself a trusted proxy. Anyone else can write any
    X-Forwarded-For they like, so believing it from them would let a client pick the address
    an IP restriction sees."""
    if not _is_trusted(peer, trusted):
        return peer
    chain = [
        address.strip()
        for name, value in headers
        if name == b"x-forwarded-for"
        for address in value.decode("latin-1").split(",")
        if address.strip()
    ]
    for address in reversed(chain):
        if not _is_trusted(address, trusted):
            return address
    return chain[0] if chain else peer


def _is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def parse_trusted_proxies(entries: list[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry)


@lru_cache(maxsize=8)
def _trusted_from(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_trusted_proxies(list(entries))


def trusted_proxies() -> tuple[IPNetwork, ...]:
    """settings.TRUSTED_PROXIES parsed, once per distinct value."""
    return _trusted_from(tuple(settings.TRUSTED_PROXIES))


def request_client_ip(group: str, request: HttpRequest) -> str:
    """A Django request's client address; the signature django-ratelimit expects of a key."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    headers = [(b"x-forwarded-for", forwarded.encode("latin-1"))] if forwarded else []
    return client_ip(request.META.get("REMOTE_ADDR", ""), headers, trusted_proxies())
