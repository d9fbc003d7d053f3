"""`track_anthropic` beyond `create`: beta stream, parse, tool runner, raw responses, local errors.

Every method goes through the one tracked request path; each test checks the
event's tokens field by field against the usage the fake provider sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pydantic
import pytest
from anthropic import AsyncAnthropic
from anthropic._response import AsyncAPIResponse

from fluxgate_async import FluxGate, tracking_of
from fluxgate_async._recording import Mode
from fluxgate_async.integrations.anthropic import track_anthropic
from fluxgate_async.testing import FakeCollector

from .helpers import recorded
from .servers import Answer, ProviderServer
from .test_anthropic import MESSAGES, message, message_events


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    """A loopback Anthropic API."""
    async with ProviderServer() as s:
        yield s


@pytest.fixture
async def raw(server: ProviderServer) -> AsyncIterator[AsyncAnthropic]:
    """An untracked client of the loopback API, without retries."""
    async with AsyncAnthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0) as c:
        yield c


class Answerer(pydantic.BaseModel):
    """A structured output."""

    answer: str


def tokens(event: dict[str, Any]) -> tuple[Any, ...]:
    """The event's input, output and cached tokens, and whether it was streamed."""
    usage = event["usage"]
    return (
        usage["inputTokens"],
        usage["outputTokens"],
        usage.get("cachedTokens"),
        usage["isStreamed"],
    )


async def test_streaming_is_required_records_nothing_then_the_stream_once(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """The SDK's local "Streaming is required" error records nothing; the streamed retry, once."""
    client = track_anthropic(raw, fg)
    with pytest.raises(ValueError, match="Streaming is required"):
        await client.beta.messages.create(
            model="claude-sonnet-4-6", max_tokens=64_000, messages=MESSAGES, stream=False
        )
    assert server.requests == []
    server.answer(Answer(events=message_events(output_tokens=12)))
    stream = await client.beta.messages.create(
        model="claude-sonnet-4-6", max_tokens=64_000, messages=MESSAGES, stream=True
    )
    async for _event in stream:
        pass
    [event] = await recorded(fg, collector)
    assert event["status"] == "SUCCESS"
    assert tokens(event) == (25, 12, 300, True)


async def test_beta_stream_helper_records_once(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """The `beta.messages.stream()` helper records one streamed event with the final usage."""
    client = track_anthropic(raw, fg, mode=mode)
    server.answer(Answer(events=message_events(output_tokens=9)))
    async with client.beta.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES
    ) as stream:
        assert await stream.get_final_text() == "Hi!"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (25, 9, 300, True)
    assert event["metadata"]["cacheWriteTokens"] == 100
    assert (tracking_of(stream) is not None) is (mode == "inline")


@pytest.mark.parametrize("beta", [False, True])
async def test_parse_records_once(
    raw: AsyncAnthropic,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
    mode: Mode,
    beta: bool,
) -> None:
    """`messages.parse` and `beta.messages.parse` record their usage."""
    client = track_anthropic(raw, fg, mode=mode)
    body = message(output_tokens=7)
    body["content"] = [{"type": "text", "text": '{"answer": "42"}'}]
    server.answer(Answer(body=body))
    messages = client.beta.messages if beta else client.messages
    parsed = await messages.parse(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES, output_format=Answerer
    )
    assert parsed.parsed_output == Answerer(answer="42")
    [event] = await recorded(fg, collector)
    assert tokens(event) == (25, 7, 300, False)
    assert (tracking_of(parsed) is not None) is (mode == "inline")


async def test_tool_runner_records_one_event_per_model_request(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """`beta.messages.tool_runner` records each of its model requests, with its own usage."""
    client = track_anthropic(raw, fg)

    @anthropic.beta_async_tool
    async def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    asking = message("tool_use", output_tokens=20)
    asking["content"] = [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    server.answer(Answer(body=asking), Answer(body=message(input_tokens=60, output_tokens=8)))
    runner = client.beta.messages.tool_runner(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES, tools=[get_weather]
    )
    stops = [reply.stop_reason async for reply in runner]
    assert stops == ["tool_use", "end_turn"]
    events = await recorded(fg, collector, 2)
    assert [tokens(e) for e in events] == [(25, 20, 300, False), (60, 8, 300, False)]


async def test_raw_response_is_the_sdks_own_and_records_once(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """`messages.with_raw_response.create` returns the SDK's response, headers and parse intact."""
    client = track_anthropic(raw, fg, mode=mode)
    server.answer(Answer(body=message(), headers={"request-id": "req_1"}))
    response = await client.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES
    )
    assert type(response) is AsyncAPIResponse
    assert response.headers["request-id"] == "req_1"
    assert (await response.parse()).stop_reason == "end_turn"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (25, 15, 300, False)
    assert (tracking_of(response) is not None) is (mode == "inline")


async def test_streaming_response_records_once_at_the_streams_end(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """`messages.with_streaming_response.create(stream=True)` records when its stream ends."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(events=message_events(output_tokens=4)))
    async with client.messages.with_streaming_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        kinds = [event.type async for event in await response.parse()]
    assert kinds[-1] == "message_stop"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (25, 4, 300, True)


async def test_requests_that_spend_no_tokens_pass_through(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Counting tokens is free: it records nothing and answers as without tracking."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(body={"input_tokens": 12}))
    counted = await client.messages.count_tokens(model="claude-sonnet-4-6", messages=MESSAGES)
    assert counted.input_tokens == 12
    assert await fg.flush(5)
    assert collector.events == []


async def test_a_missing_key_records_nothing(
    server: ProviderServer, fg: FluxGate, collector: FakeCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client without credentials fails before sending: no event, the SDK's error as is."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    async with AsyncAnthropic(api_key=None, base_url=server.url, max_retries=0) as keyless:
        client = track_anthropic(keyless, fg)
        with pytest.raises(TypeError, match="authentication") as tracked:
            await client.messages.create(
                model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES
            )
        with pytest.raises(TypeError) as untracked:
            await keyless.messages.create(
                model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES
            )
    assert str(tracked.value) == str(untracked.value)
    assert server.requests == []
    assert await fg.flush(5)
    assert collector.events == []
