"""`FluxGateSpanProcessor`: real pydantic-ai and openai-v2 spans from loopback providers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel, AnthropicModelSettings
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from fluxgate_async import FluxGate, tracking_context
from fluxgate_async._wire import to_wire
from fluxgate_async.integrations import otel
from fluxgate_async.integrations.openai import track_openai
from fluxgate_async.integrations.otel import FluxGateSpanProcessor
from fluxgate_async.testing import FakeCollector

from ..integrations.helpers import recorded
from ..integrations.servers import (
    ANTHROPIC_MODEL,
    Answer,
    FakeOpenAI,
    ProviderServer,
    anthropic_message,
    anthropic_stream,
    tool_call,
)
from .helpers import Queue

CHAT_MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def tracer_provider(fg: FluxGate) -> TracerProvider:
    """A tracer provider carrying a FluxGateSpanProcessor recording to `fg`."""
    provider = TracerProvider()
    provider.add_span_processor(FluxGateSpanProcessor(fg, feature="agents"))
    return provider


@pytest.fixture
def instrumented(tracer_provider: TracerProvider) -> Iterator[None]:
    """Every pydantic-ai agent traced to `tracer_provider`, as a user sets it up."""
    Agent.instrument_all(InstrumentationSettings(tracer_provider=tracer_provider))
    yield
    Agent.instrument_all(False)


@pytest.fixture
def openai_v2(tracer_provider: TracerProvider) -> Iterator[None]:
    """The OpenTelemetry contrib OpenAI instrumentation, traced to `tracer_provider`."""
    instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


def chat_agent(client: AsyncOpenAI, **kwargs: Any) -> Agent[None, str]:
    """A pydantic-ai agent on the chat completions API of `client`."""
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
    return Agent(model, name="helper", **kwargs)


@pytest.mark.usefixtures("instrumented")
async def test_pydantic_ai_run_records_one_event_per_model_request(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """An agent run with a tool records its two model requests, nothing for the agent or tool."""
    agent = chat_agent(raw)

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather in `city`."""
        return f"sunny in {city}"

    server.answer_chat(
        prompt_tokens=40,
        completion_tokens=9,
        finish_reason="tool_calls",
        tool_calls=[tool_call("weather", {"city": "Paris"})],
    )
    server.answer_chat(prompt_tokens=61, completion_tokens=12, cached_tokens=32, reasoning_tokens=4)

    result = await agent.run("Weather in Paris?")

    assert result.output == "Hello!"
    first, second = await recorded(fg, collector, 2)
    for event in (first, second):
        assert event["usage"].pop("latencyInMs") > 0
        assert event["status"] == "SUCCESS"
    assert first["usage"] == {
        "inputTokens": 40,
        "outputTokens": 9,
        "model": CHAT_MODEL,
        "provider": "openai",
        "isStreamed": False,
    }
    assert second["usage"] == {
        "inputTokens": 61,
        "outputTokens": 12,
        "cachedTokens": 32,
        "model": CHAT_MODEL,
        "provider": "openai",
        "isStreamed": False,
    }
    conversation = first["metadata"].pop("sessionId")
    assert conversation
    assert first["metadata"] == {"feature": "agents", "step": "helper", "finishReason": "tool_call"}
    assert second["metadata"] == {
        "feature": "agents",
        "step": "helper",
        "sessionId": conversation,
        "finishReason": "stop",
        "reasoningTokens": 4,
    }


@pytest.mark.usefixtures("instrumented")
async def test_pydantic_ai_stream_records_streaming_and_first_chunk(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A streamed run records isStreamed, the streaming duration and the time to first token."""
    server.answer_chat_stream(prompt_tokens=14, completion_tokens=3)

    async with chat_agent(raw).run_stream("Hi") as stream:
        text = [chunk async for chunk in stream.stream_text(delta=True)]

    assert "".join(text) == "Hello!"
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["isStreamed"]) == (14, 3, True)
    assert usage["streamingDurationInMs"] >= 0
    assert 0 < event["metadata"]["timeToFirstTokenMs"] <= usage["latencyInMs"]


@pytest.mark.usefixtures("instrumented")
async def test_pydantic_ai_failing_request_records_one_error(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A request the provider refuses records one ERROR event; the agent's error is unchanged."""
    server.answer(Answer(status=500, body={"error": {"message": "overloaded"}}))

    with pytest.raises(Exception, match="overloaded"):
        await chat_agent(raw).run("Hi")

    [event] = await recorded(fg, collector)
    assert event["status"]["status"] == "ERROR"
    assert "overloaded" in event["status"]["errorMessage"]
    assert event["usage"]["model"] == "gpt-4o-mini"
    assert event["metadata"]["errorType"]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("stream", [False, True])
async def test_pydantic_ai_anthropic_tokens_match_the_anthropic_wrapper(
    fg: FluxGate, collector: FakeCollector, stream: bool
) -> None:
    """Anthropic's cache reads and writes are recorded as track_anthropic records them."""
    async with ProviderServer() as anthropic_api:
        usage: dict[str, Any] = {
            "input_tokens": 25,
            "output_tokens": 15,
            "cache_read": 200,
            "cache_write": 100,
        }
        final = anthropic_message([{"type": "text", "text": "Hi!"}], **usage)
        if stream:
            anthropic_api.answer(Answer(events=anthropic_stream(final, counts_in_delta=True)))
        else:
            anthropic_api.answer(Answer(body=final))
        client = AsyncAnthropic(api_key="sk-ant-test", base_url=anthropic_api.url, max_retries=0)
        model = AnthropicModel(
            "claude-sonnet-4-6", provider=AnthropicProvider(anthropic_client=client)
        )
        agent = Agent(model, model_settings=AnthropicModelSettings(max_tokens=512))
        if stream:
            async with agent.run_stream("Hi") as result:
                await result.get_output()
        else:
            await agent.run("Hi")
        await client.close()

    [event] = await recorded(fg, collector)
    usage_seen = event["usage"]
    assert usage_seen["inputTokens"] == 25  # the uncached part, as Anthropic reports it
    assert usage_seen["cachedTokens"] == 300  # reads plus writes
    assert usage_seen["outputTokens"] == 15
    assert (usage_seen["provider"], usage_seen["model"]) == ("anthropic", ANTHROPIC_MODEL)
    assert usage_seen["isStreamed"] is stream
    assert event["metadata"]["cacheWriteTokens"] == 100


@pytest.mark.usefixtures("openai_v2")
async def test_openai_v2_instrumentation_records_chat_stream_embeddings_and_errors(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """The contrib OpenAI instrumentation's spans record one event per call, errors included."""
    messages: Any = [{"role": "user", "content": "Hi"}]
    server.answer_chat(prompt_tokens=11, completion_tokens=7)
    server.answer_chat_stream(prompt_tokens=12, completion_tokens=3)
    server.answer(
        Answer(
            body={
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )
    )
    server.answer(Answer(status=503, body={"error": {"message": "try later"}}))

    with tracking_context(user="user-7"):
        await raw.chat.completions.create(model="gpt-4o-mini", messages=messages)
        stream = await raw.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass
        await raw.embeddings.create(model="text-embedding-3-small", input="x")
        with pytest.raises(Exception, match="try later"):
            await raw.chat.completions.create(model="gpt-4o-mini", messages=messages)

    chat, streamed, embedding, failed = await recorded(fg, collector, 4)
    assert (chat["usage"]["inputTokens"], chat["usage"]["outputTokens"]) == (11, 7)
    assert chat["metadata"] == {"feature": "agents", "user": "user-7", "finishReason": "stop"}
    assert (streamed["usage"]["inputTokens"], streamed["usage"]["outputTokens"]) == (12, 3)
    assert embedding["usage"]["inputTokens"] == 4
    assert embedding["usage"]["outputTokens"] == 0
    assert embedding["usage"]["model"] == "text-embedding-3-small"
    assert failed["status"]["status"] == "ERROR"
    assert failed["usage"]["model"] == "gpt-4o-mini"
    assert {e["usage"]["provider"] for e in (chat, streamed, embedding, failed)} == {"openai"}


@pytest.mark.usefixtures("instrumented")
async def test_tracked_client_inside_pydantic_ai_records_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A tracked SDK client inside an instrumented agent: the wrapper's event only."""
    server.answer_chat(prompt_tokens=21, completion_tokens=5)
    agent = chat_agent(track_openai(raw, fg, feature="wrapper"))

    await agent.run("Hi")

    [event] = await recorded(fg, collector)
    assert event["metadata"]["feature"] == "wrapper"
    assert (event["usage"]["inputTokens"], event["usage"]["outputTokens"]) == (21, 5)


@pytest.mark.usefixtures("openai_v2")
async def test_tracked_client_under_openai_v2_records_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A tracked client whose SDK is also instrumented: the wrapper's event only."""
    server.answer_chat(prompt_tokens=21, completion_tokens=5)
    server.answer_chat(prompt_tokens=22, completion_tokens=6)
    messages: Any = [{"role": "user", "content": "Hi"}]

    await track_openai(raw, fg, feature="wrapper").chat.completions.create(
        model="gpt-4o-mini", messages=messages
    )
    await raw.chat.completions.create(model="gpt-4o-mini", messages=messages)

    wrapped, instrumented_only = await recorded(fg, collector, 2)
    assert wrapped["metadata"]["feature"] == "wrapper"
    assert wrapped["usage"]["inputTokens"] == 21
    assert instrumented_only["metadata"]["feature"] == "agents"
    assert instrumented_only["usage"]["inputTokens"] == 22


@pytest.mark.usefixtures("instrumented", "openai_v2")
async def test_two_nested_instrumentations_record_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """pydantic-ai's span around openai-v2's span for one request: one event, the inner one."""
    server.answer_chat(prompt_tokens=31, completion_tokens=8)

    await chat_agent(raw).run("Hi")

    [event] = await recorded(fg, collector)
    assert event["usage"]["inputTokens"] == 31
    assert "step" not in event["metadata"]  # openai-v2's span names no agent


def queued_tracer() -> tuple[Queue, Any]:
    """A tracer whose spans a FluxGateSpanProcessor records into a `Queue`."""
    queue = Queue()
    provider = TracerProvider()
    provider.add_span_processor(FluxGateSpanProcessor(queue))  # type: ignore[arg-type]
    return queue, provider.get_tracer("test")


def test_on_end_never_raises_and_runs_from_any_thread(caplog: pytest.LogCaptureFixture) -> None:
    """A span ended on another thread is recorded; a bug of ours is logged, never raised."""
    queue = Queue()
    provider = TracerProvider()
    provider.add_span_processor(FluxGateSpanProcessor(queue))  # type: ignore[arg-type]
    tracer = provider.get_tracer("test")
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "many"}

    def in_thread() -> None:
        span = tracer.start_span("chat", attributes=attributes)
        span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(5)
    [event] = queue.events
    assert event.usage.input_tokens == 0
    assert event.status == "ERROR"
    assert event.error_message == "boom"

    queue.record_event_nowait = None  # type: ignore[assignment,method-assign]
    with caplog.at_level(logging.ERROR, logger="fluxgate_async"):
        tracer.start_span("chat", attributes=attributes).end()
    assert "bug while recording" in caplog.text


def test_spans_that_never_end_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open inference spans are bounded: the oldest is forgotten, and still records when it ends."""
    monkeypatch.setattr(otel, "_MAX_OPEN", 2)
    queue = Queue()
    processor = FluxGateSpanProcessor(queue)  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    spans = [
        tracer.start_span("chat", attributes={"gen_ai.operation.name": "chat"}) for _ in range(3)
    ]
    assert len(processor._open) == 2
    for span in spans:
        span.end()
    assert len(queue.events) == 3
    assert processor._open == {}
    assert processor.force_flush() is True
    provider.shutdown()


def test_bad_arguments_are_refused() -> None:
    """A processor needs a FluxGate client and valid metadata."""
    with pytest.raises(TypeError, match="fluxgate must be a FluxGate client"):
        FluxGateSpanProcessor(object())  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match="feature"):
        FluxGateSpanProcessor(Queue(), feature=3)  # type: ignore[arg-type]


def test_older_attribute_names_and_other_conventions_are_read() -> None:
    """Spans with the older GenAI names, OpenLLMetry's and OpenInference's, each record once."""
    queue, tracer = queued_tracer()
    old = {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.system": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-flash",
        "gen_ai.usage.prompt_tokens": 50,
        "gen_ai.usage.completion_tokens": 20,
        "gen_ai.usage.cache_read_input_tokens": 10,
        "gen_ai.usage.reasoning_tokens": 6,
        "gen_ai.response.finish_reasons": "MAX_TOKENS",
        "gen_ai.request.stream": True,
    }
    openllmetry = {
        "llm.request.type": "chat",
        "gen_ai.system": "Anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.usage.prompt_tokens": 30,
        "gen_ai.usage.completion_tokens": 5,
        "gen_ai.usage.cache_creation_input_tokens": 12,
    }
    openinference = {
        "openinference.span.kind": "LLM",
        "llm.provider": "openai",
        "llm.model_name": "gpt-4o",
        "llm.token_count.prompt": 9,
        "llm.token_count.completion": 2,
    }
    spans: tuple[dict[str, Any], ...] = (old, openllmetry, openinference)
    for attributes in spans:
        with tracer.start_as_current_span("llm", attributes=attributes):
            pass
    ignored: tuple[dict[str, Any], ...] = (
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.aggregated_usage.input_tokens": 99},
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather"},
        {},
    )
    for attributes in ignored:
        with tracer.start_as_current_span("other", attributes=attributes):
            pass

    gemini, claude, gpt = (to_wire(event) for event in queue.events)
    assert gemini["usage"]["provider"] == "google"
    assert (gemini["usage"]["inputTokens"], gemini["usage"]["cachedTokens"]) == (50, 10)
    assert gemini["usage"]["isStreamed"] is True
    assert gemini["status"] == "MAX_TOKENS"
    assert gemini["metadata"]["reasoningTokens"] == 6
    assert claude["usage"]["provider"] == "anthropic"
    assert (claude["usage"]["inputTokens"], claude["usage"]["cachedTokens"]) == (18, 12)
    assert (gpt["usage"]["model"], gpt["usage"]["inputTokens"]) == ("gpt-4o", 9)


async def test_a_span_reported_twice_is_stored_once(fg: FluxGate, collector: FakeCollector) -> None:
    """The span's trace and span ids are the event's key: two processors, one stored event."""
    provider = TracerProvider()
    provider.add_span_processor(FluxGateSpanProcessor(fg))
    provider.add_span_processor(FluxGateSpanProcessor(fg))
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }
    span = provider.get_tracer("test").start_span("chat gpt-4o-mini", attributes=attributes)
    span.end()
    context = span.get_span_context()

    [event] = await recorded(fg, collector, 1)
    assert event["usage"]["inputTokens"] == 12
    key = f"otel-{context.trace_id:032x}-{context.span_id:016x}"
    assert [request.idempotency_key for request in collector.requests] == [key, key]
