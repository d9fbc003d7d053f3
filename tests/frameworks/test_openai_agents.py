"""`FluxGateTracingProcessor`: the real OpenAI Agents SDK against a loopback OpenAI API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import agents
import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
)
from openai import AsyncOpenAI

from fluxgate_async import FluxGate, tracking_context
from fluxgate_async.integrations import openai_agents
from fluxgate_async.integrations.openai import track_openai
from fluxgate_async.integrations.openai_agents import FluxGateTracingProcessor
from fluxgate_async.testing import FakeCollector

from ..integrations.helpers import recorded
from ..integrations.servers import (
    RESPONSES_MODEL,
    Answer,
    FakeOpenAI,
    function_call_item,
    message_item,
    response,
    response_stream,
    tool_call,
)
from .helpers import Queue


@pytest.fixture
def processor(fg: FluxGate) -> Iterator[FluxGateTracingProcessor]:
    """The processor, as the only one: nothing leaves the test for OpenAI's trace exporter."""
    processor = FluxGateTracingProcessor(fg, feature="agents")
    agents.set_trace_processors([processor])
    yield processor
    agents.set_trace_processors([])


@function_tool
def weather(city: str) -> str:
    """The weather in `city`."""
    return f"sunny in {city}"


def tokens(event: dict[str, Any]) -> tuple[int, int, int | None]:
    """An event's input, output and cached tokens."""
    usage = event["usage"]
    return usage["inputTokens"], usage["outputTokens"], usage.get("cachedTokens")


@pytest.mark.usefixtures("processor")
async def test_run_with_a_tool_records_each_model_request(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Runner.run on the Responses API: one event per response, none for the agent or tool."""
    model = OpenAIResponsesModel(model="gpt-4.1", openai_client=raw)
    agent = Agent(name="Forecaster", model=model, tools=[weather])
    server.answer(
        Answer(
            body=response(
                [function_call_item("weather", {"city": "Paris"})],
                input_tokens=50,
                output_tokens=10,
            )
        ),
        Answer(
            body=response(
                [message_item("Hello!")],
                input_tokens=80,
                output_tokens=20,
                cached_tokens=48,
                reasoning_tokens=6,
            )
        ),
    )

    result = await Runner.run(agent, "Weather in Paris?", run_config=RunConfig(group_id="chat-9"))

    assert result.final_output == "Hello!"
    first, second = await recorded(fg, collector, 2)
    assert tokens(first) == (50, 10, 0)
    assert tokens(second) == (80, 20, 48)
    for event in (first, second):
        assert event["usage"]["model"] == RESPONSES_MODEL
        assert event["usage"]["provider"] == "openai"
        assert event["usage"]["latencyInMs"] > 0
        assert "isStreamed" not in event["usage"]
        assert event["status"] == "SUCCESS"
    assert second["metadata"] == {
        "feature": "agents",
        "step": "Forecaster",
        "conversationId": "chat-9",
        "finishReason": "completed",
        "reasoningTokens": 6,
    }


@pytest.mark.usefixtures("processor")
async def test_handoff_records_each_agents_request_under_its_name(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A handoff: the triage agent's request and the specialist's, each named by its agent."""
    specialist = Agent(
        name="Billing", model=OpenAIResponsesModel(model="gpt-4.1", openai_client=raw)
    )
    triage = Agent(
        name="Triage",
        model=OpenAIResponsesModel(model="gpt-4.1", openai_client=raw),
        handoffs=[specialist],
    )
    server.answer(
        Answer(
            body=response(
                [function_call_item("transfer_to_billing", {})], input_tokens=30, output_tokens=4
            )
        ),
        Answer(body=response([message_item("Hello!")], input_tokens=45, output_tokens=12)),
    )

    result = await Runner.run(triage, "My invoice is wrong")

    assert result.last_agent is specialist
    first, second = await recorded(fg, collector, 2)
    assert (first["metadata"]["step"], tokens(first)) == ("Triage", (30, 4, 0))
    assert (second["metadata"]["step"], tokens(second)) == ("Billing", (45, 12, 0))


@pytest.mark.usefixtures("processor")
async def test_run_streamed_records_the_streamed_response(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Runner.run_streamed on the Responses API records the final response's usage."""
    agent = Agent(name="Streamer", model=OpenAIResponsesModel(model="gpt-4.1", openai_client=raw))
    final = response([message_item("Hello!")], input_tokens=21, output_tokens=8)
    server.answer(Answer(events=response_stream(final)))

    result = Runner.run_streamed(agent, "Hi")
    kinds = [event.type async for event in result.stream_events()]

    assert "raw_response_event" in kinds
    [event] = await recorded(fg, collector)
    assert tokens(event) == (21, 8, 0)
    assert event["metadata"]["step"] == "Streamer"


@pytest.mark.usefixtures("processor")
@pytest.mark.parametrize("streamed", [False, True])
async def test_chat_completions_model_records_its_generations(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, streamed: bool
) -> None:
    """A chat completions model, run or streamed: one event per generation span."""
    agent = Agent(
        name="Chatty",
        model=OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=raw),
        tools=[weather],
    )
    if streamed:
        server.answer_chat_stream(prompt_tokens=17, completion_tokens=3, cached_tokens=5)
        result = Runner.run_streamed(agent, "Hi")
        async for _ in result.stream_events():
            pass
        expected = [(17, 3, 5)]
    else:
        server.answer_chat(
            prompt_tokens=33,
            completion_tokens=7,
            finish_reason="tool_calls",
            tool_calls=[tool_call("weather", {"city": "Oslo"})],
        )
        server.answer_chat(prompt_tokens=52, completion_tokens=9, cached_tokens=16)
        await Runner.run(agent, "Weather in Oslo?")
        expected = [(33, 7, 0), (52, 9, 16)]

    events = await recorded(fg, collector, len(expected))
    assert [tokens(event) for event in events] == expected
    for event in events:
        assert event["usage"]["model"] == "gpt-4o-mini"
        assert event["usage"]["provider"] == "openai"
        assert event["metadata"]["step"] == "Chatty"


@pytest.mark.usefixtures("processor")
async def test_failing_request_records_one_error(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A request the provider refuses records one ERROR event; the run's error is unchanged."""
    agent = Agent(name="Doomed", model=OpenAIResponsesModel(model="gpt-4.1", openai_client=raw))
    server.answer(Answer(status=500, body={"error": {"message": "overloaded"}}))

    with pytest.raises(Exception, match="overloaded"):
        await Runner.run(agent, "Hi")

    [event] = await recorded(fg, collector)
    assert event["status"]["status"] == "ERROR"
    assert "overloaded" in event["status"]["errorMessage"]
    assert event["metadata"]["step"] == "Doomed"


@pytest.mark.usefixtures("processor")
async def test_tracked_client_inside_an_agent_records_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A tracked client as the model's client: the wrapper's event only, for run and stream.

    `Runner.run_streamed` streams through `responses.with_streaming_response`,
    which the wrapper tracks too; the processor leaves both calls to it.
    """
    tracked = track_openai(raw, fg, feature="wrapper")
    agent = Agent(name="Both", model=OpenAIResponsesModel(model="gpt-4.1", openai_client=tracked))
    server.answer(Answer(body=response([message_item("Hello!")], input_tokens=61, output_tokens=5)))
    final = response([message_item("Hello!")], input_tokens=62, output_tokens=6)
    server.answer(Answer(events=response_stream(final)))

    with tracking_context(user="user-1"):
        await Runner.run(agent, "Hi")
        result = Runner.run_streamed(agent, "Hi again")
        async for _ in result.stream_events():
            pass

    run, streamed = await recorded(fg, collector, 2)
    assert (run["metadata"]["feature"], tokens(run)) == ("wrapper", (61, 5, 0))
    assert (streamed["metadata"]["feature"], tokens(streamed)) == ("wrapper", (62, 6, 0))
    assert {run["metadata"]["user"], streamed["metadata"]["user"]} == {"user-1"}


def test_spans_from_another_thread_and_bounded_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans ended on another thread are recorded; what never ends is forgotten past a bound."""
    monkeypatch.setattr(openai_agents, "_MAX_OPEN", 2)
    queue = Queue()
    processor = FluxGateTracingProcessor(queue)  # type: ignore[arg-type]
    agents.set_trace_processors([processor])
    try:

        def in_thread() -> None:
            with agents.trace("workflow", group_id="g-1"):
                spans = [agents.generation_span(model="gpt-4o") for _ in range(3)]
                for span in spans:
                    span.start()
                assert len(processor._requests) == 2
                for span in spans:
                    span.span_data.usage = {"input_tokens": 3, "output_tokens": "x"}
                    span.finish()
                with agents.custom_span("other"):
                    pass

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(5)
    finally:
        agents.set_trace_processors([])
    assert len(queue.events) == 3
    assert {(e.usage.input_tokens, e.usage.output_tokens) for e in queue.events} == {(3, 0)}
    assert {e.metadata.conversation_id for e in queue.events} == {"g-1"}
    assert processor._requests == {}
    assert processor._groups == {}
    processor.force_flush()
    processor.shutdown()


def test_bad_arguments_are_refused() -> None:
    """A processor needs a FluxGate client and valid metadata."""
    with pytest.raises(TypeError, match="fluxgate must be a FluxGate client"):
        FluxGateTracingProcessor(object())  # type: ignore[arg-type]
