import pytest

from core.client_ip import client_ip, parse_trusted_proxies

TRUSTED = parse_trusted_proxies(["10.0.0.0/8", "fd00::/8"])


def forwarded(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", value.encode())]


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        # Anyone outside TRUSTED_PROXIES: the header is theirs to forge, so it is ignored.
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
        ("2001:db8::9", "198.51.100.1", "2001:db8::9"),
        # A trusted proxy: the right-most address that is not itself a trusted proxy.
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.3", "198.51.100.1"),
        ("fd00::2", "2001:db8::7", "2001:db8::7"),
        # Garbage in the chain is not trusted either, so it is what gets reported.
        ("10.0.0.2", "not-an-ip", "not-an-ip"),
        # A trusted proxy that forwarded nothing: the proxy itself.
        ("10.0.0.2", "", "10.0.0.2"),
    ],
)
def test_client_ip(peer, header, expected):
    assert client_ip(peer, forwarded(header) if header else [], TRUSTED) == expected


def test_without_trusted_proxies_the_peer_is_always_the_client():
    assert client_ip("10.0.0.2", forwarded("198.51.100.1"), ()) == "10.0.0.2"
