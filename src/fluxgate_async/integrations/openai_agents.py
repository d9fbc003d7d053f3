"""Record every model request of the OpenAI Agents SDK, through its tracing processors.

Install with `pip install 'fluxgate-async[openai-agents]'`.

```python
import agents
from agents import Agent, OpenAIResponsesModel, Runner
from openai import AsyncOpenAI
from fluxgate_async import FluxGate
from fluxgate_async.integrations.openai_agents import FluxGateTracingProcessor

async with FluxGate() as fg, AsyncOpenAI() as client:
    agents.set_trace_processors([FluxGateTracingProcessor(fg, feature="support")])
    model = OpenAIResponsesModel(model="gpt-4.1", openai_client=client)
    agent = Agent(name="Assistant", instructions="Be brief.", model=model)
    result = await Runner.run(agent, "Hello!")
```

`FluxGateTracingProcessor` is an Agents SDK `TracingProcessor`: registered with
`agents.set_trace_processors([...])` it is the only one; with
`agents.add_trace_processor(...)` it runs beside the SDK's exporter to OpenAI.
Tracing must stay enabled: `set_tracing_disabled(True)` stops every processor,
this one included.

## What is recorded

One event per model request, that is per `response` span (Responses API
models) and per `generation` span (chat completions models, and LiteLLM
models), whether the run is `Runner.run` or `Runner.run_streamed`, with tools
and handoffs. Agent, tool, handoff and
guardrail spans record nothing.

| event field | from |
| --- | --- |
| `inputTokens` | the span's usage: `input_tokens` |
| `cachedTokens` | `input_tokens_details.cached_tokens` |
| `outputTokens` | `output_tokens` |
| metadata `reasoningTokens` | `output_tokens_details.reasoning_tokens` |
| metadata `cacheWriteTokens` | `input_tokens_details.cache_write_tokens` |
| `model` | the response's model, else the requested one |
| `provider` | `openai`, or the OpenAI-compatible host of the model's `base_url` |
| `latencyInMs` | from the span's start to its end |
| `step` | the name of the agent that made the request |
| `conversationId` | the trace's `group_id` |
| metadata `finishReason` | the response's `incomplete_details.reason`, else its `status` |
| status | ERROR with the span's error when the request failed, else from the finish reason |

The SDK does not say whether a request was streamed: `isStreamed` is left out.

## Never in the way

The SDK calls processors synchronously, from any thread: each method only
reads the span and queues the event with `FluxGate.record_event_nowait`. It
never blocks, never raises (a bug of ours is logged on the `fluxgate_async`
logger) and does no I/O. `shutdown` and `force_flush` leave the FluxGate client
alone: close it yourself.

When the model's client is a tracked SDK client (`track_openai(...)` given as
`openai_client=`), the wrapper records the request and this processor skips
it. See "Agent frameworks" in the documentation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._routes import ModelRequest, open_model_request
from ._conventions import failed, usage_outcome
from ._hooks import HookSink

try:
    from agents.tracing import (
        AgentSpanData,
        GenerationSpanData,
        ResponseSpanData,
        Span,
        Trace,
        TracingProcessor,
    )
except ImportError as exc:  # pragma: no cover - depends on what is installed
    msg = (
        "FluxGateTracingProcessor needs openai-agents: pip install 'fluxgate-async[openai-agents]'"
    )
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from .._client import FluxGate

__all__ = ["FluxGateTracingProcessor"]

log = logging.getLogger("fluxgate_async")

# Traces, agent spans and model requests under way are kept by id until they
# end; one that never ends is forgotten once this many are kept.
_MAX_OPEN = 10_000


class _Bounded(dict[str, Any]):
    """A dict that forgets its oldest entry beyond `_MAX_OPEN`."""

    def put(self, key: str, value: Any) -> None:
        if len(self) >= _MAX_OPEN:
            del self[next(iter(self))]
        self[key] = value


def _finish_reason(response: Any) -> str | None:
    # A Responses API answer: `incomplete_details.reason` says why it stopped early.
    reason = getattr(getattr(response, "incomplete_details", None), "reason", None)
    status = getattr(response, "status", None)
    return reason or (status if isinstance(status, str) else None)


class FluxGateTracingProcessor(TracingProcessor):
    """An Agents SDK tracing processor recording one FluxGate event per model request.

    See the module documentation for what is recorded and how.

    Args:
        fluxgate: The FluxGate client that records the events.
        **metadata: Default metadata for every event (`feature`, `user`,
            `session_id`, `step`, `conversation_id`, any further field); what
            the trace says (the agent's name, the group id) and the enclosing
            `tracking_context` blocks override it.

    Raises:
        TypeError: `fluxgate` is not a `FluxGate`.
        ValueError: A metadata value does not fit its field.
    """

    def __init__(self, fluxgate: FluxGate, **metadata: Any) -> None:
        self._sink = HookSink(fluxgate, metadata)
        self._lock = threading.Lock()
        self._groups = _Bounded()  # trace id -> group id
        self._agents = _Bounded()  # span id -> name of the agent it belongs to
        self._requests = _Bounded()  # model request span id -> (ModelRequest, start)

    def on_trace_start(self, trace: Trace) -> None:
        """Keep the trace's group id, the conversation of its model requests."""
        try:
            group = getattr(trace, "group_id", None)
            if isinstance(group, str) and group:
                with self._lock:
                    self._groups.put(trace.trace_id, group)
        except Exception:
            log.exception("FluxGate: bug while reading a starting trace")

    def on_trace_end(self, trace: Trace) -> None:
        """Forget the trace."""
        with self._lock:
            self._groups.pop(trace.trace_id, None)

    def on_span_start(self, span: Span[Any]) -> None:
        """Note an agent's name, or a model request's start."""
        try:
            data = span.span_data
            if isinstance(data, ResponseSpanData | GenerationSpanData):
                request = open_model_request(self)
                with self._lock:
                    self._requests.put(span.span_id, (request, time.monotonic()))
                return
            with self._lock:
                # Each span knows its agent: its own, or its parent's (turns sit between).
                name = data.name if isinstance(data, AgentSpanData) else None
                name = name or self._agents.get(span.parent_id or "")
                if name:
                    self._agents.put(span.span_id, name)
        except Exception:
            log.exception("FluxGate: bug while reading a starting span")

    def on_span_end(self, span: Span[Any]) -> None:
        """Queue the event of a finished model request. Never blocks, never raises."""
        try:
            data = span.span_data
            if not isinstance(data, ResponseSpanData | GenerationSpanData):
                with self._lock:
                    self._agents.pop(span.span_id, None)
                return
            with self._lock:
                request, started = self._requests.pop(span.span_id, (None, None))
                agent = self._agents.get(span.parent_id or "")
                group = self._groups.get(span.trace_id)
            if isinstance(request, ModelRequest) and not request.close():
                return
            self._record(span, data, started, agent, group)
        except Exception:
            log.exception("FluxGate: bug while reading a finished span")

    def _record(
        self,
        span: Span[Any],
        data: ResponseSpanData | GenerationSpanData,
        started: float | None,
        agent: str | None,
        group: str | None,
    ) -> None:
        usage: Any = data.usage
        response = getattr(data, "response", None)
        if not isinstance(usage, Mapping):
            usage = {}
        inputs = usage.get("input_tokens_details") or {}
        outputs = usage.get("output_tokens_details") or {}
        provider = "openai"
        requested = None
        if isinstance(data, GenerationSpanData):
            requested = data.model
            config = data.model_config or {}
            if config.get("base_url"):
                from .openai import detect_provider  # noqa: PLC0415 - needs aiohttp's yarl only

                provider = detect_provider(config["base_url"])
        outcome = usage_outcome(
            provider,
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
            cache_read=inputs.get("cached_tokens"),
            cache_write=inputs.get("cache_write_tokens"),
            reasoning=outputs.get("reasoning_tokens"),
            model=getattr(response, "model", None),
            finish_reason=_finish_reason(response),
        )
        error: Any = span.error
        if error:
            details = error.get("data")
            message = details.get("error") if isinstance(details, Mapping) else None
            outcome = failed(outcome, str(message or error.get("message") or "error"))
        self._sink.record(
            outcome,
            provider=provider,
            model=requested if isinstance(requested, str) else None,
            latency_s=time.monotonic() - started if started is not None else 0.0,
            streamed=None,
            metadata={
                key: value
                for key, value in (("step", agent), ("conversation_id", group))
                if value is not None
            },
        )

    def shutdown(self) -> None:
        """Forget what is under way; the FluxGate client is left for you to close."""
        with self._lock:
            self._groups.clear()
            self._agents.clear()
            self._requests.clear()

    def force_flush(self) -> None:
        """Return at once: events are delivered by the FluxGate client (see `FluxGate.flush`)."""
