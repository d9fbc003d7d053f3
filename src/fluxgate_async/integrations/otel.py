"""Record the model requests any OpenTelemetry GenAI instrumentation traces.

Install with `pip install 'fluxgate-async[otel]'`.

```python
from opentelemetry.sdk.trace import TracerProvider
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings
from fluxgate_async import FluxGate
from fluxgate_async.integrations.otel import FluxGateSpanProcessor

async with FluxGate() as fg:
    provider = TracerProvider()
    provider.add_span_processor(FluxGateSpanProcessor(fg, feature="research"))
    Agent.instrument_all(InstrumentationSettings(tracer_provider=provider))
    ...  # every model request of every agent records one event
```

`FluxGateSpanProcessor` is an OpenTelemetry SDK `SpanProcessor`: add it to the
`TracerProvider` your instrumentation writes to, beside any exporter. It reads
the spans of the OpenTelemetry GenAI semantic conventions, so it tracks
whatever emits them: pydantic-ai, the OpenTelemetry contrib instrumentations
(`opentelemetry-instrumentation-openai-v2`, ...), Google ADK, and through
OpenLLMetry or OpenInference, CrewAI and LlamaIndex.

## What is recorded

One event per finished inference span: a span whose `gen_ai.operation.name` is
`chat`, `text_completion`, `generate_content` or `embeddings` (or, for
OpenLLMetry, whose `llm.request.type` is `chat`, `completion` or `embedding`;
for OpenInference, whose `openinference.span.kind` is `LLM` or `EMBEDDING`).
Agent, tool and workflow spans record nothing, and neither do the run totals
in `gen_ai.aggregated_usage.*`, so nothing is counted twice.

Each value is read from the current attribute name, else from the older or
other conventions' names for it (in brackets):

- tokens: `gen_ai.usage.input_tokens` (`gen_ai.usage.prompt_tokens`,
  `llm.token_count.prompt`), `gen_ai.usage.output_tokens`
  (`gen_ai.usage.completion_tokens`, `llm.token_count.completion`),
  `gen_ai.usage.cache_read.input_tokens` (`gen_ai.usage.cache_read_input_tokens`,
  `gen_ai.usage.details.cache_read_tokens`),
  `gen_ai.usage.cache_creation.input_tokens`
  (`gen_ai.usage.cache_creation_input_tokens`,
  `gen_ai.usage.details.cache_write_tokens`) and
  `gen_ai.usage.reasoning.output_tokens` (`gen_ai.usage.details.reasoning_tokens`),
  recorded as below;
- `model`: `gen_ai.response.model`, else `gen_ai.request.model` (`llm.model_name`);
- `provider`: `gen_ai.provider.name`, else the deprecated `gen_ai.system`
  (`llm.provider`, `llm.system`), in FluxGate's names (`gcp.gemini` is `google`);
- `latencyInMs`: the span's end time minus its start time;
- `isStreamed`, `streamingDurationInMs` and metadata `timeToFirstTokenMs`:
  from `gen_ai.client.operation.time_to_first_chunk`, or `gen_ai.request.stream`;
- metadata `finishReason`: the first of `gen_ai.response.finish_reasons`, and
  `errorType`: `error.type`, else the type of the exception recorded on the span;
- `sessionId`: `gen_ai.conversation.id`; `step`: `gen_ai.agent.name`.

The convention counts cached tokens in the input; they are recorded as the
SDK wrappers record the same call: for Anthropic, `inputTokens` is the
uncached part and `cachedTokens` the cache reads plus writes; for OpenAI,
Gemini and the others, `inputTokens` is the whole input and `cachedTokens` the
cache reads.

## Status

| the span says | status |
| --- | --- |
| status OK or unset, finish reason `stop`, `tool_call`, ... (or none) | SUCCESS |
| finish reason `length` / `max_tokens` | MAX_TOKENS |
| finish reason `content_filter` | CONTENT_FILTER |
| status ERROR, or an `error.type` attribute | ERROR, with the status description |

## Never in the way

`on_end` runs where the instrumentation ends its span, on any thread: it only
reads the span's attributes and queues the event with
`FluxGate.record_event_nowait`. It never blocks, never raises (a bug of ours is
logged on the `fluxgate_async` logger) and does no I/O. `shutdown` and
`force_flush` leave the FluxGate client alone: close it yourself.

Each event is sent under an `Idempotency-Key` made of the span's trace and span
ids (`otel-<trace id>-<span id>`), so a span that reaches the bridge twice (two
processors, two tracer providers) is recorded once by the server.

When a tracked SDK client (`track_openai`, ...) makes the request inside an
instrumented framework, the wrapper records it and the span is skipped; of two
nested inference spans for one request, the inner one is recorded. See
"Agent frameworks" in the documentation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._routes import TRACKED_CALL_ATTRIBUTE, cover_enclosing, inside_tracked_call, is_inference
from ._conventions import failed, provider_name, usage_outcome
from ._hooks import HookSink

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
    from opentelemetry.trace import StatusCode
except ImportError as exc:  # pragma: no cover - depends on what is installed
    msg = "FluxGateSpanProcessor needs opentelemetry-sdk: pip install 'fluxgate-async[otel]'"
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from .._client import FluxGate

__all__ = ["FluxGateSpanProcessor"]

log = logging.getLogger("fluxgate_async")

# Current name first, then the older or other conventions' names for the same value.
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
_CACHE_READ = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.details.cache_read_tokens",
    "llm.token_count.prompt_details.cache_read",
)
_CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.details.cache_write_tokens",
    "llm.token_count.prompt_details.cache_write",
)
_REASONING = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.details.reasoning_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)
_MODEL = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.request.model",
    "llm.model_name",
)
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_FIRST_CHUNK = (
    "gen_ai.client.operation.time_to_first_chunk",
    "gen_ai.response.time_to_first_chunk",
)
_STREAM = ("gen_ai.request.stream", "llm.is_streaming")

# Spans started but not yet ended, by span id; a span that never ends is
# forgotten once this many are open, so memory stays bounded.
_MAX_OPEN = 10_000


def _first(attributes: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = attributes.get(name)
        if value is not None:
            return value
    return None


def _exception_type(span: ReadableSpan) -> Any:
    # Instrumentations that set no `error.type` still record the exception as an event.
    for event in span.events:
        if event.name == "exception" and event.attributes:
            return event.attributes.get("exception.type")
    return None


class FluxGateSpanProcessor(SpanProcessor):
    """An OpenTelemetry span processor recording one FluxGate event per inference span.

    See the module documentation for what is recorded and how.

    Args:
        fluxgate: The FluxGate client that records the events.
        **metadata: Default metadata for every event (`feature`, `user`,
            `session_id`, `step`, `conversation_id`, any further field); what
            the span says (`gen_ai.conversation.id`, `gen_ai.agent.name`) and
            the enclosing `tracking_context` blocks override it.

    Raises:
        TypeError: `fluxgate` is not a `FluxGate`.
        ValueError: A metadata value does not fit its field.
    """

    def __init__(self, fluxgate: FluxGate, **metadata: Any) -> None:
        self._sink = HookSink(fluxgate, metadata)
        # Inference spans started and not yet ended: span id -> whether another
        # route records the request (see `fluxgate_async._routes`).
        self._open: dict[int, bool] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note an inference span's start, to tell whether another route records it."""
        try:
            if not is_inference(span.attributes or {}):
                return
            cover_enclosing(self)  # a framework hook's request around this span
            covered = inside_tracked_call()
            parent = trace.get_current_span(parent_context).get_span_context()
            with self._lock:
                if parent.span_id in self._open:
                    self._open[parent.span_id] = True  # the inner span records the request
                if len(self._open) >= _MAX_OPEN:
                    del self._open[next(iter(self._open))]
                self._open[span.get_span_context().span_id] = covered
        except Exception:
            log.exception("FluxGate: bug while reading a starting span")

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the event of a finished inference span. Never blocks, never raises."""
        try:
            context = span.get_span_context()
            with self._lock:
                covered = self._open.pop(context.span_id, False) if context else False
            attributes = span.attributes or {}
            if covered or attributes.get(TRACKED_CALL_ATTRIBUTE):
                return
            if is_inference(attributes):
                self._record(span, attributes)
        except Exception:
            log.exception("FluxGate: bug while reading a finished span")

    def _record(self, span: ReadableSpan, attributes: Mapping[str, Any]) -> None:
        provider = provider_name(_first(attributes, _PROVIDER))
        reasons = attributes.get("gen_ai.response.finish_reasons")
        if isinstance(reasons, str):
            reasons = (reasons,)
        outcome = usage_outcome(
            provider,
            input_tokens=_first(attributes, _INPUT),
            output_tokens=_first(attributes, _OUTPUT),
            cache_read=_first(attributes, _CACHE_READ),
            cache_write=_first(attributes, _CACHE_WRITE),
            reasoning=_first(attributes, _REASONING),
            model=attributes.get("gen_ai.response.model"),
            finish_reason=reasons[0] if reasons else None,
        )
        error_type = attributes.get("error.type")
        if span.status.status_code is StatusCode.ERROR or error_type:
            error_type = error_type or _exception_type(span)
            message = span.status.description or str(error_type or "error")
            extra = {"errorType": str(error_type)} if error_type else {}
            outcome = failed(outcome, message, **extra)
        first_chunk = _first(attributes, _FIRST_CHUNK)
        if isinstance(first_chunk, bool) or not isinstance(first_chunk, int | float):
            first_chunk = None
        streamed = first_chunk is not None or bool(_first(attributes, _STREAM))
        start, end = span.start_time, span.end_time
        metadata = {
            "session_id": attributes.get("gen_ai.conversation.id"),
            "step": attributes.get("gen_ai.agent.name"),
        }
        model = _first(attributes, _MODEL)
        self._sink.record(
            outcome,
            provider=provider,
            model=model if isinstance(model, str) else None,
            latency_s=(end - start) / 1e9 if start is not None and end is not None else 0.0,
            streamed=streamed,
            time_to_first_chunk_s=first_chunk,
            metadata={key: value for key, value in metadata.items() if isinstance(value, str)},
            idempotency_key=_span_key(span),
        )

    def shutdown(self) -> None:
        """Forget the open spans; the FluxGate client is left for you to close."""
        with self._lock:
            self._open.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Return at once: events are delivered by the FluxGate client (see `FluxGate.flush`)."""
        return True


def _span_key(span: ReadableSpan) -> str | None:
    """The span's trace and span ids as its event's Idempotency-Key.

    A span exported twice (two processors, a retried export) is then recorded
    once by the server.
    """
    context = span.get_span_context()
    if context is None or not context.is_valid:
        return None
    return f"otel-{context.trace_id:032x}-{context.span_id:016x}"
