"""Record every model call LiteLLM makes, through a LiteLLM custom logger.

Install with `pip install 'fluxgate-async[litellm]'`.

```python
import asyncio

import litellm
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
from fluxgate_async import FluxGate
from fluxgate_async.integrations.litellm import FluxGateLogger

async with FluxGate() as fg:
    litellm.callbacks = [FluxGateLogger(fg, feature="router")]
    reply = await litellm.acompletion(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )
    await asyncio.sleep(0)  # LiteLLM runs its callbacks in tasks once the call returns
    await GLOBAL_LOGGING_WORKER.flush()
await litellm.close_litellm_async_clients()
```

`FluxGateLogger` is a LiteLLM `CustomLogger`: add it to `litellm.callbacks`
and every `acompletion` (streamed or not), `aembedding` and `atext_completion`
records one event, whichever provider LiteLLM routes it to. Set
`LITELLM_LOCAL_MODEL_COST_MAP=True` in the environment to keep LiteLLM from
downloading its price map at import; FluxGate prices the calls itself.

## What is recorded

Everything comes from LiteLLM's `standard_logging_object`:

| event field | from |
| --- | --- |
| `inputTokens`, `outputTokens` | `prompt_tokens`, `completion_tokens` |
| `cachedTokens` | the usage's `prompt_tokens_details.cached_tokens` (see below) |
| metadata `cacheWriteTokens` | the usage's `cache_creation_input_tokens` |
| metadata `reasoningTokens` | the usage's `completion_tokens_details.reasoning_tokens` |
| `model` | the response's model, else `model` |
| `provider` | `custom_llm_provider`, in FluxGate's names (`vertex_ai` is `google`) |
| `latencyInMs` | `endTime - startTime` |
| `isStreamed`, `streamingDurationInMs` | `stream`; from `completionStartTime` to the end |
| metadata `timeToFirstTokenMs` | `completionStartTime - startTime`, for a stream |
| metadata `finishReason` | the response's first choice's `finish_reason` |
| metadata `cacheHit` | `cache_hit`: LiteLLM answered from its own cache, no model was called |
| `sessionId` | `session_id`, when LiteLLM sets one |
| status | ERROR with `error_str` for a failed call |

LiteLLM counts cached tokens in `prompt_tokens`; they are recorded as the SDK
wrappers record the same call: for Anthropic, `inputTokens` is the uncached
part and `cachedTokens` the cache reads plus writes; for the others
`inputTokens` is the whole prompt and `cachedTokens` the cache reads. A
LiteLLM cache hit records 0 tokens (no provider was paid) with `cacheHit`.

## Never in the way

LiteLLM awaits the hooks after the call has returned (or raised), on its
own task: they only queue the event with `FluxGate.record_event_nowait`. They
never block and never raise (a bug of ours is logged on the `fluxgate_async`
logger). LiteLLM calls providers with its own clients, so no SDK wrapper sees
the same call; do not add LiteLLM's own OpenTelemetry callback beside the
OpenTelemetry bridge, or each call is recorded by both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._conventions import failed, provider_name, usage_outcome
from ._hooks import HookSink

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as exc:  # pragma: no cover - depends on what is installed
    msg = "FluxGateLogger needs litellm: pip install 'fluxgate-async[litellm]'"
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from .._client import FluxGate

__all__ = ["FluxGateLogger"]

log = logging.getLogger("fluxgate_async")


def _get(obj: Any, *path: str) -> Any:
    # LiteLLM's usage is a pydantic model on the response and a dict in the payload.
    for name in path:
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _finish_reason(response: Any) -> Any:
    choices = getattr(response, "choices", None)
    return getattr(choices[0], "finish_reason", None) if choices else None


class FluxGateLogger(CustomLogger):
    """A LiteLLM custom logger recording one FluxGate event per model call.

    See the module documentation for what is recorded and how.

    Args:
        fluxgate: The FluxGate client that records the events.
        **metadata: Default metadata for every event (`feature`, `user`,
            `session_id`, `step`, `conversation_id`, any further field); what
            the call says (its session) and the enclosing `tracking_context`
            blocks override it.

    Raises:
        TypeError: `fluxgate` is not a `FluxGate`.
        ValueError: A metadata value does not fit its field.
    """

    def __init__(self, fluxgate: FluxGate, **metadata: Any) -> None:
        self._sink = HookSink(fluxgate, metadata)
        super().__init__()

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Queue the event of a call that succeeded. Never blocks, never raises."""
        self._record(kwargs, response_obj, failure=False)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Queue the ERROR event of a call that failed. Never blocks, never raises."""
        self._record(kwargs, response_obj, failure=True)

    def _record(self, kwargs: Mapping[str, Any], response_obj: Any, *, failure: bool) -> None:
        try:
            payload = kwargs.get("standard_logging_object")
            if not isinstance(payload, dict):
                log.warning("FluxGate: LiteLLM gave no standard_logging_object; call not recorded")
                return
            self._record_payload(payload, response_obj, failure=failure)
        except Exception:
            log.exception("FluxGate: bug while reading a LiteLLM call")

    def _record_payload(self, payload: dict[str, Any], response_obj: Any, *, failure: bool) -> None:
        provider = provider_name(payload.get("custom_llm_provider"))
        usage = _get(payload, "metadata", "usage_object") or _get(response_obj, "usage")
        cache_hit = payload.get("cache_hit") is True
        model = _get(response_obj, "model") if not failure else None
        outcome = usage_outcome(
            provider,
            input_tokens=0 if cache_hit else payload.get("prompt_tokens"),
            output_tokens=0 if cache_hit else payload.get("completion_tokens"),
            cache_read=None if cache_hit else _get(usage, "prompt_tokens_details", "cached_tokens"),
            cache_write=None if cache_hit else _get(usage, "cache_creation_input_tokens"),
            reasoning=_get(usage, "completion_tokens_details", "reasoning_tokens"),
            model=model,
            finish_reason=_finish_reason(response_obj),
        )
        if failure or payload.get("status") == "failure":
            message = payload.get("error_str") or _get(
                payload, "error_information", "error_message"
            )
            outcome = failed(outcome, str(message or "LiteLLM call failed"))
        if cache_hit:
            outcome = attrs.evolve(outcome, extra={**outcome.extra, "cacheHit": True})
        start = _number(payload.get("startTime"))
        end = _number(payload.get("endTime"))
        first = _number(payload.get("completionStartTime"))
        streamed = payload.get("stream") is True
        session = payload.get("session_id")
        requested = payload.get("model")
        self._sink.record(
            outcome,
            provider=provider,
            model=requested if isinstance(requested, str) else None,
            latency_s=end - start if start is not None and end is not None else 0.0,
            streamed=streamed,
            time_to_first_chunk_s=first - start if streamed and first and start else None,
            metadata={"session_id": session} if isinstance(session, str) and session else None,
        )
