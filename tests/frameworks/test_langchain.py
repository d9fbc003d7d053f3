"""`FluxGateCallbackHandler`: real LangChain chat models and a LangGraph graph on loopback fakes."""

from __future__ import annotations

import sys
import uuid
from typing import Any, TypedDict

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from openai import AsyncOpenAI

from fluxgate_async import FluxGate, tracking_context
from fluxgate_async.integrations import langchain as fg_langchain
from fluxgate_async.integrations.langchain import FluxGateCallbackHandler
from fluxgate_async.integrations.openai import track_openai
from fluxgate_async.testing import FakeCollector

from ..integrations.helpers import recorded
from ..integrations.servers import (
    ANTHROPIC_MODEL,
    Answer,
    FakeOpenAI,
    ProviderServer,
    anthropic_message,
    anthropic_stream,
)

CHAT_MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def handler(fg: FluxGate) -> FluxGateCallbackHandler:
    """The handler under test, recording to `fg`."""
    return FluxGateCallbackHandler(fg, feature="chains")


def chat_openai(server: FakeOpenAI, **kwargs: Any) -> ChatOpenAI:
    """A ChatOpenAI on the loopback API, without retries."""
    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.url + "/v1",
        api_key="sk-test",  # type: ignore[arg-type]
        max_retries=0,
        **kwargs,
    )


async def test_chat_openai_ainvoke_records_usage_model_and_provider(
    server: FakeOpenAI, handler: FluxGateCallbackHandler, fg: FluxGate, collector: FakeCollector
) -> None:
    """Ainvoke records the usage metadata, the answering model and the provider."""
    server.answer_chat(
        prompt_tokens=120, completion_tokens=30, cached_tokens=64, reasoning_tokens=8
    )

    with tracking_context(user="user-3"):
        reply = await chat_openai(server).ainvoke("Hi", config={"callbacks": [handler]})

    assert reply.content == "Hello!"
    [event] = await recorded(fg, collector)
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
        "feature": "chains",
        "user": "user-3",
        "finishReason": "stop",
        "reasoningTokens": 8,
    }


async def test_chat_openai_astream_with_stream_usage_records_one_streamed_event(
    server: FakeOpenAI, handler: FluxGateCallbackHandler, fg: FluxGate, collector: FakeCollector
) -> None:
    """astream(stream_usage=True) records the final usage, streaming time and first token."""
    server.answer_chat_stream(prompt_tokens=14, completion_tokens=3, cached_tokens=2)

    chunks = [
        chunk.content
        async for chunk in chat_openai(server, stream_usage=True).astream(
            "Hi", config={"callbacks": [handler]}
        )
    ]

    assert "".join(str(c) for c in chunks) == "Hello!"
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["cachedTokens"]) == (14, 3, 2)
    assert usage["isStreamed"] is True
    assert usage["streamingDurationInMs"] >= 0
    assert 0 < event["metadata"]["timeToFirstTokenMs"] <= usage["latencyInMs"]


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_anthropic_tokens_match_the_anthropic_wrapper(
    handler: FluxGateCallbackHandler, fg: FluxGate, collector: FakeCollector, stream: bool
) -> None:
    """ChatAnthropic's cache reads and writes are recorded as track_anthropic records them."""
    usage: dict[str, Any] = {
        "input_tokens": 25,
        "output_tokens": 15,
        "cache_read": 200,
        "cache_write": 100,
    }
    async with ProviderServer() as api:
        final = anthropic_message([{"type": "text", "text": "Hi!"}], **usage)
        api.answer(
            Answer(events=anthropic_stream(final, counts_in_delta=True))
            if stream
            else Answer(body=final)
        )
        llm = ChatAnthropic(
            model_name="claude-sonnet-4-6",
            base_url=api.url,
            api_key="sk-ant-test",  # type: ignore[arg-type]
            max_retries=0,
            timeout=5,
            stop=None,
        )
        config: Any = {"callbacks": [handler]}
        if stream:
            async for _ in llm.astream("Hi", config=config):
                pass
        else:
            await llm.ainvoke("Hi", config=config)

    [event] = await recorded(fg, collector)
    seen = event["usage"]
    assert (seen["inputTokens"], seen["cachedTokens"], seen["outputTokens"]) == (25, 300, 15)
    assert (seen["provider"], seen["model"], seen["isStreamed"]) == (
        "anthropic",
        ANTHROPIC_MODEL,
        stream,
    )
    assert event["metadata"]["cacheWriteTokens"] == 100
    assert event["metadata"]["finishReason"] == "end_turn"


async def test_failing_call_records_one_error(
    server: FakeOpenAI, handler: FluxGateCallbackHandler, fg: FluxGate, collector: FakeCollector
) -> None:
    """A call the provider refuses records one ERROR event, and the state of the run is gone."""
    server.answer(Answer(status=500, body={"error": {"message": "overloaded"}}))

    with pytest.raises(Exception, match="overloaded"):
        await chat_openai(server).ainvoke("Hi", config={"callbacks": [handler]})

    [event] = await recorded(fg, collector)
    assert event["status"]["status"] == "ERROR"
    assert "overloaded" in event["status"]["errorMessage"]
    assert (event["usage"]["model"], event["usage"]["provider"]) == ("gpt-4o-mini", "openai")
    assert handler._runs == {}


class Draft(TypedDict):
    """The state of the two-node graph."""

    topic: str
    outline: str
    text: str


async def test_langgraph_graph_with_two_model_nodes_records_each_under_its_node(
    server: FakeOpenAI, handler: FluxGateCallbackHandler, fg: FluxGate, collector: FakeCollector
) -> None:
    """A LangGraph graph: one event per model node, named by the node, in the thread."""
    llm = chat_openai(server)

    async def outline(state: Draft) -> dict[str, str]:
        reply = await llm.ainvoke(f"Outline {state['topic']}")
        return {"outline": str(reply.content)}

    async def write(state: Draft) -> dict[str, str]:
        reply = await llm.ainvoke(f"Write {state['outline']}")
        return {"text": str(reply.content)}

    builder = StateGraph(Draft)
    builder.add_node("outline", outline)
    builder.add_node("write", write)
    builder.add_edge(START, "outline")
    builder.add_edge("outline", "write")
    builder.add_edge("write", END)
    graph = builder.compile()
    server.answer_chat(prompt_tokens=20, completion_tokens=6)
    server.answer_chat(prompt_tokens=44, completion_tokens=90)

    state = await graph.ainvoke(
        {"topic": "tokens", "outline": "", "text": ""},
        config={"callbacks": [handler], "configurable": {"thread_id": "thread-5"}},
    )

    assert state["text"] == "Hello!"
    first, second = await recorded(fg, collector, 2)
    assert (first["metadata"]["step"], first["usage"]["inputTokens"]) == ("outline", 20)
    assert (second["metadata"]["step"], second["usage"]["inputTokens"]) == ("write", 44)
    assert {first["metadata"]["conversationId"], second["metadata"]["conversationId"]} == {
        "thread-5"
    }


async def test_tracked_client_inside_chat_openai_records_once(
    server: FakeOpenAI, handler: FluxGateCallbackHandler, fg: FluxGate, collector: FakeCollector
) -> None:
    """A tracked SDK client as ChatOpenAI's client: the wrapper's event only, streamed or not.

    ChatOpenAI streams through `create(stream=True)` and otherwise calls
    `with_raw_response.create`; the wrapper tracks both, and the handler leaves
    those calls to it.
    """
    raw = AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)
    tracked = track_openai(raw, fg, feature="wrapper")
    llm = chat_openai(
        server,
        stream_usage=True,
        root_async_client=tracked,
        async_client=tracked.chat.completions,
    )
    server.answer_chat_stream(prompt_tokens=21, completion_tokens=5)
    server.answer_chat(prompt_tokens=22, completion_tokens=6)

    async for _ in llm.astream("Hi", config={"callbacks": [handler]}):
        pass
    await llm.ainvoke("Hi", config={"callbacks": [handler]})
    await raw.close()

    streamed, invoked = await recorded(fg, collector, 2)
    assert (streamed["metadata"]["feature"], streamed["usage"]["inputTokens"]) == ("wrapper", 21)
    assert (invoked["metadata"]["feature"], invoked["usage"]["inputTokens"]) == ("wrapper", 22)
    assert handler._runs == {}


class Queue:
    """Stands in for a FluxGate client: counts what `record_event_nowait` is given."""

    def __init__(self) -> None:
        self.count = 0
        self.last: Any = None

    def record_event_nowait(self, event: Any, idempotency_key: str | None = None) -> bool:
        """Count `event`."""
        self.count += 1
        self.last = event
        return True

    async def record_event(self, event: Any) -> None:
        """Never called by a hook."""
        raise AssertionError


def result(usage: Any = None, llm_output: Any = None) -> LLMResult:
    """A chat model's result, as LangChain hands it to `on_llm_end`."""
    message = AIMessage(content="Hi", usage_metadata=usage)
    return LLMResult(generations=[[ChatGeneration(message=message)]], llm_output=llm_output)


async def test_a_model_request_made_while_a_tracked_stream_waits_is_recorded(
    server: FakeOpenAI, handler: FluxGateCallbackHandler, fg: FluxGate, collector: FakeCollector
) -> None:
    """A tracked stream not read yet covers nothing after it: a later chain call is its own.

    The tracked call ended its request when the stream came back; a model
    request the handler sees next, in the same task, is another request.
    """
    raw = AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)
    tracked = track_openai(raw, fg, feature="wrapper")
    server.answer_chat_stream(prompt_tokens=21, completion_tokens=5)
    server.answer_chat(prompt_tokens=22, completion_tokens=6)

    stream = await tracked.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    await chat_openai(server).ainvoke("Hi", config={"callbacks": [handler]})
    async for _ in stream:
        pass
    await raw.close()

    events = await recorded(fg, collector, 2)
    assert sorted((e["metadata"]["feature"], e["usage"]["inputTokens"]) for e in events) == [
        ("chains", 22),
        ("wrapper", 21),
    ]


async def test_state_stays_flat_over_100_000_runs() -> None:
    """Each run's state is dropped when it ends, by success or error: none left after 100,000."""
    queue = Queue()
    handler = FluxGateCallbackHandler(queue)  # type: ignore[arg-type]
    metadata = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
    answer = result({"input_tokens": 3, "output_tokens": 1, "total_tokens": 4})
    failure = RuntimeError("boom")
    # Under coverage, the first runs (one success, one error) are measured; the 99,998
    # repeats would add no line and take four times as long traced, so they run untraced.
    tracer = sys.gettrace()
    try:
        for n in range(100_000):
            if n == 2:
                sys.settrace(None)
            run_id = uuid.UUID(int=n)
            await handler.on_chat_model_start({}, [[]], run_id=run_id, metadata=metadata)
            if n % 2:
                await handler.on_llm_error(failure, run_id=run_id)
            else:
                await handler.on_llm_end(answer, run_id=run_id)
            if n % 25_000 == 0:
                assert len(handler._runs) == 0
    finally:
        sys.settrace(tracer)
    assert len(handler._runs) == 0
    assert queue.count == 100_000


async def test_llm_output_token_usage_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without usage_metadata, llm_output's token_usage counts; unended runs are bounded."""
    monkeypatch.setattr(fg_langchain, "_MAX_OPEN", 2)
    queue = Queue()
    handler = FluxGateCallbackHandler(queue)  # type: ignore[arg-type]
    run_ids = [uuid.uuid4() for _ in range(3)]
    for run_id in run_ids:
        await handler.on_llm_start({}, ["Hi"], run_id=run_id, metadata={"ls_provider": "groq"})
    assert len(handler._runs) == 2
    usage = {
        "prompt_tokens": 70,
        "completion_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 5},
    }
    await handler.on_llm_new_token("H", run_id=run_ids[2])
    await handler.on_llm_end(
        result(llm_output={"token_usage": usage, "model_name": "llama-3.3-70b"}), run_id=run_ids[2]
    )
    event = queue.last
    assert (event.usage.input_tokens, event.usage.output_tokens) == (70, 11)
    assert (event.usage.cached_tokens, event.usage.provider) == (40, "groq")
    assert event.usage.model == "llama-3.3-70b"
    assert event.usage.is_streamed is True
    assert event.metadata.extra["reasoningTokens"] == 5
    await handler.on_llm_end(result(), run_id=uuid.uuid4())  # a run it never saw start
    assert queue.count == 1


def test_bad_arguments_are_refused() -> None:
    """A handler needs a FluxGate client."""
    with pytest.raises(TypeError, match="fluxgate must be a FluxGate client"):
        FluxGateCallbackHandler(object())  # type: ignore[arg-type]
