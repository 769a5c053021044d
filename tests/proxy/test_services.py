"""Channels and routes: the credential is write-only, routing changes reach the relay at once."""

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection

from core.keyspace import snapshot_cache_key
from keys.models import AuditEvent
from proxy.models import Channel, Route
from proxy.services import (
    channel_credentials_reencrypt,
    channel_delete,
    channel_save,
    channel_upsert,
    group_routes_set,
    routes_set,
)
from tests.audit_trail import audit_rows as rows

from ..factories import GroupFactory, UserFactory, make_key


@pytest.fixture
def channel(db):
    return channel_save(
        channel=Channel(name="anthropic-main", provider="anthropic", base_url="https://a.test"),
        credential="sk-ant-original",
    )


def stored_credential(channel: Channel) -> str:
    return Channel.objects.get(pk=channel.pk).decrypt_credential()


# --- channel_save ---------------------------------------------------------------------------


def test_channel_save_creates_with_the_credential(channel):
    saved = Channel.objects.get(name="anthropic-main")
    assert (saved.provider, saved.base_url, saved.is_active) == (
        "anthropic",
        "https://a.test",
        True,
    )
    assert saved.decrypt_credential() == "sk-ant-original"
    assert saved.has_credential
    assert saved.timeout_seconds == 600


def test_channel_save_keeps_the_credential_when_none_is_given(channel):
    fresh = Channel.objects.get(pk=channel.pk)
    fresh.timeout_seconds = 30
    channel_save(channel=fresh, credential=None)
    assert stored_credential(channel) == "sk-ant-original"
    assert Channel.objects.get(pk=channel.pk).timeout_seconds == 30


def test_channel_save_keeps_the_stored_credential_whatever_the_instance_holds(channel):
    edited = Channel.objects.get(pk=channel.pk)
    edited.encrypted_credential = ""
    edited.base_url = "https://b.test"
    channel_save(channel=edited)
    assert stored_credential(channel) == "sk-ant-original"
    assert Channel.objects.get(pk=channel.pk).base_url == "https://b.test"


def test_a_stale_instance_does_not_undo_a_newer_credential(channel):
    stale = Channel.objects.get(pk=channel.pk)
    channel_save(channel=Channel.objects.get(pk=channel.pk), credential="sk-ant-rotated")
    stale.timeout_seconds = 60
    channel_save(channel=stale)
    assert stored_credential(channel) == "sk-ant-rotated"
    assert stale.decrypt_credential() == "sk-ant-rotated"


def test_a_new_channel_keeps_the_credential_set_on_it(db):
    preset = channel_save(channel=Channel(name="first", provider="mock"), credential="preset")
    channel_save(
        channel=Channel(
            name="copy", provider="mock", encrypted_credential=preset.encrypted_credential
        )
    )
    assert Channel.objects.get(name="copy").decrypt_credential() == "preset"


def test_channel_save_replaces_the_credential_when_given(channel):
    channel_save(channel=channel, credential="sk-ant-new")
    assert stored_credential(channel) == "sk-ant-new"


def test_channel_save_can_clear_the_credential_explicitly(channel):
    channel_save(channel=channel, credential="")
    assert Channel.objects.get(pk=channel.pk).encrypted_credential == ""
    assert not Channel.objects.get(pk=channel.pk).has_credential


def test_the_database_holds_no_credential_in_clear(channel):
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM proxy_channel WHERE id = %s", [channel.pk])
        row = cursor.fetchone()
    assert not any("sk-ant-original" in str(value) for value in row)
    token = Channel.objects.get(pk=channel.pk).encrypted_credential
    assert token in row
    assert Fernet(settings.CHANNEL_CREDENTIAL_KEYS[0]).decrypt(token) == b"sk-ant-original"


def test_each_save_encrypts_afresh(channel):
    """Fernet tokens carry a random IV: two channels with one credential do not match."""
    twin = channel_save(
        channel=Channel(name="twin", provider="anthropic", base_url="https://a.test"),
        credential="sk-ant-original",
    )
    assert twin.encrypted_credential != Channel.objects.get(pk=channel.pk).encrypted_credential


def test_channel_save_takes_a_credential_of_the_longest_length(channel):
    channel_save(channel=channel, credential="k" * 500)
    assert stored_credential(channel) == "k" * 500


def test_channel_save_refuses_a_credential_too_long_and_writes_nothing(channel):
    before = Channel.objects.filter(pk=channel.pk).values().get()
    with pytest.raises(ValidationError) as caught:
        channel_save(channel=channel, credential="k" * 501)
    assert caught.value.message_dict == {
        "credential": ["Ensure this value has at most 500 characters (it has 501)."]
    }
    assert Channel.objects.filter(pk=channel.pk).values().get() == before


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"provider": "azure"}, {"provider": ["Value 'azure' is not a valid choice."]}),
        ({"base_url": "not a url"}, {"base_url": ["Enter a valid URL."]}),
        (
            {"timeout_seconds": 0},
            {"timeout_seconds": ["Ensure this value is greater than or equal to 1."]},
        ),
        (
            {"timeout_seconds": 3601},
            {"timeout_seconds": ["Ensure this value is less than or equal to 3600."]},
        ),
        ({"name": ""}, {"name": ["This field cannot be blank."]}),
    ],
)
def test_channel_save_refuses_bad_values_and_writes_nothing(channel, changes, errors):
    before = Channel.objects.filter(pk=channel.pk).values().get()
    for field, value in changes.items():
        setattr(channel, field, value)
    with pytest.raises(ValidationError) as caught:
        channel_save(channel=channel, credential="sk-ant-would-be-new")
    assert caught.value.message_dict == errors
    assert Channel.objects.filter(pk=channel.pk).values().get() == before


def test_channel_save_refuses_a_duplicate_name(channel):
    with pytest.raises(ValidationError) as caught:
        channel_save(channel=Channel(name="anthropic-main", provider="mock"))
    assert caught.value.message_dict == {"name": ["Channel with this Name already exists."]}
    assert Channel.objects.count() == 1


def test_channel_save_drops_cached_state_of_keys_routed_to_it(
    channel, django_capture_on_commit_callbacks
):
    routed, unrouted = GroupFactory(name="Routed"), GroupFactory(name="Unrouted")
    Route.objects.create(group=routed, channel=channel)
    routed_key, unrouted_key = make_key(group=routed).key, make_key(group=unrouted).key
    cache.set(snapshot_cache_key(routed_key.digest), "stale")
    cache.set(snapshot_cache_key(unrouted_key.digest), "fresh")
    channel.is_active = False
    with django_capture_on_commit_callbacks(execute=True):
        channel_save(channel=channel)
    assert cache.get(snapshot_cache_key(routed_key.digest)) is None
    assert cache.get(snapshot_cache_key(unrouted_key.digest)) == "fresh"


# --- channel_upsert -------------------------------------------------------------------------


def test_channel_upsert_creates(db):
    group = GroupFactory(name="Default")
    channel, created = channel_upsert(
        name="mock",
        provider="mock",
        credential="secret-1",
        timeout_seconds=30,
        groups=[group],
    )
    assert created is True
    saved = Channel.objects.get(name="mock")
    assert saved == channel
    assert (saved.provider, saved.base_url, saved.decrypt_credential(), saved.timeout_seconds) == (
        "mock",
        "",
        "secret-1",
        30,
    )
    assert list(Route.objects.values_list("group__name", "channel__name", "priority")) == [
        ("Default", "mock", 100)
    ]


def test_channel_upsert_updates_in_place(channel):
    updated, created = channel_upsert(
        name="anthropic-main",
        provider="openai",
        base_url="https://o.test",
        is_active=False,
    )
    assert created is False
    assert updated.pk == channel.pk
    assert Channel.objects.count() == 1
    saved = Channel.objects.get(pk=channel.pk)
    assert (saved.provider, saved.base_url, saved.is_active) == ("openai", "https://o.test", False)
    assert saved.decrypt_credential() == "sk-ant-original"
    assert saved.timeout_seconds == 600


def test_channel_upsert_replaces_the_credential_when_given(channel):
    channel_upsert(
        name="anthropic-main",
        provider="anthropic",
        base_url="https://a.test",
        credential="sk-ant-rotated",
    )
    assert stored_credential(channel) == "sk-ant-rotated"


def test_channel_upsert_without_groups_leaves_routes_alone(channel):
    group = GroupFactory(name="Default")
    routes_set(channel=channel, groups=[group])
    channel_upsert(name="anthropic-main", provider="anthropic", base_url="https://a.test")
    assert list(channel.routes.values_list("group__name", flat=True)) == ["Default"]


def test_channel_upsert_refuses_bad_values_and_writes_nothing(channel):
    before = Channel.objects.filter(pk=channel.pk).values().get()
    with pytest.raises(ValidationError) as caught:
        channel_upsert(name="anthropic-main", provider="azure", groups=[GroupFactory()])
    assert caught.value.message_dict == {"provider": ["Value 'azure' is not a valid choice."]}
    assert Channel.objects.filter(pk=channel.pk).values().get() == before
    assert not Route.objects.exists()
    with pytest.raises(ValidationError):
        channel_upsert(name="new", provider="mock", base_url="ftp//nope")
    assert not Channel.objects.filter(name="new").exists()


# --- routes_set -----------------------------------------------------------------------------


def test_routes_set_adds_and_removes_routes(channel):
    first, second, third = (GroupFactory(name=n) for n in ("First", "Second", "Third"))
    routes_set(channel=channel, groups=[first, second])
    assert set(channel.routes.values_list("group__name", flat=True)) == {"First", "Second"}
    routes_set(channel=channel, groups=[second, third])
    assert set(channel.routes.values_list("group__name", flat=True)) == {"Second", "Third"}
    routes_set(channel=channel, groups=[])
    assert not channel.routes.exists()


def test_routes_set_appends_after_the_group_s_other_channels_and_keeps_existing_priority(
    channel,
):
    group = GroupFactory(name="Default")
    backup = channel_save(channel=Channel(name="backup", provider="mock"))
    routes_set(channel=channel, groups=[group])
    routes_set(channel=backup, groups=[group])
    assert list(group.routes.values_list("channel__name", "priority")) == [
        ("anthropic-main", 100),
        ("backup", 110),
    ]
    Route.objects.filter(channel=channel).update(priority=5)
    routes_set(channel=channel, groups=[group])
    assert list(group.routes.values_list("channel__name", "priority")) == [
        ("anthropic-main", 5),
        ("backup", 110),
    ]


def test_routes_set_leaves_other_channels_routes_alone(channel):
    group = GroupFactory(name="Default")
    backup = channel_save(channel=Channel(name="backup", provider="mock"))
    routes_set(channel=backup, groups=[group])
    routes_set(channel=channel, groups=[group])
    routes_set(channel=channel, groups=[])
    assert list(group.routes.values_list("channel__name", flat=True)) == ["backup"]


def test_routes_set_drops_cached_state_of_added_and_removed_groups_only(
    channel, django_capture_on_commit_callbacks
):
    removed, added, kept, untouched = (
        GroupFactory(name=n) for n in ("Removed", "Added", "Kept", "Untouched")
    )
    routes_set(channel=channel, groups=[removed, kept])
    keys = {group.name: make_key(group=group).key for group in (removed, added, kept, untouched)}
    for key in keys.values():
        cache.set(snapshot_cache_key(key.digest), "stale")

    with django_capture_on_commit_callbacks(execute=True):
        routes_set(channel=channel, groups=[added, kept])
        assert cache.get(snapshot_cache_key(keys["Removed"].digest)) == "stale"

    for name in ("Removed", "Added", "Kept"):
        assert cache.get(snapshot_cache_key(keys[name].digest)) is None
    assert cache.get(snapshot_cache_key(keys["Untouched"].digest)) == "stale"


def test_group_routes_set_drops_the_group_s_cached_state(
    channel, django_capture_on_commit_callbacks
):
    group = GroupFactory(name="Default")
    Route.objects.create(group=group, channel=channel)
    key = make_key(group=group).key
    cache.set(snapshot_cache_key(key.digest), "stale")
    with django_capture_on_commit_callbacks(execute=True):
        group_routes_set(group=group, routes=[(channel, 50)], actor=None)
    assert cache.get(snapshot_cache_key(key.digest)) is None


# --- the audit trail: one row per action, never a credential --------------------------------


def audit_rows() -> list[tuple]:
    return rows(subject_type__in=["channel", "group"])


def test_channel_save_records_what_changed_and_only_that_a_credential_did(channel):
    staff = UserFactory(username="ops")
    fresh = Channel.objects.get(pk=channel.pk)
    fresh.timeout_seconds = 60
    channel_save(channel=fresh, credential="sk-ant-replaced", actor=staff)
    encrypted = Channel.objects.get(pk=channel.pk).encrypted_credential
    channel_save(channel=fresh, actor=staff)  # nothing changed: no row
    channel_save(channel=fresh, credential="", actor=None)

    assert audit_rows() == [
        (
            "channel.created",
            None,
            None,
            "anthropic-main",
            {
                "name": [None, "anthropic-main"],
                "provider": [None, "anthropic"],
                "base_url": [None, "https://a.test"],
                "is_active": [None, True],
                "timeout_seconds": [None, 600],
                "credential": ["not set", "set"],
            },
        ),
        (
            "channel.updated",
            "ops",
            None,
            "anthropic-main",
            {"timeout_seconds": [600, 60], "credential": ["set", "changed"]},
        ),
        ("channel.updated", None, None, "anthropic-main", {"credential": ["set", "not set"]}),
    ]
    everything = str(list(AuditEvent.objects.values()))
    assert "sk-ant" not in everything
    assert encrypted not in everything


def test_a_refused_channel_writes_no_row(channel):
    with pytest.raises(ValidationError):
        channel_save(channel=Channel(name="no-url", provider="anthropic"), credential="sk-x")
    with pytest.raises(ValidationError):
        channel_save(channel=Channel.objects.get(pk=channel.pk), credential="x" * 501)
    assert [row[0] for row in audit_rows()] == ["channel.created"]


def test_channel_upsert_with_groups_is_one_row(db):
    first, second = GroupFactory(name="First"), GroupFactory(name="Second")

    channel_upsert(name="mock", provider="mock", groups=[first])
    channel_upsert(name="mock", provider="mock", groups=[first, second])
    channel_upsert(name="mock", provider="mock", groups=[first, second])  # no change: no row

    assert audit_rows() == [
        (
            "channel.created",
            None,
            None,
            "mock",
            {
                "name": [None, "mock"],
                "provider": [None, "mock"],
                "base_url": [None, ""],
                "is_active": [None, True],
                "timeout_seconds": [None, 600],
                "groups": [[], ["First"]],
            },
        ),
        ("channel.updated", None, None, "mock", {"groups": [["First"], ["First", "Second"]]}),
    ]


def test_routes_set_records_the_groups_routed(channel):
    staff = UserFactory(username="ops")
    routes_set(channel=channel, groups=[GroupFactory(name="Default")], actor=staff)
    routes_set(channel=channel, groups=[], actor=staff)

    assert audit_rows()[1:] == [
        ("channel.updated", "ops", None, "anthropic-main", {"groups": [[], ["Default"]]}),
        ("channel.updated", "ops", None, "anthropic-main", {"groups": [["Default"], []]}),
    ]


def test_group_routes_set_records_the_routes_in_priority_order(channel):
    staff = UserFactory(username="ops")
    other = channel_save(channel=Channel(name="backup", provider="mock"))
    group = GroupFactory(name="Default")

    group_routes_set(group=group, routes=[(channel, 20), (other, 10)], actor=staff)
    group_routes_set(group=group, routes=[(channel, 20), (other, 10)], actor=staff)  # same
    group_routes_set(group=group, routes=[(other, 30)], actor=None)

    assert audit_rows()[2:] == [
        (
            "group.routes_changed",
            "ops",
            None,
            "Default",
            {"routes": [[], ["backup:10", "anthropic-main:20"]]},
        ),
        (
            "group.routes_changed",
            None,
            None,
            "Default",
            {"routes": [["backup:10", "anthropic-main:20"], ["backup:30"]]},
        ),
    ]
    assert list(group.routes.values_list("channel__name", "priority")) == [("backup", 30)]


def test_channel_delete_records_the_groups_it_served(channel):
    routes_set(channel=channel, groups=[GroupFactory(name="Default")])
    staff = UserFactory(username="ops")

    channel_delete(channel=channel, actor=staff)

    assert not Channel.objects.exists()
    assert audit_rows()[-1] == (
        "channel.deleted",
        "ops",
        None,
        "anthropic-main",
        {"groups": [["Default"], []]},
    )


def test_re_encryption_writes_one_system_row_per_channel_re_encrypted(db, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CHANNEL_CREDENTIAL_KEYS = [old]
    channel_upsert(name="first", provider="mock", credential="sk-first")
    channel_upsert(name="bare", provider="mock")
    settings.CHANNEL_CREDENTIAL_KEYS = [new, old]
    channel_upsert(name="current", provider="mock", credential="sk-current")
    before = len(audit_rows())

    channel_credentials_reencrypt()
    channel_credentials_reencrypt()  # nothing left to re-encrypt: no row

    assert audit_rows()[before:] == [
        (
            "channel.credentials_reencrypted",
            None,
            None,
            "first",
            {"credential": ["set", "changed"]},
        )
    ]
    assert "sk-first" not in str(list(AuditEvent.objects.values()))
