"""The portal's language: the header's switch, the choice saved on the user, Accept-Language,
English by default; pages, form errors and the API's messages in Simplified Chinese; money
still in US dollars."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import translation

from keys.models import ApiKey, AuditEvent, UserPreference
from keys.templatetags.portal import ago, zone_time
from keys.validators import RATE_LIMIT_MESSAGE

from ..factories import make_key

RATE_LIMIT_ZH = (
    "请按 60/m 的格式输入速率限制：至少为 1 的整数，后接 /s、/m、/h 或 /d"
    "（每秒、每分钟、每小时或每天）。"
)
CHINESE = "zh-CN,zh;q=0.9,en;q=0.8"


@pytest.fixture
def member_key(team, member, group):
    return make_key(team=team, owner=member, group=group, actor=member, name="cc-main").key


@pytest.fixture
def unchanged(member_key) -> dict:
    """The edit form's fields as the key has them."""
    return {"name": member_key.name, "group": member_key.group_id, "status": "enabled"}


def signed_in(user, **headers) -> Client:
    client = Client(**headers)
    client.force_login(user)
    return client


def switch(client: Client, language: str, next_url: str = "/"):
    return client.post(reverse("keys:language"), {"language": language, "next": next_url})


def keys_page(client: Client, team) -> str:
    response = client.get(reverse("keys:list", args=[team.slug]))
    assert response.status_code == 200
    return response.content.decode()


# --- choosing the language --------------------------------------------------------------------


def test_english_is_the_default(team, member, member_key):
    response = signed_in(member).get(reverse("keys:list", args=[team.slug]))

    page = response.content.decode()
    assert '<html lang="en">' in page
    assert "<h1>API keys</h1>" in page
    assert response.headers["Content-Language"] == "en"


def test_accept_language_picks_chinese_when_nothing_was_chosen(team, member, member_key):
    response = signed_in(member, HTTP_ACCEPT_LANGUAGE=CHINESE).get(
        reverse("keys:list", args=[team.slug])
    )

    page = response.content.decode()
    assert '<html lang="zh-hans">' in page
    assert "<h1>API 密钥</h1>" in page
    assert response.headers["Content-Language"] == "zh-hans"


def test_the_switch_saves_the_choice_on_the_user(team, member, member_key):
    client = signed_in(member)
    back_to = reverse("keys:list", args=[team.slug])

    response = switch(client, "zh-hans", back_to)

    assert response.status_code == 302
    assert response.headers["Location"] == back_to
    assert UserPreference.objects.get(user=member).language == "zh-hans"
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert "<h1>API 密钥</h1>" in keys_page(client, team)


def test_the_saved_choice_follows_the_user_to_another_browser(team, member, member_key):
    switch(signed_in(member), "zh-hans")

    # A new session with no language cookie, in a browser that asks for English.
    elsewhere = signed_in(member, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")

    assert "<h1>API 密钥</h1>" in keys_page(elsewhere, team)


def test_the_saved_choice_beats_accept_language(team, member, member_key):
    switch(signed_in(member), "en")

    page = keys_page(signed_in(member, HTTP_ACCEPT_LANGUAGE=CHINESE), team)

    assert "<h1>API keys</h1>" in page


def test_a_signed_out_visitor_switches_with_the_cookie(db):
    client = Client()
    login = reverse("keys:login")

    response = switch(client, "zh-hans", login)

    assert response.headers["Location"] == login
    assert not UserPreference.objects.exists()
    page = client.get(login).content.decode()
    assert "<h1>登录</h1>" in page
    assert "管理团队的 API 密钥并查看其消费。" in page


def test_the_header_offers_each_language_in_itself(team, member, member_key):
    page = keys_page(signed_in(member), team)

    assert f'action="{reverse("keys:language")}"' in page
    assert 'value="zh-hans" lang="zh-hans">中文</button>' in page
    assert 'value="en" lang="en" aria-pressed="true">English</button>' in page


def test_an_unknown_language_is_refused_and_nothing_saved(member):
    response = switch(signed_in(member), "fr")

    assert response.status_code == 400
    assert not UserPreference.objects.exists()
    assert settings.LANGUAGE_COOKIE_NAME not in response.cookies


def test_the_switch_goes_back_only_to_this_site(member):
    response = switch(signed_in(member), "zh-hans", "https://evil.example/phish")

    assert response.headers["Location"] == reverse("keys:home")


def test_without_next_the_switch_goes_back_to_the_page_it_was_on(team, member):
    page = "http://testserver" + reverse("keys:list", args=[team.slug])

    response = signed_in(member).post(
        reverse("keys:language"), {"language": "zh-hans"}, HTTP_REFERER=page
    )

    assert response.headers["Location"] == page


def test_the_switch_takes_only_posts(member):
    assert signed_in(member).get(reverse("keys:language")).status_code == 405


# --- pages and errors in Chinese ------------------------------------------------------------


def test_the_key_edit_page_in_chinese(team, member, member_key):
    client = signed_in(member)
    switch(client, "zh-hans")

    page = client.get(reverse("keys:edit", args=[team.slug, member_key.pk])).content.decode()

    assert "<h1>密钥设置</h1>" in page
    for title in ("基本信息", "限制", "预算"):
        assert f">{title}</h2>" in page
    assert '<button type="submit" class="btn btn--primary">更新</button>' in page
    assert "名称用于帮助你识别密钥的用途。" in page
    assert "分组决定密钥可以使用哪些模型" in page
    assert "<strong>启用</strong>" in page
    assert "Update" not in page


def test_a_form_error_in_chinese_and_nothing_saved(team, member, member_key, unchanged):
    client = signed_in(member)
    switch(client, "zh-hans")
    events = AuditEvent.objects.count()

    response = client.post(
        reverse("keys:edit", args=[team.slug, member_key.pk]),
        {
            "name": "cc-main",
            "group": member_key.group_id,
            "status": "enabled",
            "rate_limit": "fast",
        },
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert RATE_LIMIT_ZH in page
    assert "请修正下方标出的字段。未保存任何内容。" in page
    assert ApiKey.objects.get(pk=member_key.pk).rate_limit == ""
    assert AuditEvent.objects.count() == events


def test_the_same_form_error_in_english_by_default(team, member, member_key, unchanged):
    response = signed_in(member).post(
        reverse("keys:edit", args=[team.slug, member_key.pk]),
        {
            "name": "cc-main",
            "group": member_key.group_id,
            "status": "enabled",
            "rate_limit": "fast",
        },
    )

    assert RATE_LIMIT_MESSAGE in response.content.decode()


def test_a_saved_change_is_confirmed_in_chinese(team, member, member_key):
    client = signed_in(member)
    switch(client, "zh-hans")

    response = client.post(
        reverse("keys:edit", args=[team.slug, member_key.pk]),
        {"name": "cc-renamed", "group": member_key.group_id, "status": "enabled"},
        follow=True,
    )

    assert "已保存。更改立即生效。" in response.content.decode()
    assert ApiKey.objects.get(pk=member_key.pk).name == "cc-renamed"


def test_money_stays_in_us_dollars_in_chinese(team, member, group):
    key = make_key(
        team=team, owner=member, group=group, actor=member, quota_limit_usd=Decimal("1234.5")
    ).key
    client = signed_in(member)
    switch(client, "zh-hans")

    page = client.get(reverse("keys:detail", args=[team.slug, key.pk])).content.decode()

    assert "<dt>额度限制</dt><dd>$1,234.50</dd>" in page


def test_times_in_chinese():
    moment = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)

    with translation.override("zh-hans"):
        assert zone_time(moment, "Asia/Shanghai") == "12月8日 星期二 00:00 CST"
        assert ago(datetime(2020, 1, 1, tzinfo=UTC)).endswith("前")
    with translation.override("en"):
        assert zone_time(moment, "Asia/Shanghai") == "Tue 8 Dec 00:00 CST"
