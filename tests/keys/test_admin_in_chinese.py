"""The admin's own additions in Simplified Chinese (Accept-Language: zh-Hans): its actions,
the rotation's confirmation and its messages; Django's own admin strings are Django's."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from keys.models import ApiKey

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-Hans"}
CHANGELIST = reverse("admin:keys_apikey_changelist")


@pytest.fixture(autouse=True)
def _chinese(zh_catalogue):
    pass


def test_the_keys_admin_actions_and_the_rotation_confirmation_in_chinese(admin_client, issued):
    page = admin_client.get(CHANGELIST, **ZH).content.decode()
    assert "轮换所选 API 密钥（新密钥只显示一次）" in page
    assert "停用所选 API 密钥" in page

    response = admin_client.post(
        CHANGELIST, {"action": "rotate_keys", "_selected_action": [issued.key.pk]}, **ZH
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "确定轮换这些密钥吗？" in page
    assert 'value="是的，轮换"' in page
    assert "Rotate these keys?" not in page


def test_an_admin_action_message_in_chinese(admin_client, issued):
    response = admin_client.post(
        CHANGELIST, {"action": "disable_keys", "_selected_action": [issued.key.pk]}, **ZH
    )
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["已停用 1 个密钥。"]
    assert ApiKey.objects.get(pk=issued.key.pk).status == ApiKey.Status.DISABLED
