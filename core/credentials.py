"""Stored secrets (channel credentials, webhook signing secrets), encrypted at rest with the keys
in CHANNEL_CREDENTIAL_KEYS.

A database dump or a read-only SQL account must not hand out the vendors' API keys or a team's
webhook secrets, so the
database holds only a Fernet token (AES-128-CBC plus HMAC-SHA256, with its time of
encryption). The keys come from the environment, never from the database. MultiFernet
encrypts with the first key and decrypts with any: rotation is prepend a new key, run
`manage.py reencrypt_channel_credentials`, then drop the old key.
"""

import functools
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SETTING = "CHANNEL_CREDENTIAL_KEYS"
GENERATE_HINT = (
    'generate one with python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class UnreadableCredential(Exception):
    """A stored credential that none of the configured keys decrypts (wrong or dropped key,
    or a damaged value). The message names its owner ("Channel main"), never the value."""


@dataclass(frozen=True, slots=True)
class Cipher:
    fernets: MultiFernet
    newest: Fernet


def check_keys() -> None:
    """Fail at start-up, naming the setting, rather than on the first channel saved or read."""
    _cipher(tuple(settings.CHANNEL_CREDENTIAL_KEYS))


def encrypt(plaintext: str) -> str:
    return _current().fernets.encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str, *, owner: str) -> str:
    try:
        return _current().fernets.decrypt(token).decode()
    except (InvalidToken, ValueError):
        raise UnreadableCredential(_unreadable(owner)) from None


def reencrypt(token: str, *, owner: str) -> str | None:
    """The token encrypted with the newest key, or None when it already is."""
    cipher = _current()
    try:
        cipher.newest.decrypt(token)
        return None
    except (InvalidToken, ValueError):
        pass
    try:
        return cipher.fernets.rotate(token).decode("ascii")
    except (InvalidToken, ValueError):
        raise UnreadableCredential(_unreadable(owner)) from None


def _unreadable(owner: str) -> str:
    return (
        f"{owner}: its stored credential cannot be decrypted with any key in "
        f"{SETTING}. Put back the key it was encrypted with, or set a new credential."
    )


def _current() -> Cipher:
    # Read on every call rather than once at import, so a test's override_settings applies.
    return _cipher(tuple(settings.CHANNEL_CREDENTIAL_KEYS))


@functools.lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...]) -> Cipher:
    if not keys:
        raise ImproperlyConfigured(
            f"{SETTING} is not set. Channel credentials are encrypted with it: set it to one or "
            f"more Fernet keys, newest first, comma separated ({GENERATE_HINT})."
        )
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip()))
        except ValueError:
            # The key itself is never echoed: it is a secret, and error output gets logged.
            raise ImproperlyConfigured(
                f"{SETTING}: key {position} of {len(keys)} is not a Fernet key (32 url-safe "
                f"base64-encoded bytes); {GENERATE_HINT}."
            ) from None
    return Cipher(MultiFernet(fernets), fernets[0])
