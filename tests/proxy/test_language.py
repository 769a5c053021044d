"""The relay answers in English whatever the caller's Accept-Language or the key owner's portal
language: SDKs and Claude Code show its messages verbatim, and people search for them."""

from keys import services
from keys.models import UserPreference

from .test_gate import (
    CHAT,
    DISABLED,
    INVALID,
    MESSAGE,
    assert_anthropic_error,
    assert_openai_error,
)

CHINESE = {"accept-language": "zh-Hans,zh-CN;q=0.9,zh;q=0.8"}


def test_a_refusal_stays_english_for_a_chinese_caller(relay, member):
    UserPreference.objects.create(user=member, language="zh-hans")
    services.api_key_disable(key=relay.key, actor=member)

    anthropic = relay.call("POST", "/v1/messages", MESSAGE, CHINESE)
    openai = relay.call("POST", "/v1/chat/completions", CHAT, CHINESE)

    assert_anthropic_error(anthropic, 403, "permission_error", DISABLED)
    assert_openai_error(openai, 403, "permission_error", "key_disabled", DISABLED)
    assert "content-language" not in anthropic.headers
    assert relay.primary.requests == []


def test_an_unknown_key_is_refused_in_english_for_a_chinese_caller(relay):
    response = relay.call("POST", "/v1/messages", MESSAGE, CHINESE, key="sk-hc-" + "A" * 43)

    assert_anthropic_error(response, 401, "authentication_error", INVALID)
