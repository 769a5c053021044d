"""Certificates for the tests' TLS servers (nginx, a webhook receiver, redis-server), made with
`cryptography`: each with its own P-256 key, valid from five minutes ago (a little clock skew
between the test and the server) for a day, its subject's common name `name` and, as
clients check, its host names and addresses in subjectAltName."""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def write(self, certificate: Path, key: Path | None = None) -> None:
        """The certificate as a PEM file, and the key (PKCS #8, unencrypted) if `key` is given:
        an authority a client trusts needs only its certificate written."""
        certificate.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            key.write_bytes(
                self.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )


def self_signed(name: str, *, dns: Iterable[str] = (), ips: Iterable[str] = ()) -> Issued:
    """A certificate signed by its own key and no authority's: a client refuses it unless
    given this very certificate to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _builder(name, key, dns=dns, ips=ips).issuer_name(_name(name))
    return Issued(key, certificate.sign(key, hashes.SHA256()))


def authority(name: str, *, dns: Iterable[str] = (), ips: Iterable[str] = ()) -> Issued:
    """A self-signed certificate authority, which may sign others (`issue`). With host names
    or addresses, a server can present it itself: then a client trusts that server alone."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(name, key, dns=dns, ips=ips)
        .issuer_name(_name(name))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return Issued(key, certificate.sign(key, hashes.SHA256()))


def issue(issuer: Issued, name: str, *, dns: Iterable[str] = (), ips: Iterable[str] = ()) -> Issued:
    """A server certificate signed by `issuer` (an `authority`): a client that trusts the
    authority trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(name, key, dns=dns, ips=ips)
        .issuer_name(issuer.certificate.subject)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    return Issued(key, certificate.sign(issuer.key, hashes.SHA256()))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    name: str, key: ec.EllipticCurvePrivateKey, *, dns: Iterable[str], ips: Iterable[str]
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    alternative_names = [x509.DNSName(host) for host in dns] + [
        x509.IPAddress(ipaddress.ip_address(address)) for address in ips
    ]
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative_names), critical=False
        )
    return builder
