"""The usage pages and the usage API's 400s in Simplified Chinese (Accept-Language: zh-Hans);
money stays in US dollars with "$". The English wording is what the other tests assert."""

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from ..factories import make_key
from .factories import UsageEventFactory
from .test_explorer import roll_up

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-Hans"}
EXPORT = "/api/v1/usage/export.csv"


@pytest.fixture(autouse=True)
def _chinese(zh_catalogue):
    pass


@pytest.fixture
def spent(team, lead, group):
    key = make_key(team=team, owner=lead, group=group, name="lead-key").key
    day = timezone.localdate() - timedelta(days=1)
    event = UsageEventFactory(
        key=key,
        model="claude-sonnet-4-5",
        created_at=datetime.combine(day, time(10), tzinfo=UTC),
        input_tokens=1000,
        output_tokens=200,
        cost_usd=Decimal("1.000"),
        charged_usd=Decimal("1.500"),
        session_id="s-a",
        endpoint="messages",
    )
    roll_up([event])
    return key


def test_the_usage_explorer_in_chinese(client, team, lead, spent):
    client.force_login(lead)
    response = client.get(reverse("billing:team_usage", args=[team.slug]), **ZH)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>用量</h1>" in page
    assert ">下载 CSV</a>" in page
    assert '<label for="usage-range">时间范围</label>' in page
    assert '<option value="30d" selected>近 30 天</option>' in page
    assert '<h2 id="chart-heading">每日成本</h2>' in page
    assert '<h2 id="rows-heading">按成员</h2>' in page
    assert "<summary>以表格显示</summary>" in page
    assert '<th scope="col">缓存命中率</th>' in page
    # Money keeps its dollar sign.
    assert "<td>$1.50</td>" in page
    assert "Download CSV" not in page


def test_a_bad_parameter_is_named_in_chinese(client, team, lead):
    client.force_login(lead)
    response = client.get(
        reverse("billing:team_usage", args=[team.slug]),
        {"range": "custom", "since": "2026-13-01", "until": "2026-12-01", "metric": "x"},
        **ZH,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "部分查询参数无法识别，页面已改用默认值：" in page
    assert "<li><strong>since</strong>: 请按 YYYY-MM-DD 格式输入日期。</li>" in page
    assert (
        "<li><strong>metric</strong>: "
        "图表指标请从以下之一选择：cost, charge, requests, tokens。</li>" in page
    )


def test_the_key_usage_page_in_chinese(client, team, lead, spent):
    client.force_login(lead)
    response = client.get(reverse("billing:key_usage", args=[team.slug, spent.pk]), **ZH)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>lead-key 的用量</h1>" in page
    assert '<h2 id="daily-heading">每日消费</h2>' in page
    assert '<span class="legend legend--bar">扣费（美元）</span>' in page
    assert "$1.50 · 1 次请求" in page
    # The days under the bars in the locale's words (today's is the last label).
    today = timezone.localdate()
    assert f'text-anchor="middle">{today.month}月{today.day}日</text>' in page


def test_the_exports_400_follows_accept_language(team, lead):
    from rest_framework.test import APIClient

    from keys import services

    api = APIClient()
    token = services.api_token_create(user=lead, name="tests", actor=lead)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.plaintext}")
    response = api.get(EXPORT, {"team": team.slug, "since": "2026/01/01"}, **ZH)
    assert response.status_code == 400
    assert response.json() == {"since": ["请按 YYYY-MM-DD 格式输入日期。"]}
    response = api.get(EXPORT, {"team": team.slug, "member": "999"}, **ZH)
    assert response.status_code == 400
    assert response.json() == {"member": ["该团队中没有这个成员。"]}
    # Without the header, English as before.
    response = api.get(EXPORT, {"team": team.slug, "member": "999"})
    assert response.json() == {"member": ["No such member in this team."]}
