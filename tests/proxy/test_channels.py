"""proxy.channels: each worker's table of channel URLs and credentials."""

import asyncio
import logging

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from proxy import channels
from proxy.channels import ChannelTable
from proxy.keystate import ChannelState, channel_version
from proxy.models import Channel
from proxy.services import channel_save


@pytest.fixture
def loads(monkeypatch):
    """Count the table's database loads."""
    counted = []
    load = channels._load

    def counting_load():
        counted.append(1)
        return load()

    monkeypatch.setattr(channels, "_load", counting_load)
    return counted


def state(channel: Channel, *, version: int | None = None) -> ChannelState:
    return ChannelState(
        id=channel.pk,
        name=channel.name,
        provider=channel.provider,
        timeout_seconds=channel.timeout_seconds,
        version=channel_version(channel) if version is None else version,
    )


def make_channel(name: str, credential: str) -> Channel:
    return channel_save(
        channel=Channel(name=name, provider="anthropic", base_url=f"https://{name}.test"),
        credential=credential,
    )


def test_loaded_once_then_served_from_memory(transactional_db, loads):
    channel = make_channel("main", "sk-first")
    table = ChannelTable()

    async def lookups():
        return [await table.secrets(state(channel)) for _ in range(3)]

    found = asyncio.run(lookups())

    assert [(s.base_url, s.credential) for s in found] == [("https://main.test", "sk-first")] * 3
    assert len(loads) == 1


def test_a_newer_version_reloads_the_table(transactional_db, loads):
    channel = make_channel("main", "sk-first")
    table = ChannelTable()
    asyncio.run(table.secrets(state(channel)))

    edited = channel_save(channel=channel, credential="sk-second")
    found = asyncio.run(table.secrets(state(edited)))

    assert found.credential == "sk-second"
    assert len(loads) == 2


def test_a_channel_gone_since_the_snapshot_is_none_and_reloaded_for_once(transactional_db, loads):
    channel = make_channel("main", "sk-first")
    gone = state(channel)
    Channel.objects.filter(pk=channel.pk).delete()
    table = ChannelTable()

    async def lookups():
        return [await table.secrets(gone) for _ in range(5)]

    assert asyncio.run(lookups()) == [None] * 5
    assert len(loads) == 1


def test_an_inactive_channel_is_not_loaded(transactional_db):
    channel = make_channel("main", "sk-first")
    channel.is_active = False
    channel_save(channel=channel)

    assert asyncio.run(ChannelTable().secrets(state(channel))) is None


def test_a_credential_no_key_decrypts_is_left_out_and_logged_by_channel_name(
    transactional_db, caplog
):
    readable = make_channel("readable", "sk-readable")
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[Fernet.generate_key().decode()]):
        lost = make_channel("lost", "sk-lost")
    table = ChannelTable()

    with caplog.at_level(logging.ERROR, logger="proxy.channels"):
        assert asyncio.run(table.secrets(state(lost))) is None
    assert asyncio.run(table.secrets(state(readable))).credential == "sk-readable"

    assert [record.getMessage() for record in caplog.records] == [
        "Channel lost: its stored credential cannot be decrypted with any key in "
        "CHANNEL_CREDENTIAL_KEYS. Put back the key it was encrypted with, or set a new credential."
    ]
    assert "sk-lost" not in caplog.text


def test_a_channel_without_a_credential_loads_with_none_and_no_error(transactional_db, caplog):
    bare = channel_save(
        channel=Channel(name="bare", provider="anthropic", base_url="https://bare.test")
    )

    with caplog.at_level(logging.ERROR, logger="proxy.channels"):
        found = asyncio.run(ChannelTable().secrets(state(bare)))

    assert (found.base_url, found.credential) == ("https://bare.test", "")
    assert caplog.records == []
