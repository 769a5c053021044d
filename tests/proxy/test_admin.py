"""The staff admin for channels (credential write-only) and the routes inline on groups."""

import logging

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.core.cache import cache

from core.keyspace import snapshot_cache_key
from keys.admin import GroupAdmin
from keys.models import AuditEvent, Group
from proxy.admin import ChannelAdmin, GroupWithRoutesAdmin
from proxy.models import Channel, Route
from proxy.services import channel_save
from tests.admin_pages import assert_sent_to_login, url
from tests.audit_trail import audit_rows

SECRET = "sk-ant-upstream-secret-0123456789"


@pytest.fixture
def channel(db) -> Channel:
    return channel_save(
        channel=Channel(
            name="anthropic-main", provider="anthropic", base_url="https://api.example"
        ),
        credential=SECRET,
    )


@pytest.fixture
def route(group, channel) -> Route:
    return Route.objects.create(group=group, channel=channel, priority=100)


@pytest.fixture
def admin_pages(channel, route, group):
    return [
        url("proxy_channel_changelist"),
        url("proxy_channel_add"),
        url("proxy_channel_change", channel.pk),
        url("proxy_channel_history", channel.pk),
        url("proxy_channel_delete", channel.pk),
        url("keys_group_changelist"),
        url("keys_group_add"),
        url("keys_group_change", group.pk),
    ]


def test_every_page_renders_for_staff_without_the_credential(admin_client, admin_pages, channel):
    for page in admin_pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert SECRET not in response.content.decode(), page
        assert channel.encrypted_credential not in response.content.decode(), page


def test_non_staff_member_is_sent_to_login(client, member, admin_pages):
    client.force_login(member)
    assert_sent_to_login(client, admin_pages)


def test_anonymous_is_sent_to_login(client, admin_pages):
    assert_sent_to_login(client, admin_pages)


def test_group_admin_is_the_one_with_routes():
    registered = admin.site.get_model_admin(Group)
    assert type(registered) is GroupWithRoutesAdmin
    assert isinstance(registered, GroupAdmin)


# --- channels -------------------------------------------------------------------------------


def channel_data(channel: Channel | None = None, **overrides) -> dict:
    data = {
        "name": channel.name if channel else "openai-main",
        "provider": channel.provider if channel else "openai",
        "base_url": channel.base_url if channel else "https://api.openai.example",
        "is_active": "on",
        "timeout_seconds": channel.timeout_seconds if channel else 600,
        "new_credential": "",
    }
    data.update(overrides)
    return data


def test_credential_set_column(admin_client, channel):
    bare = channel_save(channel=Channel(name="local", provider="mock"))
    channel_admin = ChannelAdmin(Channel, admin_site=None)

    assert channel_admin.credential_set(channel) is True
    assert channel_admin.credential_set(bare) is False
    response = admin_client.get(url("proxy_channel_changelist"))
    assert [header["text"] for header in response.context["result_headers"]][-2] == (
        "credential set"
    )


def test_the_credential_input_is_a_password_field_that_renders_empty(admin_client, channel):
    response = admin_client.get(url("proxy_channel_change", channel.pk))

    form = response.context["adminform"].form
    assert not {"credential", "encrypted_credential"} & set(form.fields)
    assert not {"credential", "encrypted_credential"} & set(form.initial)
    html = str(form["new_credential"])
    assert 'type="password"' in html
    assert "value=" not in html


def test_blank_credential_keeps_the_stored_one(admin_client, channel):
    response = admin_client.post(
        url("proxy_channel_change", channel.pk), channel_data(channel, timeout_seconds=30)
    )

    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.decrypt_credential(), channel.timeout_seconds) == (SECRET, 30)


def test_new_credential_replaces_the_stored_one_and_is_never_shown(admin_client, channel, caplog):
    new_secret = "sk-ant-rotated-upstream-9876543210"

    with caplog.at_level(logging.DEBUG):
        response = admin_client.post(
            url("proxy_channel_change", channel.pk),
            channel_data(channel, new_credential=new_secret),
        )

    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.decrypt_credential() == new_secret
    assert new_secret not in caplog.text
    # Error reports, should one be sent for this request, show the field as stars.
    assert response.wsgi_request.sensitive_post_parameters == ("new_credential",)
    assert LogEntry.objects.get().get_change_message() == "Changed New credential."
    for page in (
        url("proxy_channel_change", channel.pk),
        url("proxy_channel_history", channel.pk),
        url("proxy_channel_changelist"),
    ):
        assert new_secret not in admin_client.get(page).content.decode(), page


def test_clearing_the_credential(admin_client, channel):
    response = admin_client.post(
        url("proxy_channel_change", channel.pk), channel_data(channel, clear_credential="on")
    )

    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.encrypted_credential == ""


def test_new_and_clear_together_are_refused(admin_client, channel):
    response = admin_client.post(
        url("proxy_channel_change", channel.pk),
        channel_data(channel, new_credential="sk-other", clear_credential="on", timeout_seconds=5),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "Enter a new credential or remove the stored one, not both."
    ]
    assert "sk-other" not in response.content.decode()
    channel.refresh_from_db()
    assert (channel.decrypt_credential(), channel.timeout_seconds) == (SECRET, 600)


def test_a_refused_form_does_not_echo_the_typed_credential(admin_client, channel):
    typed = "sk-ant-typed-but-refused-000111"

    response = admin_client.post(
        url("proxy_channel_change", channel.pk),
        channel_data(channel, new_credential=typed, timeout_seconds=0),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "timeout_seconds": ["Ensure this value is greater than or equal to 1."]
    }
    assert typed not in response.content.decode()
    channel.refresh_from_db()
    assert channel.decrypt_credential() == SECRET


def test_add_a_channel_with_a_credential(admin_client, db):
    response = admin_client.post(
        url("proxy_channel_add"), channel_data(new_credential="sk-openai-new-123")
    )

    assert response.status_code == 302
    channel = Channel.objects.get()
    assert (channel.name, channel.provider, channel.decrypt_credential()) == (
        "openai-main",
        "openai",
        "sk-openai-new-123",
    )


def test_add_a_channel_without_a_credential(admin_client, db):
    response = admin_client.post(url("proxy_channel_add"), channel_data(provider="mock"))

    assert response.status_code == 302
    assert Channel.objects.get().encrypted_credential == ""


def test_a_url_without_a_scheme_is_taken_as_https(admin_client, db):
    admin_client.post(url("proxy_channel_add"), channel_data(base_url="api.openai.example"))

    assert Channel.objects.get().base_url == "https://api.openai.example"


def test_saving_a_channel_drops_its_groups_cached_key_state(
    admin_client, channel, route, issued, django_capture_on_commit_callbacks
):
    cache.set(snapshot_cache_key(issued.key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url("proxy_channel_change", channel.pk), channel_data(channel))

    assert cache.get(snapshot_cache_key(issued.key.digest)) is None


def test_deleting_a_channel_drops_its_groups_cached_key_state(
    admin_client, channel, route, issued, django_capture_on_commit_callbacks
):
    cache.set(snapshot_cache_key(issued.key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url("proxy_channel_delete", channel.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Channel.objects.exists()
    assert not Route.objects.exists()
    assert cache.get(snapshot_cache_key(issued.key.digest)) is None


# --- groups and their routes ----------------------------------------------------------------


def group_data(group: Group, routes: list[dict], **overrides) -> dict:
    """The group change form; `routes` are route rows: existing ones carry their `id`."""
    data = {
        "name": group.name,
        "description": group.description,
        "multiplier": str(group.multiplier),
        "models": "\n".join(group.models),
        "is_active": "on" if group.is_active else "",
        "routes-TOTAL_FORMS": len(routes),
        "routes-INITIAL_FORMS": len([r for r in routes if "id" in r]),
        "routes-MIN_NUM_FORMS": 0,
        "routes-MAX_NUM_FORMS": 1000,
    }
    for index, route_row in enumerate(routes):
        for field, value in route_row.items():
            data[f"routes-{index}-{field}"] = value
        data[f"routes-{index}-group"] = group.pk
    data.update(overrides)
    return data


def test_group_saves_through_the_service_with_models_as_text(
    admin_client, group, issued, django_capture_on_commit_callbacks
):
    cache.set(snapshot_cache_key(issued.key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("keys_group_change", group.pk),
            group_data(group, [], models="claude-*\r\ngpt-4o, gpt-4o-mini", multiplier="0.25"),
        )

    assert response.status_code == 302
    group.refresh_from_db()
    assert group.models == ["claude-*", "gpt-4o", "gpt-4o-mini"]
    assert str(group.multiplier) == "0.2500"
    assert cache.get(snapshot_cache_key(issued.key.digest)) is None


def test_group_with_a_bad_multiplier_writes_nothing(admin_client, group):
    response = admin_client.post(
        url("keys_group_change", group.pk), group_data(group, [], multiplier="0", models="x")
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "multiplier": ["The multiplier must be greater than 0 (for example 0.25 or 1.0)."]
    }
    group.refresh_from_db()
    assert (str(group.multiplier), group.models) == ("1.0000", ["claude-*"])


def test_adding_a_route_drops_the_groups_cached_key_state(
    admin_client, group, channel, issued, django_capture_on_commit_callbacks
):
    cache.set(snapshot_cache_key(issued.key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("keys_group_change", group.pk),
            group_data(group, [{"channel": channel.pk, "priority": 10}]),
        )

    assert response.status_code == 302
    assert list(group.routes.values_list("channel__name", "priority")) == [("anthropic-main", 10)]
    assert cache.get(snapshot_cache_key(issued.key.digest)) is None


def test_changing_a_route_drops_the_groups_cached_key_state(
    admin_client, group, route, issued, django_capture_on_commit_callbacks
):
    cache.set(snapshot_cache_key(issued.key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            url("keys_group_change", group.pk),
            group_data(group, [{"id": route.pk, "channel": route.channel_id, "priority": 5}]),
        )

    route.refresh_from_db()
    assert route.priority == 5
    assert cache.get(snapshot_cache_key(issued.key.digest)) is None


def test_removing_a_route_drops_the_groups_cached_key_state(
    admin_client, group, route, issued, django_capture_on_commit_callbacks
):
    cache.set(snapshot_cache_key(issued.key.digest), "cached")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url("keys_group_change", group.pk),
            group_data(
                group,
                [{"id": route.pk, "channel": route.channel_id, "priority": 100, "DELETE": "on"}],
            ),
        )

    assert response.status_code == 302
    assert not Route.objects.exists()
    assert cache.get(snapshot_cache_key(issued.key.digest)) is None


def test_a_channel_routed_twice_to_a_group_is_refused(admin_client, group, route):
    response = admin_client.post(
        url("keys_group_change", group.pk),
        group_data(
            group,
            [
                {"id": route.pk, "channel": route.channel_id, "priority": 100},
                {"channel": route.channel_id, "priority": 200},
            ],
        ),
    )

    assert response.status_code == 200
    assert list(Route.objects.values_list("pk", flat=True)) == [route.pk]


@pytest.mark.parametrize(
    "lookup",
    [
        "encrypted_credential",
        "encrypted_credential__startswith",
        "encrypted_credential__exact",
        "encrypted_credential__isnull",
        "encrypted_credential__regex",
    ],
)
def test_filtering_channels_by_the_credential_is_refused(admin_client, channel, caplog, lookup):
    """One request per guessed prefix would otherwise read the column: a matching and a
    non-matching value get the same 400."""
    token = channel.encrypted_credential
    for value in (token[:8], "no-such-prefix"):
        with caplog.at_level(logging.ERROR, logger="django.security"):
            response = admin_client.get(url("proxy_channel_changelist"), {lookup: value})
        assert response.status_code == 400
    assert [record.getMessage() for record in caplog.records] == [
        f"Filtering by {lookup} not allowed"
    ] * 2


def test_filtering_groups_by_their_channels_credential_is_refused(admin_client, route, caplog):
    with caplog.at_level(logging.ERROR, logger="django.security"):
        response = admin_client.get(
            url("keys_group_changelist"), {"channels__encrypted_credential__startswith": "g"}
        )
    assert response.status_code == 400
    assert [record.getMessage() for record in caplog.records] == [
        "Filtering by channels__encrypted_credential__startswith not allowed"
    ]


def test_the_former_credential_column_is_no_filter_either(admin_client, channel):
    response = admin_client.get(
        url("proxy_channel_changelist"), {"credential__startswith": SECRET[:6]}
    )
    assert response.status_code == 302
    assert response.url == url("proxy_channel_changelist") + "?e=1"


def test_the_allowed_filters_still_work(admin_client, channel):
    response = admin_client.get(url("proxy_channel_changelist"), {"provider__exact": "anthropic"})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [channel]


# --- each admin action writes one audit row, with the staff user and no credential ----------


def staff_rows() -> list[tuple]:
    return audit_rows(actor__isnull=False)


def test_channel_changes_in_the_admin_are_audited_without_the_credential(admin_client, channel):
    admin_client.post(
        url("proxy_channel_change", channel.pk),
        channel_data(channel, new_credential="sk-ant-new-secret-9876", timeout_seconds=30),
    )
    admin_client.post(url("proxy_channel_delete", channel.pk), {"post": "yes"})

    assert staff_rows() == [
        (
            "channel.updated",
            "admin",
            None,
            "anthropic-main",
            {"timeout_seconds": [600, 30], "credential": ["set", "changed"]},
        ),
        ("channel.deleted", "admin", None, "anthropic-main", {}),
    ]
    everything = str(list(AuditEvent.objects.values()))
    assert "sk-ant-new-secret-9876" not in everything
    assert SECRET not in everything


def test_a_refused_channel_form_writes_no_row(admin_client, channel):
    response = admin_client.post(
        url("proxy_channel_change", channel.pk),
        channel_data(channel, new_credential="sk-x", clear_credential="on"),
    )

    assert response.status_code == 200
    assert staff_rows() == []


def test_route_changes_in_the_admin_are_one_row_per_save(admin_client, group, channel, route):
    backup = channel_save(channel=Channel(name="backup", provider="mock"))

    response = admin_client.post(
        url("keys_group_change", group.pk),
        group_data(
            group,
            [
                {"id": route.pk, "channel": channel.pk, "priority": 20},
                {"channel": backup.pk, "priority": 10},
            ],
        ),
    )

    assert response.status_code == 302
    assert staff_rows() == [
        (
            "group.routes_changed",
            "admin",
            None,
            group.name,
            {"routes": [["anthropic-main:100"], ["backup:10", "anthropic-main:20"]]},
        )
    ]
    # The admin's history still says what the save did.
    assert "Added route" in LogEntry.objects.get().get_change_message()
