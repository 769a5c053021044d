"""Forwarding: headers and body as sent, credentials replaced, failover, upstream failures,
streaming without buffering, client disconnects, and the local mock provider."""

import http.client
import json
import logging
import socket
import threading
import time

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings

from core import keyspace
from core.keyspace import snapshot_cache_key
from keys import services
from keys.models import digest_key
from proxy.models import Channel
from proxy.services import channel_save, channel_upsert
from tests.factories import GroupFactory

from .conftest import ANTHROPIC_SECRET, CLAUDE, GPT, OPENAI_SECRET, usage_events

MESSAGE = {"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
STREAM = {**MESSAGE, "stream": True}
CHAT = {"model": GPT, "messages": [{"role": "user", "content": "Hi"}]}


def route_group(relay, member, *channels: tuple[str, str, str], **group_fields):
    """Move the relay's key to a new group routed to `channels` (name, provider, base URL), in
    that order."""
    group = GroupFactory(name="Failover", models=["claude-*", "gpt-*"], **group_fields)
    for name, provider, base_url, *timeout in channels:
        channel_upsert(
            name=name,
            provider=provider,
            base_url=base_url,
            credential=f"credential-of-{name}",
            timeout_seconds=timeout[0] if timeout else None,
            groups=[group],
        )
    services.api_key_update(key=relay.key, actor=member, group=group)
    return group


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- what goes upstream ---------------------------------------------------------------------


def test_headers_forwarded_and_credential_replaced(relay):
    body = json.dumps(MESSAGE, indent=3).encode() + b"\n"

    response = relay.call(
        "POST",
        "/v1/messages?beta=true",
        body,
        {
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "prompt-caching-2024-07-31,oauth-2025-04-20",
            "x-custom-trace": "abc123",
            "user-agent": "claude-cli/2.1.197 (external, cli)",
            "x-claude-code-session-id": "session-42",
            "connection": "keep-alive, x-hop-only",
            "x-hop-only": "must not travel",
            "keep-alive": "timeout=5",
            "proxy-authorization": "Basic c2VjcmV0",
            "cookie": "sessionid=portal-session",
            "content-type": "application/json",
        },
    )

    assert response.status == 200
    [received] = relay.primary.requests
    assert received.body == body  # byte for byte, indentation and trailing newline included
    assert received.query == "beta=true"
    headers = received.headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31,oauth-2025-04-20"
    assert headers["x-custom-trace"] == "abc123"
    assert headers["user-agent"] == "claude-cli/2.1.197 (external, cli)"
    assert headers["x-api-key"] == ANTHROPIC_SECRET
    for dropped in ("x-hop-only", "keep-alive", "proxy-authorization", "cookie", "authorization"):
        assert dropped not in headers
    assert relay.plaintext not in json.dumps(headers)
    [event] = usage_events(key=relay.key)
    assert event.session_id == "session-42"


def test_bearer_credential_replaced_for_openai(relay):
    response = relay.call(
        "POST",
        "/v1/chat/completions",
        CHAT,
        {"authorization": f"Bearer {relay.plaintext}", "openai-beta": "assistants=v2"},
        key=None,
    )

    assert response.status == 200
    headers = relay.primary.requests[0].headers
    assert headers["authorization"] == f"Bearer {OPENAI_SECRET}"
    assert headers["openai-beta"] == "assistants=v2"
    assert "x-api-key" not in headers


def test_channel_secrets_never_reach_the_client(relay):
    response = relay.call("POST", "/v1/messages", MESSAGE)

    assert response.status == 200
    seen = response.body.decode() + json.dumps(response.headers)
    for secret in (ANTHROPIC_SECRET, relay.primary.url, "127.0.0.1:", "org-secret"):
        assert secret not in seen
    assert "anthropic-organization-id" not in response.headers
    # The request id is the relay's, not the vendor's.
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["request-id"] != "req_upstream_secret"


def test_channel_secrets_stay_out_of_the_shared_cache(relay):
    """Key snapshots live in the shared cache; channel URLs and credentials live only in each
    worker's memory (proxy.channels)."""
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    assert relay.call("POST", "/v1/chat/completions", CHAT).status == 200

    digest = digest_key(relay.plaintext)
    if settings.REDIS is not None:
        raw = settings.REDIS.sync_client().get(keyspace.snapshot(digest))
    else:
        raw = cache.get(snapshot_cache_key(digest))
    snapshot = json.loads(raw)
    assert [channel["name"] for channel in snapshot["channels"]] == [
        "anthropic-primary",
        "openai-primary",
    ]
    for secret in (ANTHROPIC_SECRET, OPENAI_SECRET, relay.primary.url):
        assert secret.encode() not in raw


def test_an_edited_channel_is_used_as_edited_by_the_next_request(relay):
    backup = relay.upstream.backend("backup")
    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    channel = Channel.objects.get(name="anthropic-primary")
    channel.base_url = backup.url

    channel_save(channel=channel, credential="sk-ant-rotated-credential")

    assert relay.call("POST", "/v1/messages", MESSAGE).status == 200
    assert [request.headers["x-api-key"] for request in relay.primary.requests] == [
        ANTHROPIC_SECRET
    ]
    assert [request.headers["x-api-key"] for request in backup.requests] == [
        "sk-ant-rotated-credential"
    ]


def test_client_request_id_reused_when_well_formed(relay):
    response = relay.call("POST", "/v1/messages", MESSAGE, {"x-request-id": "lb-0123456789"})

    assert response.headers["request-id"] == "lb-0123456789"
    assert response.headers["x-request-id"] == "lb-0123456789"


# --- failover and upstream failures ---------------------------------------------------------


@pytest.mark.parametrize("failure", ["status-500", "connection-refused", "timeout"])
def test_failover_to_the_second_channel(relay, member, caplog, failure):
    backup = relay.upstream.backend("backup")
    if failure == "status-500":
        first = (relay.upstream.backend("broken", status=500).url, None)
    elif failure == "connection-refused":
        first = (closed_port_url(), None)
    else:
        first = (relay.upstream.backend("slow", delay_seconds=3).url, 1)
    route_group(
        relay,
        member,
        ("first", "anthropic", first[0], *([first[1]] if first[1] else [])),
        ("second", "anthropic", backup.url),
    )

    with caplog.at_level(logging.WARNING, logger="proxy"):
        message = relay.anthropic().messages.create(**MESSAGE)

    assert message.content[0].text == "Hello from the fake upstream."
    assert backup.requests[0].headers["x-api-key"] == "credential-of-second"
    [event] = usage_events(key=relay.key)
    assert (event.status_code, event.output_tokens) == (200, 12)
    [warning] = [
        r.getMessage() for r in caplog.records if r.name == "proxy" and r.levelno >= logging.WARNING
    ]
    assert warning.startswith("Channel first failed (")
    assert warning.endswith("); trying the next")
    assert "127.0.0.1" not in warning and "credential" not in warning


UNREADABLE = (
    "Channel first: its stored credential cannot be decrypted with any key in "
    "CHANNEL_CREDENTIAL_KEYS. Put back the key it was encrypted with, or set a new credential."
)


def encrypt_with_a_lost_key(name: str) -> None:
    """Store the channel's credential encrypted with a key the relay does not have."""
    with override_settings(CHANNEL_CREDENTIAL_KEYS=[Fernet.generate_key().decode()]):
        channel_save(channel=Channel.objects.get(name=name), credential=f"credential-of-{name}")


def test_a_credential_no_key_decrypts_fails_over_and_is_logged_without_it(relay, member, caplog):
    backup = relay.upstream.backend("backup")
    unused = relay.upstream.backend("unused")
    route_group(
        relay, member, ("first", "anthropic", unused.url), ("second", "anthropic", backup.url)
    )
    encrypt_with_a_lost_key("first")

    with caplog.at_level(logging.WARNING, logger="proxy"):
        message = relay.anthropic().messages.create(**MESSAGE)

    assert message.content[0].text == "Hello from the fake upstream."
    assert unused.requests == []
    assert backup.requests[0].headers["x-api-key"] == "credential-of-second"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [UNREADABLE]
    assert "credential-of-first" not in caplog.text
    assert Channel.objects.get(name="first").encrypted_credential not in caplog.text


def test_a_credential_no_key_decrypts_on_the_only_channel(relay, member, caplog):
    unused = relay.upstream.backend("unused")
    route_group(relay, member, ("first", "anthropic", unused.url))
    encrypt_with_a_lost_key("first")

    with caplog.at_level(logging.WARNING, logger="proxy"):
        response = relay.call("POST", "/v1/messages", MESSAGE)

    assert response.status == 502
    assert response.json()["error"] == {
        "type": "api_error",
        "message": "No upstream channel of group “Failover” answered (1 tried). "
        "Try again in a moment.",
    }
    assert unused.requests == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [UNREADABLE]
    assert "credential-of-first" not in caplog.text


def test_upstream_500_on_the_only_channel(relay, member):
    broken = relay.upstream.backend("broken", status=500)
    route_group(relay, member, ("only", "anthropic", broken.url))

    anthropic = relay.call("POST", "/v1/messages", MESSAGE)

    assert anthropic.status == 502
    assert anthropic.json()["error"] == {
        "type": "api_error",
        "message": "No upstream channel of group “Failover” answered (1 tried). "
        "Try again in a moment.",
    }
    [event] = usage_events(key=relay.key)
    assert (event.status_code, event.input_tokens, event.output_tokens) == (502, 0, 0)
    assert event.charged_usd == 0


def test_upstream_timeout_on_the_only_channel(relay, member):
    slow = relay.upstream.backend("slow", delay_seconds=3)
    route_group(relay, member, ("only", "openai", slow.url + "/v1", 1))

    started = time.monotonic()
    openai = relay.call("POST", "/v1/chat/completions", CHAT)

    assert time.monotonic() - started < 2.5
    assert openai.status == 502
    assert openai.json()["error"]["code"] == "upstream_unavailable"
    [event] = usage_events(key=relay.key)
    assert event.status_code == 502


def test_upstream_overloaded_is_passed_on_as_529(relay, member):
    overloaded = relay.upstream.backend("overloaded", status=529)
    route_group(relay, member, ("only", "anthropic", overloaded.url))

    response = relay.call("POST", "/v1/messages", MESSAGE)

    assert response.status == 529
    assert response.json()["error"] == {
        "type": "overloaded_error",
        "message": "The upstream is overloaded. Try again in a moment.",
    }


def test_upstream_client_error_is_passed_through_without_failover(relay, member):
    rejecting = relay.upstream.backend("rejecting", status=400)
    backup = relay.upstream.backend("backup")
    route_group(
        relay, member, ("first", "anthropic", rejecting.url), ("second", "anthropic", backup.url)
    )

    response = relay.call("POST", "/v1/messages", MESSAGE)

    assert response.status == 400
    assert response.json()["error"]["message"] == "fake upstream failure"
    assert backup.requests == []
    [event] = usage_events(key=relay.key)
    assert event.status_code == 400


def test_group_without_a_channel_for_the_api(relay, member):
    backend = relay.upstream.backend("anthropic-only")
    route_group(relay, member, ("anthropic-only", "anthropic", backend.url))

    response = relay.call("POST", "/v1/chat/completions", CHAT)

    assert response.status == 502
    assert response.json()["error"]["message"] == (
        "Group “Failover” has no channel for the OpenAI API. Ask an administrator to route one."
    )
    [event] = usage_events(key=relay.key)
    assert event.status_code == 502


# --- streaming ------------------------------------------------------------------------------


def read_events(response: http.client.HTTPResponse):
    """Yield SSE events as they arrive on the socket (no read-ahead)."""
    buffer = b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            yield event


def read_held_stream(response: http.client.HTTPResponse, upstream) -> list[bytes]:
    """Every event of a stream whose upstream (a fake_upstream Backend with
    hold_after_first_delta) holds it after the first text: that text must arrive while the
    upstream still holds, so nothing on the way buffers it; then the upstream is released and
    the rest is read."""
    received = []
    for event in read_events(response):
        received.append(event)
        if b'"Hello"' in event:
            break
    else:
        pytest.fail(f"the stream ended before its first text: {received}")
    assert upstream.finished_streams == 0
    upstream.release.set()
    return received + list(read_events(response))


def open_stream(relay, path: str, body: dict) -> tuple[http.client.HTTPConnection, object]:
    host, port = relay.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(
        "POST",
        path,
        json.dumps(body).encode(),
        {"x-api-key": relay.plaintext, "content-type": "application/json"},
    )
    return connection, connection.getresponse()


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/messages", STREAM), ("/v1/chat/completions", {**CHAT, "stream": True})],
    ids=["anthropic", "openai"],
)
def test_stream_is_not_buffered(relay, path, body):
    """The upstream holds its stream after the first text until the test releases it: the
    client must already have that text, so nothing sits in a buffer."""
    relay.primary.hold_after_first_delta = True
    connection, response = open_stream(relay, path, body)
    try:
        assert response.status == 200
        assert response.getheader("content-type").startswith("text/event-stream")
        # What tells a buffering reverse proxy (nginx) to pass each event on at once.
        assert response.getheader("x-accel-buffering") == "no"
        received = read_held_stream(response, relay.primary)
    finally:
        connection.close()
    assert relay.primary.finished_streams == 1
    assert received[-1].endswith(b'message_stop"}') or received[-1] == b"data: [DONE]"


def test_client_disconnect_mid_stream_is_charged_for_what_was_produced(relay):
    relay.primary.hold_after_first_delta = True
    connection, response = open_stream(relay, "/v1/messages", STREAM)
    for event in read_events(response):
        if b'"Hello"' in event:
            break
    connection.close()
    response.close()

    [event] = usage_events(key=relay.key)
    relay.primary.release.set()
    # Input and cache tokens came with message_start; the output is estimated from the one
    # delta that was produced ("Hello": 5 characters, 2 tokens), not the full answer's 12.
    assert event.status_code == 499
    assert (event.input_tokens, event.cache_creation_tokens, event.cache_read_tokens) == (25, 10, 5)
    assert event.output_tokens == 2
    assert event.charged_usd > 0
    time.sleep(0.2)
    assert len(usage_events(timeout=0, key=relay.key)) == 1


def test_stream_events_arrive_whole_and_in_order(relay):
    relay.primary.pause_seconds = 0.01
    with relay.anthropic().messages.stream(**MESSAGE) as stream:
        kinds = [event.type for event in stream]

    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds.count("text") == 6


# --- the mock provider ----------------------------------------------------------------------


@pytest.fixture
def mock_group(relay, member):
    return route_group(relay, member, ("mock", "mock", ""))


MOCK_TEXT = (
    "Hello from the HCAI Keys mock channel, answering as {model}. No upstream was called: "
    "this reply is the same for every request, and its token counts are estimated from the "
    "request size."
)


def test_mock_messages(relay, mock_group):
    client = relay.anthropic()

    message = client.messages.create(**MESSAGE)
    with client.messages.stream(**MESSAGE) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    counted = client.messages.count_tokens(model=CLAUDE, messages=MESSAGE["messages"])

    text = MOCK_TEXT.format(model=CLAUDE)
    tokens = -(-len(text) // 4)  # four characters a token, rounded up
    assert message.content[0].text == text
    assert streamed == text
    assert final.usage.output_tokens == message.usage.output_tokens == tokens
    assert counted.input_tokens > 0
    events = usage_events(key=relay.key, count=3)
    assert [(e.output_tokens, e.status_code) for e in events] == [
        (tokens, 200),
        (tokens, 200),
        (0, 200),
    ]
    assert events[0].input_tokens == message.usage.input_tokens


def test_mock_chat(relay, mock_group):
    client = relay.openai()

    completion = client.chat.completions.create(**CHAT)
    chunks = list(client.chat.completions.create(**CHAT, stream=True))
    with_usage = list(
        client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    )

    text = MOCK_TEXT.format(model=GPT)
    assert completion.choices[0].message.content == text
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert all(chunk.choices for chunk in chunks)
    assert with_usage[-1].usage.completion_tokens == completion.usage.completion_tokens
    events = usage_events(key=relay.key, count=3)
    assert {event.output_tokens for event in events} == {completion.usage.completion_tokens}


def test_mock_responses(relay, mock_group):
    client = relay.openai()

    response = client.responses.create(model=GPT, input="Say hello")
    events = list(client.responses.create(model=GPT, input="Say hello", stream=True))

    text = MOCK_TEXT.format(model=GPT)
    assert response.output_text == text
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == response.usage.output_tokens
    recorded = usage_events(key=relay.key, count=2)
    assert {event.output_tokens for event in recorded} == {response.usage.output_tokens}
    # Input estimated from each request's size (the streamed one also says "stream": true).
    assert {event.input_tokens for event in recorded} == {
        response.usage.input_tokens,
        events[-1].response.usage.input_tokens,
    }


def test_concurrent_streams_all_complete(relay):
    relay.primary.pause_seconds = 0.02
    results: list[str] = []

    def one() -> None:
        with relay.anthropic().messages.stream(**MESSAGE) as stream:
            results.append("".join(stream.text_stream))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert results == ["Hello from the fake upstream."] * 20
    assert len(usage_events(key=relay.key, count=20)) == 20
