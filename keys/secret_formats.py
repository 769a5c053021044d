"""The shape of every secret this deployment issues: relay keys, API tokens, invitation tokens.

Each is a recognisable prefix (so secret scanners such as GitHub's and gitleaks spot a leak, and
no kind can be mistaken for another) followed by random bytes from `secrets` in URL-safe base64.
Only the SHA-256 digest is stored.
"""

import hashlib
import math
import re
import secrets

# 32 bytes (256 bits): far beyond guessing, which is why a plain SHA-256 digest is the right way
# to store them. A slow password hasher would only slow the relay's hot path.
RANDOM_BYTES = 32
# How many characters after the prefix people see in lists, e.g. "sk-hc-Ab3dEf": enough to tell
# secrets apart, far too few to guess the rest.
DISPLAY_RANDOM_CHARS = 6


class SecretFormat:
    def __init__(self, prefix: str, random_bytes: int = RANDOM_BYTES) -> None:
        self.prefix = prefix
        self.random_bytes = random_bytes
        self.display_prefix_length = len(prefix) + DISPLAY_RANDOM_CHARS
        # token_urlsafe drops base64's padding, so n bytes make exactly ceil(4n / 3) characters.
        random_chars = math.ceil(random_bytes * 4 / 3)
        # Compiled once: the relay checks every request's credential against it.
        self.shape = re.compile(re.escape(prefix) + f"[A-Za-z0-9_-]{{{random_chars}}}")

    def generate(self) -> str:
        return self.prefix + secrets.token_urlsafe(self.random_bytes)

    @staticmethod
    def digest(plaintext: str) -> str:
        """What is stored and looked up: the SHA-256 hex digest of the whole plaintext."""
        return hashlib.sha256(plaintext.encode()).hexdigest()

    def display_prefix(self, plaintext: str) -> str:
        return plaintext[: self.display_prefix_length]

    def matches(self, plaintext: str) -> bool:
        """Exactly this format's shape: the prefix and the full run of random characters."""
        return self.shape.fullmatch(plaintext) is not None


RELAY_KEY = SecretFormat("sk-hc-")
API_TOKEN = SecretFormat("hcat_")
INVITATION_TOKEN = SecretFormat("hcinv_")

# For look-ups that need not know which kind a secret is: every kind is digested alike.
digest_key = SecretFormat.digest
