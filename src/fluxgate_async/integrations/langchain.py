"""Record every model call of LangChain and LangGraph, through a callback handler.

Install with `pip install 'fluxgate-async[langchain]'`.

```python
import httpx
from langchain_openai import ChatOpenAI
from fluxgate_async import FluxGate
from fluxgate_async.integrations.langchain import FluxGateCallbackHandler

async with FluxGate() as fg, httpx.AsyncClient() as http:
    handler = FluxGateCallbackHandler(fg, feature="support")
    llm = ChatOpenAI(model="gpt-4o-mini", stream_usage=True, http_async_client=http)
    reply = await llm.ainvoke("Hello!", config={"callbacks": [handler]})
    # or for a whole LangGraph graph: await graph.ainvoke(state, {"callbacks": [handler]})
```

`FluxGateCallbackHandler` is a LangChain `AsyncCallbackHandler`: pass it in
`config={"callbacks": [...]}` of any runnable (a chat model, a chain, a
LangGraph graph), and every chat model or LLM run inside records one event.

## What is recorded

| event field | from |
| --- | --- |
| `inputTokens` | `AIMessage.usage_metadata`: `input_tokens` (see below) |
| `cachedTokens` | `input_token_details.cache_read` (and `cache_creation`, see below) |
| `outputTokens` | `output_tokens` |
| metadata `reasoningTokens` | `output_token_details.reasoning` |
| metadata `cacheWriteTokens` | `input_token_details.cache_creation` |
| `model` | the response's `model_name` (or `model`), else the run's `ls_model_name` |
| `provider` | the run's `ls_provider`, in FluxGate's names (`google_genai` is `google`) |
| `latencyInMs` | from the run's start to its end |
| `isStreamed`, `streamingDurationInMs` | whether tokens were streamed; from the first one |
| metadata `timeToFirstTokenMs` | from the run's start to the first streamed token |
| metadata `finishReason` | the response's `finish_reason` (or `stop_reason`) |
| `step` | the LangGraph node (`langgraph_node`) |
| `conversationId` | the LangGraph thread (`thread_id`) |

Without `usage_metadata` (older integrations), tokens come from
`llm_output["token_usage"]` (or `llm_output["usage"]`): `prompt_tokens`
(`input_tokens`), `completion_tokens` (`output_tokens`),
`prompt_tokens_details.cached_tokens`. LangChain counts cached tokens in the
input, so they are recorded as the SDK wrappers record the same call: for
Anthropic, `inputTokens` is the uncached part and `cachedTokens` the cache
reads plus writes; for the others `inputTokens` is the whole input and
`cachedTokens` the cache reads. Streamed calls report usage only with
`stream_usage=True` (`ChatOpenAI`; other chat models send it by default).

## Status

| the run | status |
| --- | --- |
| ended, finish reason `stop`, `end_turn`, `tool_calls`, ... (or none) | SUCCESS |
| ended, finish reason `length` / `max_tokens` | MAX_TOKENS |
| ended, finish reason `content_filter` | CONTENT_FILTER |
| ended, finish reason `refusal`, `SAFETY`, ... | BLOCKED |
| `on_llm_error` (the call raised, or was cancelled) | ERROR with the error's message |

## Never in the way

A run's state is kept from its start to its end, errors included, so memory
stays flat however many runs go by (and a run that never ends is forgotten
past 10,000 open ones). The handler runs inline, in the task that makes the
call, and only queues events with `FluxGate.record_event_nowait`: it never
blocks and never raises (a bug of ours is logged on the `fluxgate_async`
logger). When the chat model's client is a tracked SDK client (`ChatOpenAI(
root_async_client=tracked, async_client=tracked.chat.completions)`), the
wrapper records the call and the handler skips it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .._recording import error_outcome
from .._routes import ModelRequest, open_model_request
from ._conventions import provider_name, usage_outcome
from ._hooks import HookSink

try:
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.outputs import LLMResult
except ImportError as exc:  # pragma: no cover - depends on what is installed
    msg = "FluxGateCallbackHandler needs langchain-core: pip install 'fluxgate-async[langchain]'"
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from .._client import FluxGate

__all__ = ["FluxGateCallbackHandler"]

log = logging.getLogger("fluxgate_async")

# Runs started and not yet ended; one that never ends is forgotten past this many.
_MAX_OPEN = 10_000


class _Run:
    """What is known of one model run between its start and its end."""

    __slots__ = ("first_token", "metadata", "model", "provider", "request", "started")

    def __init__(self, owner: object, metadata: Mapping[str, Any]) -> None:
        self.started = time.monotonic()
        self.first_token: float | None = None
        model = metadata.get("ls_model_name")
        self.model = model if isinstance(model, str) else None
        self.provider = provider_name(metadata.get("ls_provider"))
        fields = {
            "step": metadata.get("langgraph_node"),
            "conversation_id": metadata.get("thread_id"),
        }
        self.metadata = {key: str(value) for key, value in fields.items() if value is not None}
        # Opened last: a run whose metadata cannot be read leaves no request open.
        self.request: ModelRequest = open_model_request(owner)


def _get(obj: Any, name: str) -> Any:
    # Usage objects are dicts (`usage_metadata`, `llm_output`) or pydantic models.
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _message_of(response: LLMResult) -> Any:
    generations = response.generations
    if generations and generations[0]:
        return getattr(generations[0][0], "message", None)
    return None


class FluxGateCallbackHandler(AsyncCallbackHandler):
    """A LangChain callback handler recording one FluxGate event per chat model or LLM run.

    See the module documentation for what is recorded and how.

    Args:
        fluxgate: The FluxGate client that records the events.
        **metadata: Default metadata for every event (`feature`, `user`,
            `session_id`, `step`, `conversation_id`, any further field); what
            the run says (its LangGraph node and thread) and the enclosing
            `tracking_context` blocks override it.

    Raises:
        TypeError: `fluxgate` is not a `FluxGate`.
        ValueError: A metadata value does not fit its field.
    """

    run_inline = True  # in the caller's task, so that another route seeing the call is known
    raise_error = False

    def __init__(self, fluxgate: FluxGate, **metadata: Any) -> None:
        super().__init__()
        self._sink = HookSink(fluxgate, metadata)
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()

    def _start(self, run_id: UUID, metadata: Mapping[str, Any] | None) -> None:
        try:
            run = _Run(self, metadata or {})
            with self._lock:
                if len(self._runs) >= _MAX_OPEN:
                    del self._runs[next(iter(self._runs))]
                self._runs[run_id] = run
        except Exception:
            log.exception("FluxGate: bug while reading a starting model run")

    def _end(self, run_id: UUID) -> _Run | None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is None or not run.request.close():
            return None
        return run

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a chat model run's start, model and provider."""
        self._start(run_id, metadata)

    async def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a (text completion) LLM run's start, model and provider."""
        self._start(run_id, metadata)

    async def on_llm_new_token(
        self,
        token: Any,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note when a streamed run's first token arrived."""
        run = self._runs.get(run_id)
        if run is not None and run.first_token is None:
            run.first_token = time.monotonic()

    async def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue the event of a finished run. Never blocks, never raises."""
        try:
            run = self._end(run_id)
            if run is not None:
                self._record(run, response)
        except Exception:
            log.exception("FluxGate: bug while reading a finished model run")

    async def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Queue the ERROR event of a failed run. Never blocks, never raises."""
        try:
            run = self._end(run_id)
            if run is not None:
                # The wrappers' reading of a provider error: its message, and
                # MALFORMED_REQUEST for a 400-class answer.
                outcome = error_outcome(
                    error, usage_outcome(run.provider, input_tokens=0, output_tokens=0)
                )
                self._send(run, outcome)
        except Exception:
            log.exception("FluxGate: bug while reading a failed model run")

    def _record(self, run: _Run, response: LLMResult) -> None:
        message = _message_of(response)
        usage = getattr(message, "usage_metadata", None)
        details: Mapping[str, Any] = getattr(message, "response_metadata", None) or {}
        llm_output = response.llm_output or {}
        model = details.get("model_name") or details.get("model") or llm_output.get("model_name")
        finish = details.get("finish_reason") or details.get("stop_reason")
        if usage:
            inputs = _get(usage, "input_token_details")
            outcome = usage_outcome(
                run.provider,
                input_tokens=_get(usage, "input_tokens"),
                output_tokens=_get(usage, "output_tokens"),
                cache_read=_get(inputs, "cache_read"),
                cache_write=_get(inputs, "cache_creation"),
                reasoning=_get(_get(usage, "output_token_details"), "reasoning"),
                model=model,
                finish_reason=finish,
            )
        else:
            totals = llm_output.get("token_usage") or llm_output.get("usage") or {}
            outcome = usage_outcome(
                run.provider,
                input_tokens=_first_of(totals, ("prompt_tokens", "input_tokens")),
                output_tokens=_first_of(totals, ("completion_tokens", "output_tokens")),
                cache_read=_get(_get(totals, "prompt_tokens_details"), "cached_tokens"),
                reasoning=_get(_get(totals, "completion_tokens_details"), "reasoning_tokens"),
                model=model,
                finish_reason=finish,
            )
        self._send(run, outcome)

    def _send(self, run: _Run, outcome: Any) -> None:
        first = run.first_token
        self._sink.record(
            outcome,
            provider=run.provider,
            model=run.model,
            latency_s=time.monotonic() - run.started,
            streamed=first is not None,
            time_to_first_chunk_s=None if first is None else first - run.started,
            metadata=run.metadata,
        )


def _first_of(totals: Any, names: Sequence[str]) -> Any:
    for name in names:
        value = _get(totals, name)
        if value is not None:
            return value
    return None
