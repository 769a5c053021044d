"""The REST API's messages follow each request's Accept-Language, as DRF's own do; a user's saved
portal language does not apply to it."""

import pytest
from django.test import Client
from django.urls import reverse

from keys.models import ApiKey
from keys.validators import RATE_LIMIT_MESSAGE

from ...factories import make_key

RATE_LIMIT_ZH = (
    "请按 60/m 的格式输入速率限制：至少为 1 的整数，后接 /s、/m、/h 或 /d"
    "（每秒、每分钟、每小时或每天）。"
)


@pytest.fixture
def member_key(team, member, group):
    return make_key(team=team, owner=member, group=group, actor=member, name="cc-main").key


def test_the_api_answers_a_validation_error_in_the_language_asked_for(api, member, member_key):
    client = api(member)

    chinese = client.patch(
        f"/api/v1/keys/{member_key.pk}/",
        {"rate_limit": "fast"},
        format="json",
        HTTP_ACCEPT_LANGUAGE="zh-Hans",
    )
    english = client.patch(f"/api/v1/keys/{member_key.pk}/", {"rate_limit": "fast"}, format="json")

    assert chinese.status_code == english.status_code == 400
    assert chinese.json() == {"rate_limit": [RATE_LIMIT_ZH]}
    assert english.json() == {"rate_limit": [RATE_LIMIT_MESSAGE]}
    assert ApiKey.objects.get(pk=member_key.pk).rate_limit == ""


def test_drf_own_messages_follow_accept_language_too(api, member, team):
    response = api(member).post(
        "/api/v1/keys/", {"team": team.slug}, format="json", HTTP_ACCEPT_LANGUAGE="zh-Hans"
    )

    assert response.status_code == 400
    assert response.json()["name"] == ["该字段是必填项。"]
    assert not ApiKey.objects.exists()


def test_a_saved_portal_language_does_not_change_the_api(api, member, member_key):
    portal = Client()
    portal.force_login(member)
    portal.post(reverse("keys:language"), {"language": "zh-hans"})

    response = api(member).patch(
        f"/api/v1/keys/{member_key.pk}/", {"rate_limit": "fast"}, format="json"
    )

    assert response.json() == {"rate_limit": [RATE_LIMIT_MESSAGE]}
