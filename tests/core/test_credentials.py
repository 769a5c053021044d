"""core.credentials: channel credentials encrypted with CHANNEL_CREDENTIAL_KEYS."""

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from core import credentials
from core.credentials import UnreadableCredential

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
GENERATE = (
    'generate one with python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


def test_round_trip_and_never_the_clear_text():
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_A]):
        token = credentials.encrypt("sk-ant-secret")
        assert "sk-ant-secret" not in token
        assert credentials.decrypt(token, owner="Channel main") == "sk-ant-secret"


def test_the_first_key_encrypts_and_any_key_decrypts():
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_A]):
        old = credentials.encrypt("sk-old")
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_B, KEY_A]):
        new = credentials.encrypt("sk-new")
        assert credentials.decrypt(old, owner="Channel main") == "sk-old"
    assert Fernet(KEY_B).decrypt(new) == b"sk-new"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="encrypted with another key"),
        pytest.param("sk-ant-stored-in-clear", id="clear text"),
        pytest.param("gAAAAA", id="cut short"),
        pytest.param("gAAAAAé", id="not ascii"),
    ],
)
def test_a_credential_no_key_decrypts_names_the_channel_not_the_value(token):
    if token is None:
        with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_B]):
            token = credentials.encrypt("sk-ant-secret")
    with (
        override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_A]),
        pytest.raises(UnreadableCredential) as caught,
    ):
        credentials.decrypt(token, owner="Channel anthropic-main")
    assert str(caught.value) == (
        "Channel anthropic-main: its stored credential cannot be decrypted with any key in "
        "CHANNEL_CREDENTIAL_KEYS. Put back the key it was encrypted with, or set a new credential."
    )


def test_reencrypt_moves_a_token_to_the_newest_key_once():
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_A]):
        old = credentials.encrypt("sk-secret")
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[KEY_B, KEY_A]):
        new = credentials.reencrypt(old, owner="Channel main")
        assert credentials.reencrypt(new, owner="Channel main") is None
    assert Fernet(KEY_B).decrypt(new) == b"sk-secret"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            [],
            "CHANNEL_CREDENTIAL_KEYS is not set. Channel credentials are encrypted with it: set "
            "it to one or more Fernet keys, newest first, comma separated (" + GENERATE + ").",
        ),
        (
            ["not-a-fernet-key"],
            "CHANNEL_CREDENTIAL_KEYS: key 1 of 1 is not a Fernet key (32 url-safe "
            "base64-encoded bytes); " + GENERATE + ".",
        ),
        (
            [KEY_A, KEY_B[:-2]],
            "CHANNEL_CREDENTIAL_KEYS: key 2 of 2 is not a Fernet key (32 url-safe "
            "base64-encoded bytes); " + GENERATE + ".",
        ),
        (
            [KEY_A, "é" * 44],
            "CHANNEL_CREDENTIAL_KEYS: key 2 of 2 is not a Fernet key (32 url-safe "
            "base64-encoded bytes); " + GENERATE + ".",
        ),
    ],
    ids=["empty", "not a key", "cut short", "not ascii"],
)
def test_bad_keys_are_refused_naming_the_setting_never_the_key(keys, message):
    with override_settings(CHANNEL_CREDENTIAL_KEYS=keys):
        with pytest.raises(ImproperlyConfigured) as caught:
            credentials.check_keys()
        with pytest.raises(ImproperlyConfigured):
            credentials.encrypt("sk-secret")
    assert str(caught.value) == message


def test_stray_spaces_around_keys_are_ignored():
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[f" {KEY_A} ", KEY_B]):
        token = credentials.encrypt("sk-secret")
    assert Fernet(KEY_A).decrypt(token) == b"sk-secret"
