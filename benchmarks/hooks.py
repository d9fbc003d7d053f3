"""What each framework hook adds to one model request: the hook against a hook that does nothing.

A framework calls its hook at a model request's start and end; what the hook
costs there is what tracking adds to the request. Each row builds the
objects the real framework hands its hooks (an OpenTelemetry SDK span with the
GenAI attributes pydantic-ai sets, an Agents SDK response span carrying a real
`Response`, a LangChain `LLMResult`, a LiteLLM standard logging payload), then
times the start and end calls of the FluxGate hook and of the framework's own
do-nothing base class, alternating one by one. The row reports the difference
of the medians. Events are queued to a background client pointed at the
benchmark's events endpoint, and delivered between batches, untimed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ._common import Settings, background_client, optional_import
from ._table import Row, median

TARGET_US = 50.0
_BATCH = 500  # calls between two untimed deliveries, well within the client's queue

Call = Callable[[], Awaitable[None] | None]


async def _compare(settings: Settings, name: str, make: Callable[[Any], tuple[Call, Call]]) -> Row:
    """Median hooked request minus median bare request, in microseconds."""
    calls = settings.count(5_000, 20)
    hooked_ns: list[int] = []
    bare_ns: list[int] = []
    clock = time.perf_counter_ns
    async with background_client(settings.events_url, max_queue_size=10 * _BATCH) as fg:
        hooked, bare = make(fg)

        async def timed(request: Call, into: list[int]) -> None:
            start = clock()
            pending = request()
            if pending is not None:
                await pending
            into.append(clock() - start)

        for _ in range(max(1, calls // 10)):  # warm up
            await timed(bare, [])
            await timed(hooked, [])
        await fg.flush(timeout=60)
        for i in range(calls):
            first, second = (bare, hooked) if i % 2 else (hooked, bare)
            await timed(first, bare_ns if first is bare else hooked_ns)
            await timed(second, bare_ns if second is bare else hooked_ns)
            if i % _BATCH == _BATCH - 1:
                await fg.flush(timeout=60)
        await fg.flush(timeout=60)
    hooked_us = median(hooked_ns) / 1000
    bare_us = median(bare_ns) / 1000
    added = hooked_us - bare_us
    return Row(
        name,
        f"{added:+,.1f} µs per request (median {hooked_us:,.1f} µs)",
        f"{bare_us:,.1f} µs (the framework's do-nothing hook)",
        hooked_us / bare_us if bare_us else None,
        f"<= {TARGET_US:.0f} µs added",
        added <= TARGET_US,
    )


def _otel(fg: Any) -> tuple[Call, Call]:
    otel = optional_import("fluxgate_async.integrations.otel")
    trace_sdk = optional_import("opentelemetry.sdk.trace")
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.agent.name": "helper",
        "gen_ai.conversation.id": "01a21bca-0efe-7509-b94f-683cafa0f420",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 64,
        "gen_ai.usage.details.reasoning_tokens": 8,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    hooked_provider = trace_sdk.TracerProvider()
    hooked_provider.add_span_processor(otel.FluxGateSpanProcessor(fg))
    bare_provider = trace_sdk.TracerProvider()
    bare_provider.add_span_processor(trace_sdk.SpanProcessor())

    def request(tracer: Any) -> Call:
        def run() -> None:
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes):
                pass

        return run

    return request(hooked_provider.get_tracer("bench")), request(bare_provider.get_tracer("bench"))


async def otel_overhead(settings: Settings) -> Row:
    """The OpenTelemetry bridge on a pydantic-ai-shaped chat span."""
    return await _compare(settings, "OpenTelemetry bridge", _otel)


def _openai_agents(fg: Any) -> tuple[Call, Call]:
    agents = optional_import("agents")
    hook = optional_import("fluxgate_async.integrations.openai_agents")
    responses = optional_import("openai.types.responses")
    response = responses.Response.model_validate(
        {
            "id": "resp_bench",
            "object": "response",
            "created_at": 1741476542,
            "status": "completed",
            "model": "gpt-4.1-2025-04-14",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 120,
                "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
                "output_tokens": 30,
                "output_tokens_details": {"reasoning_tokens": 8},
                "total_tokens": 150,
            },
        }
    )
    usage = {
        "requests": 1,
        "input_tokens": 120,
        "output_tokens": 30,
        "total_tokens": 150,
        "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 8},
    }
    agents.set_trace_processors([])
    trace = agents.trace("bench", group_id="chat-1")
    trace.start(mark_as_current=True)
    agent_span = agents.agent_span(name="Assistant")
    agent_span.start(mark_as_current=True)
    span = agents.response_span(response=response)
    span.span_data.usage = usage
    processor = hook.FluxGateTracingProcessor(fg)
    processor.on_trace_start(trace)
    processor.on_span_start(agent_span)
    bare = agents.TracingProcessor  # abstract: a subclass that does nothing

    class Nothing(bare):  # type: ignore[misc, valid-type]
        def on_trace_start(self, trace: Any) -> None: ...
        def on_trace_end(self, trace: Any) -> None: ...
        def on_span_start(self, span: Any) -> None: ...
        def on_span_end(self, span: Any) -> None: ...
        def shutdown(self) -> None: ...
        def force_flush(self) -> None: ...

    def request(target: Any) -> Call:
        def run() -> None:
            target.on_span_start(span)
            target.on_span_end(span)

        return run

    return request(processor), request(Nothing())


async def openai_agents_overhead(settings: Settings) -> Row:
    """The Agents SDK processor on a response span."""
    return await _compare(settings, "OpenAI Agents SDK processor", _openai_agents)


def _langchain(fg: Any) -> tuple[Call, Call]:
    hook = optional_import("fluxgate_async.integrations.langchain")
    messages = optional_import("langchain_core.messages")
    outputs = optional_import("langchain_core.outputs")
    callbacks = optional_import("langchain_core.callbacks")
    message = messages.AIMessage(
        content="Hello!",
        usage_metadata={
            "input_tokens": 120,
            "output_tokens": 30,
            "total_tokens": 150,
            "input_token_details": {"cache_read": 64},
            "output_token_details": {"reasoning": 8},
        },
        response_metadata={"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "stop"},
    )
    result = outputs.LLMResult(generations=[[outputs.ChatGeneration(message=message)]])
    metadata = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}

    def request(handler: Any) -> Call:
        async def run() -> None:
            run_id = uuid.uuid4()
            await handler.on_chat_model_start({}, [[]], run_id=run_id, metadata=metadata)
            await handler.on_llm_end(result, run_id=run_id)

        return run

    class Nothing(callbacks.AsyncCallbackHandler):  # type: ignore[misc, name-defined]
        async def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            """The base class raises NotImplementedError here, to fall back to on_llm_start."""

    return request(hook.FluxGateCallbackHandler(fg)), request(Nothing())


async def langchain_overhead(settings: Settings) -> Row:
    """The LangChain callback handler on a chat model run."""
    return await _compare(settings, "LangChain callback handler", _langchain)


def _litellm(fg: Any) -> tuple[Call, Call]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    hook = optional_import("fluxgate_async.integrations.litellm")
    custom_logger = optional_import("litellm.integrations.custom_logger")
    types = optional_import("litellm.types.utils")
    usage = {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 8},
    }
    response = types.ModelResponse(
        model="gpt-4o-mini-2024-07-18",
        choices=[{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
        usage=usage,
    )
    now = time.time()
    kwargs = {
        "standard_logging_object": {
            "status": "success",
            "custom_llm_provider": "openai",
            "model": "gpt-4o-mini",
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "startTime": now,
            "endTime": now + 0.5,
            "completionStartTime": now + 0.5,
            "stream": False,
            "cache_hit": None,
            "metadata": {"usage_object": usage},
        }
    }

    def request(logger: Any) -> Call:
        async def run() -> None:
            await logger.async_log_success_event(kwargs, response, now, now + 0.5)

        return run

    return request(hook.FluxGateLogger(fg)), request(custom_logger.CustomLogger())


async def litellm_overhead(settings: Settings) -> Row:
    """The LiteLLM logger on a successful completion."""
    return await _compare(settings, "LiteLLM logger", _litellm)
