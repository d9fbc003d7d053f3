"""`FluxGateLogger`: real LiteLLM calls to loopback OpenAI-compatible and Anthropic fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm.exceptions import InternalServerError

from fluxgate_async import FluxGate, tracking_context
from fluxgate_async.integrations.litellm import FluxGateLogger
from fluxgate_async.testing import FakeCollector

from ..integrations.servers import (
    ANTHROPIC_MODEL,
    Answer,
    FakeOpenAI,
    ProviderServer,
    anthropic_message,
)

MESSAGES = [{"role": "user", "content": "Hi"}]
CHAT_MODEL = "gpt-4o-mini-2024-07-18"

# Where LiteLLM keeps the loggers it copied from `litellm.callbacks`; it skips a
# logger whose class is already listed, so every list is cleared between tests.
_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "input_callback",
    "service_callback",
)


def clear_callbacks() -> None:
    """Empty every list of loggers LiteLLM keeps."""
    for name in _CALLBACK_LISTS:
        getattr(litellm, name).clear()


@pytest.fixture
def logger(fg: FluxGate) -> Iterator[FluxGateLogger]:
    """The logger under test, as the only LiteLLM callback."""
    clear_callbacks()
    logger = FluxGateLogger(fg, feature="router")
    litellm.callbacks = [logger]
    yield logger
    clear_callbacks()


async def arrived(fg: FluxGate, collector: FakeCollector, count: int = 1) -> list[Any]:
    """The events at the collector, once LiteLLM's hooks (run on tasks of their own) have run."""
    for _ in range(200):
        assert await fg.flush(5)
        if len(collector.events) >= count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # and no more than `count` come
    assert await fg.flush(5)
    assert len(collector.events) == count, collector.events
    return collector.events


@pytest.mark.usefixtures("logger")
async def test_acompletion_records_tokens_model_provider_and_timing(
    server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """An `acompletion` call records the usage, the answering model and the provider."""
    server.answer_chat(
        prompt_tokens=120, completion_tokens=30, cached_tokens=64, reasoning_tokens=8
    )

    with tracking_context(user="user-5"):
        reply = await litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_base=server.url + "/v1",
            api_key="sk-test",
        )

    assert reply.choices[0].message.content == "Hello!"
    [event] = await arrived(fg, collector)
    assert event["usage"].pop("latencyInMs") > 0
    assert event["usage"] == {
        "inputTokens": 120,
        "outputTokens": 30,
        "cachedTokens": 64,
        "model": CHAT_MODEL,
        "provider": "openai",
        "isStreamed": False,
    }
    assert event["status"] == "SUCCESS"
    assert event["metadata"] == {
        "feature": "router",
        "user": "user-5",
        "finishReason": "stop",
        "reasoningTokens": 8,
    }


@pytest.mark.usefixtures("logger")
async def test_streaming_records_one_streamed_event(
    server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A streamed acompletion records its usage once, with the time to the first token."""
    server.answer_chat_stream(prompt_tokens=14, completion_tokens=3)

    stream = await litellm.acompletion(
        model="openai/gpt-4o-mini",
        messages=MESSAGES,
        api_base=server.url + "/v1",
        api_key="sk-test",
        stream=True,
        stream_options={"include_usage": True},
    )
    text = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]

    assert "".join(text) == "Hello!"
    [event] = await arrived(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["isStreamed"]) == (14, 3, True)
    assert usage["streamingDurationInMs"] >= 0
    assert 0 < event["metadata"]["timeToFirstTokenMs"] <= usage["latencyInMs"]


@pytest.mark.usefixtures("logger")
async def test_failing_call_records_one_error(
    server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A call the provider refuses records one ERROR event; LiteLLM's error is unchanged."""
    server.answer(Answer(status=500, body={"error": {"message": "overloaded"}}))

    with pytest.raises(InternalServerError, match="overloaded"):
        await litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,
            api_base=server.url + "/v1",
            api_key="sk-test",
            max_retries=0,
        )

    [event] = await arrived(fg, collector)
    assert event["status"]["status"] == "ERROR"
    assert "overloaded" in event["status"]["errorMessage"]
    assert (event["usage"]["provider"], event["usage"]["inputTokens"]) == ("openai", 0)


@pytest.mark.usefixtures("logger")
async def test_anthropic_tokens_match_the_anthropic_wrapper(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """Anthropic's cache reads and writes are recorded as track_anthropic records them."""
    async with ProviderServer() as api:
        api.answer(
            Answer(
                body=anthropic_message(
                    [{"type": "text", "text": "Hi! My name is Claude."}],
                    input_tokens=25,
                    output_tokens=15,
                    cache_read=200,
                    cache_write=100,
                )
            )
        )
        await litellm.acompletion(
            model="anthropic/claude-sonnet-4-6",
            messages=MESSAGES,
            api_base=api.url,
            api_key="sk-ant-test",
        )

    [event] = await arrived(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["cachedTokens"], usage["outputTokens"]) == (25, 300, 15)
    assert (usage["provider"], usage["model"]) == ("anthropic", ANTHROPIC_MODEL)
    assert event["metadata"]["cacheWriteTokens"] == 100


def test_bad_arguments_are_refused() -> None:
    """A logger needs a FluxGate client."""
    with pytest.raises(TypeError, match="fluxgate must be a FluxGate client"):
        FluxGateLogger(object())  # type: ignore[arg-type]
