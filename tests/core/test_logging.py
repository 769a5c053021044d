import logging

import pytest

from core.logging import RedactSecretsFilter, RequestIdFilter
from core.request_id import current_request_id
from keys.secret_formats import API_TOKEN, INVITATION_TOKEN, RELAY_KEY


def _format(message: str, *args) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, args, None)
    assert RequestIdFilter().filter(record)
    assert RedactSecretsFilter().filter(record)
    return logging.Formatter("%(request_id)s %(message)s").format(record)


def test_a_key_in_a_log_message_is_masked():
    key = "sk-hc-" + "A" * 43
    line = _format("client sent %s by mistake", key)
    assert key not in line
    assert "sk-hc-[REDACTED]" in line


def test_an_invitation_link_in_the_request_log_is_masked():
    token = "hcinv_" + "b-C_" * 11
    line = _format("%s %s %s", "GET", f"/invitations/{token}/", 200)
    assert token not in line
    assert line.endswith("GET /invitations/hcinv_[REDACTED]/ 200")


@pytest.mark.parametrize(
    "secret_format", [RELAY_KEY, API_TOKEN, INVITATION_TOKEN], ids=lambda f: f.prefix
)
def test_every_kind_of_secret_is_masked(secret_format):
    # The filter keeps its own pattern (core imports nothing from keys): this keeps it in step
    # with every kind keys issues.
    plaintext = secret_format.generate()
    line = _format("sent %s", plaintext)
    assert line == f"- sent {secret_format.prefix}[REDACTED]"


def test_lines_carry_the_current_request_id():
    token = current_request_id.set("req_abc123456")
    try:
        assert _format("hello").startswith("req_abc123456 hello")
    finally:
        current_request_id.reset(token)


def test_lines_without_a_request_show_a_dash():
    assert _format("boot") == "- boot"
