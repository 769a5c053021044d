import base64
import hashlib

import pytest

from keys.secret_formats import API_TOKEN, INVITATION_TOKEN, RELAY_KEY, SecretFormat, digest_key

FORMATS = [
    pytest.param(RELAY_KEY, "sk-hc-", id="relay-key"),
    pytest.param(API_TOKEN, "hcat_", id="api-token"),
    pytest.param(INVITATION_TOKEN, "hcinv_", id="invitation-token"),
]


@pytest.mark.parametrize(("secret_format", "prefix"), FORMATS)
def test_a_generated_secret_is_the_prefix_and_32_random_bytes_in_43_url_safe_characters(
    secret_format, prefix
):
    plaintext = secret_format.generate()

    random_part = plaintext.removeprefix(prefix)
    assert plaintext.startswith(prefix)
    assert len(random_part) == 43
    assert len(base64.urlsafe_b64decode(random_part + "=")) == 32
    assert secret_format.matches(plaintext)


@pytest.mark.parametrize(("secret_format", "prefix"), FORMATS)
def test_the_digest_is_sha256_hex_and_the_display_prefix_shows_six_random_characters(
    secret_format, prefix
):
    plaintext = secret_format.generate()

    assert secret_format.digest(plaintext) == hashlib.sha256(plaintext.encode()).hexdigest()
    assert digest_key(plaintext) == secret_format.digest(plaintext)
    assert secret_format.display_prefix(plaintext) == plaintext[: len(prefix) + 6]
    assert secret_format.display_prefix_length == len(prefix) + 6


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: "", id="empty"),
        pytest.param(lambda p: p[:-1], id="cut-short"),
        pytest.param(lambda p: p + "A", id="one-too-many"),
        pytest.param(lambda p: p[:-1] + "=", id="padding"),
        pytest.param(lambda p: p[:-1] + "+", id="not-url-safe"),
        pytest.param(lambda p: p.upper(), id="upper-cased"),
        pytest.param(lambda p: p + " ", id="trailing-space"),
        pytest.param(lambda p: " " + p, id="leading-space"),
        pytest.param(lambda p: p + "\n", id="trailing-newline"),
        pytest.param(lambda p: p.removeprefix(RELAY_KEY.prefix) + "AAAAAA", id="no-prefix"),
        pytest.param(lambda p: API_TOKEN.prefix + p.removeprefix(RELAY_KEY.prefix), id="token"),
    ],
)
def test_a_damaged_secret_does_not_match(damage):
    assert not RELAY_KEY.matches(damage(RELAY_KEY.generate()))


def test_the_kinds_never_match_each_other():
    formats = [RELAY_KEY, API_TOKEN, INVITATION_TOKEN]
    for made in formats:
        plaintext = made.generate()
        assert [other.matches(plaintext) for other in formats] == [
            other is made for other in formats
        ]


def test_the_shape_follows_the_number_of_random_bytes():
    short = SecretFormat("t_", random_bytes=16)

    assert len(short.generate()) == len("t_") + 22
    assert short.matches(short.generate())
