"""The OpenAI Agents SDK with a tracked client: one event per model request, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_trace_processors,
)
from agents.models import _openai_shared
from openai import AsyncOpenAI

from fluxgate_async import FluxGate, tracking_context
from fluxgate_async._recording import Mode
from fluxgate_async.integrations.openai import track_openai
from fluxgate_async.testing import FakeCollector

from ..integrations.helpers import recorded
from ..integrations.servers import Answer, FakeOpenAI
from .helpers import ANSWER, answers, expected, get_weather, requests

API = Literal["responses", "chat_completions"]


AGENT: Agent[Any] = Agent(
    name="Forecaster",
    instructions="Answer with the weather.",
    model="gpt-4.1",
    tools=[function_tool(get_weather)],
)


@pytest.fixture(autouse=True)
def agents_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """No trace leaves the test; the SDK's default client and API are restored after it."""
    set_trace_processors([])
    monkeypatch.setattr(_openai_shared, "_default_openai_client", None)
    monkeypatch.setattr(_openai_shared, "_use_responses_by_default", True)


@pytest.fixture
async def tracked(server: FakeOpenAI, fg: FluxGate, mode: Mode) -> AsyncIterator[AsyncOpenAI]:
    """A tracked client of the loopback API, in each mode, made the Agents SDK's default."""
    raw = AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)
    async with track_openai(raw, fg, mode=mode, feature="forecast") as client:
        set_default_openai_client(client, use_for_tracing=False)
        yield client


def answer_tool_call_then_text(server: FakeOpenAI, api: API, *, streamed: bool) -> None:
    """Script a model request that calls `get_weather`, then one that answers."""
    call, text, stream = answers("openai-responses" if api == "responses" else "openai-chat")
    if streamed:
        server.answer(Answer(events=stream(call)), Answer(events=stream(text)))
    else:
        server.answer(Answer(body=call), Answer(body=text))


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_runner_run_records_each_model_request(
    tracked: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, api: API
) -> None:
    """Runner.run with a tool call records its two model requests, with their own tokens."""
    set_default_openai_api(api)
    answer_tool_call_then_text(server, api, streamed=False)

    with tracking_context(user="user-7"):
        result = await Runner.run(AGENT, "What is the weather in Paris?")

    assert result.final_output == ANSWER
    assert len(server.requests) == 2
    events = await recorded(fg, collector, 2)
    assert requests(events) == expected(streamed=False)
    for event in events:
        assert event["usage"]["provider"] == "openai"
        assert event["usage"]["model"] == (
            "gpt-4.1-2025-04-14" if api == "responses" else "gpt-4o-mini-2024-07-18"
        )
        assert event["metadata"]["feature"] == "forecast"
        assert event["metadata"]["user"] == "user-7"


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_runner_run_streamed_records_each_model_request(
    tracked: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, api: API
) -> None:
    """Runner.run_streamed with a tool call records its two streamed requests, with their tokens."""
    set_default_openai_api(api)
    answer_tool_call_then_text(server, api, streamed=True)

    with tracking_context(user="user-7"):
        result = Runner.run_streamed(AGENT, "What is the weather in Paris?")
        kinds = [event.type async for event in result.stream_events()]

    assert result.final_output == ANSWER
    assert "raw_response_event" in kinds
    assert len(server.requests) == 2
    events = await recorded(fg, collector, 2)
    assert requests(events) == expected(streamed=True)
    assert {event["metadata"]["user"] for event in events} == {"user-7"}


async def test_a_failed_model_request_records_one_error(
    tracked: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A provider error ends the run with the SDK's error and records one ERROR, no more."""
    server.answer(Answer(status=500, body={"error": {"message": "overloaded", "type": "server"}}))
    with pytest.raises(Exception, match="overloaded"):
        await Runner.run(AGENT, "What is the weather in Paris?")
    [event] = await recorded(fg, collector)
    assert event["status"]["status"] == "ERROR"
    assert "overloaded" in event["status"]["errorMessage"]
