"""The embedded broker (core.broker): a message shows in the queue folder only once it is
written whole, so a worker polling the folder never takes it half-written."""

import pytest
from kombu import Connection
from kombu.transport import filesystem
from kombu.utils.json import dumps

from core import broker


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "processed").mkdir()
    return tmp_path


def connect(folder, transport) -> Connection:
    return Connection(
        "filesystem://",
        transport=transport,
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
    )


def put_while_a_worker_polls(channel, module, monkeypatch):
    """Put a message; while it is being written, a worker polls the queue. Returns what that
    poll got: an exception or a message."""
    seen = []

    def serialize_while_polled(payload):
        try:
            seen.append(channel._get("celery"))
        except Exception as error:
            seen.append(error)
        return dumps(payload)

    monkeypatch.setattr(module, "dumps", serialize_while_polled)
    channel._put("celery", {"task": "settle_usage"})
    monkeypatch.undo()
    return seen[0]


def test_a_message_is_invisible_until_written_whole(folder, monkeypatch):
    with connect(folder, "core.broker:Transport") as connection:
        channel = connection.default_channel
        during = put_while_a_worker_polls(channel, broker, monkeypatch)
        after = channel._get("celery")

    assert type(during).__name__ == "Empty"
    assert after == {"task": "settle_usage"}
    assert not list(folder.glob("*.msg*"))


def test_kombu_s_own_transport_hands_a_poller_the_empty_file(folder, monkeypatch):
    """Why core.broker exists: the same poll against kombu's transport reads an empty message."""
    with connect(folder, "filesystem") as connection:
        during = put_while_a_worker_polls(connection.default_channel, filesystem, monkeypatch)

    assert type(during).__name__ == "JSONDecodeError"


def test_the_embedded_settings_use_it(settings):
    from hcai.celery import app

    if not app.conf.broker_url.startswith("filesystem:"):
        pytest.skip("the embedded default (no REDIS_URL)")
    assert app.conf.broker_transport == "core.broker:Transport"
