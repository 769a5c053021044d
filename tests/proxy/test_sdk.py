"""The official anthropic and openai SDKs, through the relay, to the fake upstream."""

from decimal import Decimal

import anthropic
import openai
import pytest

from billing.models import UsageDaily

from .conftest import ANTHROPIC_SECRET, CLAUDE, GPT, OPENAI_SECRET, usage_events
from .fake_upstream import Usage

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.mark.parametrize("bearer", [False, True], ids=["x-api-key", "authorization-bearer"])
def test_messages_create(relay, bearer):
    client = relay.anthropic(bearer=bearer)

    message = client.messages.create(model=CLAUDE, max_tokens=100, messages=MESSAGES)

    assert message.content[0].text == "Hello from the fake upstream."
    assert message.usage.input_tokens == 25
    assert message._request_id.startswith("req_")
    [received] = relay.primary.requests
    assert received.path == "/primary/v1/messages"
    assert received.headers["x-api-key"] == ANTHROPIC_SECRET
    assert "authorization" not in received.headers
    [event] = usage_events(key=relay.key)
    assert (event.model, event.status_code) == (CLAUDE, 200)
    assert (event.input_tokens, event.output_tokens) == (25, 12)
    assert (event.cache_creation_tokens, event.cache_read_tokens) == (10, 5)
    # (25 x 3 + 12 x 15 + 10 x 3.75 + 5 x 0.30) / 1e6 = 0.000294; x 1.5 = 0.000441
    assert event.cost_usd == Decimal("0.00029400")
    assert event.charged_usd == Decimal("0.00044100")
    assert event.request_id == message._request_id
    assert event.client_ip == "127.0.0.1"
    assert event.group == relay.group
    assert event.team == relay.key.team


def test_messages_stream(relay):
    client = relay.anthropic()

    with client.messages.stream(model=CLAUDE, max_tokens=100, messages=MESSAGES) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(texts) == "Hello from the fake upstream."
    assert final.usage.output_tokens == 12
    [event] = usage_events(key=relay.key)
    assert (event.input_tokens, event.output_tokens, event.status_code) == (25, 12, 200)
    assert (event.cache_creation_tokens, event.cache_read_tokens) == (10, 5)


# 1,000 cache writes, 600 of them kept for an hour.
ONE_HOUR_SPLIT = Usage(cache_creation_tokens=1000, cache_creation_1h_tokens=600)


def _messages(relay, *, stream: bool):
    client = relay.anthropic()
    if not stream:
        return client.messages.create(model=CLAUDE, max_tokens=100, messages=MESSAGES)
    with client.messages.stream(model=CLAUDE, max_tokens=100, messages=MESSAGES) as answer:
        list(answer.text_stream)
        return answer.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_one_hour_cache_writes_are_recorded_and_priced_at_their_own_rate(relay, stream):
    relay.primary.usage = ONE_HOUR_SPLIT

    message = _messages(relay, stream=stream)

    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 600
    [event] = usage_events(key=relay.key)
    assert (event.cache_creation_tokens, event.cache_creation_1h_tokens) == (1000, 600)
    # (25 x 3 + 12 x 15 + 400 x 3.75 + 600 x 6 + 5 x 0.30) / 1e6 = 0.0053565; x 1.5
    assert event.cost_usd == Decimal("0.00535650")
    assert event.charged_usd == Decimal("0.00803475")
    [daily] = UsageDaily.objects.filter(key=relay.key)
    assert (daily.cache_creation_tokens, daily.cache_creation_1h_tokens) == (1000, 600)
    assert daily.charged_usd == Decimal("0.00803475")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cache_writes_without_the_split_are_priced_as_before(relay, stream):
    relay.primary.usage = Usage(cache_creation_tokens=1000)

    _messages(relay, stream=stream)

    [event] = usage_events(key=relay.key)
    assert (event.cache_creation_tokens, event.cache_creation_1h_tokens) == (1000, 0)
    # (25 x 3 + 12 x 15 + 1000 x 3.75 + 5 x 0.30) / 1e6 = 0.0040065; x 1.5
    assert event.cost_usd == Decimal("0.00400650")
    assert event.charged_usd == Decimal("0.00600975")


def test_count_tokens(relay):
    counted = relay.anthropic().messages.count_tokens(model=CLAUDE, messages=MESSAGES)

    assert counted.input_tokens == 25
    [received] = relay.primary.requests
    assert received.path == "/primary/v1/messages/count_tokens"
    # Counting is free: recorded, with no tokens and no charge.
    [event] = usage_events(key=relay.key)
    assert (event.input_tokens, event.output_tokens, event.charged_usd) == (0, 0, Decimal(0))


def test_models_list_both_sdks(relay, prices):
    anthropic_models = relay.anthropic().models.list()
    openai_models = relay.openai().models.list()

    assert [model.id for model in anthropic_models] == [CLAUDE, GPT]
    assert [model.id for model in openai_models] == [CLAUDE, GPT]
    assert anthropic_models.data[0].display_name == CLAUDE
    assert anthropic_models.data[0].created_at == prices[CLAUDE].updated_at
    assert openai_models.data[1].owned_by == "hcai"
    # Listing models is not a proxied request: nothing was sent upstream or recorded.
    assert relay.primary.requests == []


def test_models_retrieve_both_sdks(relay, prices):
    claude = relay.anthropic().models.retrieve(CLAUDE)
    gpt = relay.openai().models.retrieve(GPT)

    assert (claude.id, claude.display_name, claude.type) == (CLAUDE, CLAUDE, "model")
    assert claude.created_at == prices[CLAUDE].updated_at
    assert (gpt.id, gpt.object, gpt.owned_by) == (GPT, "model", "hcai")
    assert gpt.created == int(prices[GPT].updated_at.timestamp())
    with pytest.raises(anthropic.NotFoundError, match="Model “claude-nope” is not available"):
        relay.anthropic().models.retrieve("claude-nope")
    with pytest.raises(openai.NotFoundError):
        relay.openai().models.retrieve("gpt-nope")
    assert relay.primary.requests == []


def test_responses_create(relay):
    response = relay.openai().responses.create(model=GPT, input="Say hello", max_output_tokens=50)

    assert response.output_text == "Hello from the fake upstream."
    [received] = relay.primary.requests
    assert received.path == "/primary/v1/responses"
    assert received.headers["authorization"] == f"Bearer {OPENAI_SECRET}"
    assert received.json() == {"model": GPT, "input": "Say hello", "max_output_tokens": 50}
    [event] = usage_events(key=relay.key)
    # input_tokens 30 includes 5 cached: 25 uncached input, 5 cache reads.
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (25, 5, 12)
    assert (event.model, event.status_code, event.request_id) == (
        GPT,
        200,
        response._request_id,
    )


def test_responses_stream(relay):
    with relay.openai().responses.stream(model=GPT, input="Say hello") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()

    assert "".join(deltas) == final.output_text == "Hello from the fake upstream."
    assert final.usage.output_tokens == 12
    assert relay.primary.requests[0].json()["stream"] is True
    [event] = usage_events(key=relay.key)
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (25, 5, 12)


def test_chat_completions_create(relay):
    completion = relay.openai().chat.completions.create(model=GPT, messages=MESSAGES)

    assert completion.choices[0].message.content == "Hello from the fake upstream."
    [received] = relay.primary.requests
    # The channel's base URL ends in /v1: the relay does not double it.
    assert received.path == "/primary/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {OPENAI_SECRET}"
    assert "x-api-key" not in received.headers
    [event] = usage_events(key=relay.key)
    # prompt_tokens 30 includes 5 cached: 25 uncached input, 5 cache reads.
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (25, 5, 12)
    assert event.cache_creation_tokens == 0


def test_chat_completions_stream_without_usage_asked(relay):
    stream = relay.openai().chat.completions.create(model=GPT, messages=MESSAGES, stream=True)
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from the fake upstream."
    )
    # The relay asked the upstream for usage, and removed the usage chunk the client did not
    # ask for.
    assert all(chunk.choices for chunk in chunks)
    assert relay.primary.requests[0].json()["stream_options"] == {"include_usage": True}
    [event] = usage_events(key=relay.key)
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens) == (25, 5, 12)


def test_chat_completions_stream_with_usage_asked(relay):
    stream = relay.openai().chat.completions.create(
        model=GPT, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12
    [event] = usage_events(key=relay.key)
    assert event.output_tokens == 12
