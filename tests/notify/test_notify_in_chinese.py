"""The notification pages and emails in Simplified Chinese: the pages with Accept-Language:
zh-Hans, an email in its recipient's language (notify.emails.recipient_language), money still
in US dollars with "$". The English wording is what the other tests assert."""

import pytest
from django.test import override_settings
from django.utils import translation

from keys.services import user_language_set
from notify import emails
from notify.delivery import deliver_due
from notify.models import EventType, NotificationSettings

from .test_emails import emit, inbox, key, owner, parts, threshold_payload  # noqa: F401

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-Hans"}
PAGE = "/t/acme/notifications/"
SETTINGS = "/t/acme/notifications/settings/"
VALID = {
    "email_recipients": "leads",
    "thresholds": "75, 100",
    "expiry_warning_days": "14, 2",
    "spike_limit_usd": "25",
}


@pytest.fixture(autouse=True)
def _chinese(zh_catalogue):
    pass


def test_the_notifications_page_in_chinese(client, lead):
    client.force_login(lead)
    response = client.get(PAGE, **ZH)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>通知</h1>" in page
    assert '<h2 id="team-settings-heading">团队设置</h2>' in page
    assert '<legend class="field__label">邮件接收人</legend>' in page
    assert "负责人和密钥所有者" in page
    assert ">保存通知设置</button>" in page
    assert ">Webhook</a></div>" in page
    assert "Team settings" not in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("thresholds", "80, 80", "每个阈值只能填写一次；80 重复了。"),
        (
            "expiry_warning_days",
            "120",
            "每个过期提醒都必须是 1 到 90 的整数天数；120 不符合。",
        ),
        ("email_recipients", "everyone", "请选择邮件接收人：负责人、所有者或两者。"),
    ],
)
def test_a_settings_error_in_chinese(client, lead, field, value, message):
    client.force_login(lead)
    response = client.post(SETTINGS, {**VALID, field: value}, **ZH)
    assert response.status_code == 400
    assert response.context["settings_form"].errors == {field: [message]}
    assert f"<li>{message}</li>" in response.content.decode()
    assert not NotificationSettings.objects.exists()


def test_the_webhooks_page_in_chinese(client, lead):
    client.force_login(lead)
    page = client.get(PAGE + "webhooks/", **ZH).content.decode()
    assert "<h2>还没有 Webhook</h2>" in page
    assert ">添加 Webhook</a>" in page


def test_a_threshold_email_rendered_in_chinese(team, key):  # noqa: F811
    event = emit(team, EventType.KEY_LIMIT_THRESHOLD, threshold_payload(key), key=key)
    with override_settings(PUBLIC_BASE_URL="http://keys.example"):
        with translation.override("zh-hans"):
            message = emails.render(event)
        english = emails.render(event, language="en")
    assert message.subject == "[Acme] 密钥“claude-code-main”已达到每日限额的 80%"
    assert message.text == (
        f"密钥“claude-code-main” ({key.prefix}…)已用 $4.00，"
        "每日限额为 $5.00（2026-12-07）：80%。\n\n"
        "请求照常进行；达到 100% 时中转将拒绝请求。\n\n"
        f"密钥页面: http://keys.example/t/acme/keys/{key.pk}/\n\n"
        "--\n"
        "你收到这封邮件，是因为你是 Acme 的负责人或该密钥的所有者。负责人可以在团队的通知页面选择"
        "邮件接收人，每位成员也可以在那里关闭关于自己密钥的邮件："
        "http://keys.example/t/acme/notifications/\n"
    )
    assert '<html lang="zh-Hans">' in message.html
    assert "已用 $4.00，每日限额为 $5.00（2026-12-07）：80%。</p>" in message.html
    # The same event for an English reader, whatever language was active around it.
    assert english.subject == "[Acme] Key “claude-code-main” reached 80% of its daily limit"


def test_an_email_is_sent_in_the_language_its_recipient_chose(inbox, team, key):  # noqa: F811
    user_language_set(user=key.owner, language="zh-hans")
    NotificationSettings.objects.create(team=team, email_recipients="owner")
    emit(team, EventType.KEY_EXPIRED, {"key_id": key.pk}, key=key)
    assert deliver_due() == 1
    assert inbox.subjects == ["[Acme] 密钥“claude-code-main”已过期"]
    text, _html = parts(inbox.messages[0][1])
    assert text.startswith(f"密钥“claude-code-main” ({key.prefix}…)已过期：中转会拒绝它的请求。")
    assert "负责人可以在密钥页面设置新的过期时间并重新启用它。" in text
