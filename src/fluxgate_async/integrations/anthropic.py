"""Track `anthropic.AsyncAnthropic` calls: messages, streamed or not, and the beta messages.

Install with `pip install 'fluxgate-async[anthropic]'`.

```python
from anthropic import AsyncAnthropic
from fluxgate_async import FluxGate
from fluxgate_async.integrations.anthropic import track_anthropic

async with (
    FluxGate() as fg,
    track_anthropic(AsyncAnthropic(), fg, feature="support") as client,
):
    message = await client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        messages=[{"role": "user", "content": "Hello!"}],
    )
    print(message.content[0].text)
```

`client` is a drop-in: it is still an `AsyncAnthropic` to `isinstance` and to
type checkers, every call returns and raises exactly what it would without
tracking, and the original client is not modified. Tracked, one event per call:

- `client.messages.create(...)`, with or without `stream=True`;
- `async with client.messages.stream(...) as stream:` (the helper; the event is
  sent when the stream ends, or when the block exits);
- `client.beta.messages.create(...)`, with or without `stream=True`;
- the same on clients made by `client.with_options(...)` and `client.copy(...)`.

Everything else passes through untracked.

## Tokens

| event field | Anthropic usage |
| --- | --- |
| `inputTokens` | `input_tokens` (the uncached part of the prompt, as Anthropic counts it) |
| `outputTokens` | `output_tokens` |
| `cachedTokens` | `cache_read_input_tokens + cache_creation_input_tokens` (as in TypeScript) |
| metadata `cacheWriteTokens` | `cache_creation_input_tokens` |
| metadata `reasoningTokens` | `output_tokens_details.thinking_tokens` |
| metadata `finishReason` | `stop_reason` |

In a stream, `message_start` gives the model and the input counts, and each
`message_delta` the running output count and the stop reason (and newer input
counts, which then win).

## Status

| `stop_reason` | status |
| --- | --- |
| `end_turn`, `stop_sequence`, `tool_use`, `pause_turn` (or none) | SUCCESS |
| `max_tokens`, `model_context_window_exceeded` | MAX_TOKENS |
| `refusal` | BLOCKED |
| the call raised a 400, 404, 413 or 422 `APIStatusError` | MALFORMED_REQUEST, then re-raised |
| the call raised anything else (a stream's `error` event too) | ERROR with its message, re-raised |
| the call was cancelled | ERROR "cancelled", then `CancelledError` re-raised |

Streams record `isStreamed: true`, `streamingDurationInMs` from the first
event to the end and metadata `timeToFirstTokenMs`. Provider is `anthropic`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from .._extras import require_extra
from .._models import AiEventStatus
from .._recording import CallTimer, Mode, Outcome, Recorder, cancelled_outcome, error_outcome
from ._proxy import LEFT_EARLY, Proxy, TrackedStream, node, refuse_tracked, tracked_create
from ._usage import count, extra_counts

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

    from .._client import FluxGate

__all__ = ["track_anthropic"]

log = logging.getLogger("fluxgate_async")

_ClientT = TypeVar("_ClientT", bound="AsyncAnthropic")

_PROVIDER = "anthropic"

_STATUS = {
    "end_turn": AiEventStatus.SUCCESS,
    "stop_sequence": AiEventStatus.SUCCESS,
    "tool_use": AiEventStatus.SUCCESS,
    "pause_turn": AiEventStatus.SUCCESS,
    "max_tokens": AiEventStatus.MAX_TOKENS,
    "model_context_window_exceeded": AiEventStatus.MAX_TOKENS,
    "refusal": AiEventStatus.BLOCKED,
}


def track_anthropic(
    client: _ClientT,
    fluxgate: FluxGate,
    *,
    mode: Mode = "background",
    **metadata: Any,
) -> _ClientT:
    """Return a drop-in `AsyncAnthropic` whose calls are recorded to FluxGate.

    See the module documentation for what is tracked and how.

    Args:
        client: The `anthropic.AsyncAnthropic` client; not modified.
        fluxgate: The FluxGate client that records the events.
        mode: `"background"` (the calls take no longer than without tracking)
            or `"inline"` (each call awaits FluxGate and its response carries a
            `FluxGateCostTrackingResponse`, see `fluxgate_async.tracking_of`).
        **metadata: Default metadata for every call (`feature`, `user`,
            `session_id`, `step`, `conversation_id`, any further field);
            `tracking_context` blocks override it.

    Raises:
        TypeError: `client` is not an `anthropic.AsyncAnthropic`, or `fluxgate`
            is not a `FluxGate`.
        ValueError: An unknown `mode`, an invalid metadata value, or a client
            that is already tracked.
    """
    anthropic = require_extra("anthropic", extra="anthropic", needed_by="track_anthropic")

    refuse_tracked(client, "track_anthropic")
    given: object = client  # checked at run time, whatever the annotation says
    if not isinstance(given, anthropic.AsyncAnthropic):
        msg = (
            f"track_anthropic needs an anthropic.AsyncAnthropic client, got "
            f"{type(client).__name__} (the synchronous client is not supported)"
        )
        raise TypeError(msg)
    recorder = Recorder(fluxgate, mode=mode, provider=_PROVIDER, metadata=metadata)

    def rewrap(make_client: Any) -> Any:
        @functools.wraps(make_client)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            return track_anthropic(make_client(*args, **kwargs), fluxgate, mode=mode, **metadata)

        return tracked

    create = tracked_create(recorder, _message_outcome, _MessageEvents)
    return Proxy(  # type: ignore[return-value]  # a Proxy stands in for the client
        client,
        {
            "messages": node({"create": create, "stream": _messages_stream(recorder)}),
            "beta": node({"messages": node({"create": create})}),
            "with_options": rewrap,
            "copy": rewrap,
        },
    )


def _messages_stream(recorder: Recorder) -> Any:
    def override(stream: Any) -> Any:
        @functools.wraps(stream)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            return _TrackedStreamManager(stream(*args, **kwargs), recorder, kwargs.get("model"))

        return tracked

    return override


class _TrackedStreamManager(Proxy):
    """`messages.stream(...)`'s manager; the stream it opens reports to a `TrackedStream`."""

    __slots__ = ("_fg_model", "_fg_raw", "_fg_recorder")

    def __init__(self, manager: Any, recorder: Recorder, model: Any) -> None:
        super().__init__(manager, {})
        object.__setattr__(self, "_fg_recorder", recorder)
        object.__setattr__(self, "_fg_model", model if isinstance(model, str) else None)
        object.__setattr__(self, "_fg_raw", None)

    async def __aenter__(self) -> Any:
        # The request is sent here, so the call is timed from here.
        timer: CallTimer = self._fg_recorder.start(self._fg_model)
        try:
            stream = await self._fg_target.__aenter__()
        except asyncio.CancelledError:
            timer.finish_nowait(cancelled_outcome(), streamed=True)
            raise
        except Exception as exc:
            await timer.finish(error_outcome(exc), streamed=True)
            raise
        try:
            # The helper reads its events from `_raw_stream`, the SDK's AsyncStream:
            # putting a TrackedStream there lets us see every event as it passes.
            raw = TrackedStream(stream._raw_stream, timer, _MessageEvents(), shown=stream)
            stream._raw_stream = raw
            object.__setattr__(self, "_fg_raw", raw)
        except Exception:
            log.exception("FluxGate: cannot watch this message stream; it is not tracked")
        return stream

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._fg_target.__aexit__(*exc_info)
        finally:
            raw = self._fg_raw
            if raw is not None:
                raw._fg_left_early(LEFT_EARLY)


def _usage_outcome(
    usage: Any, model: str | None, stop_reason: str | None, seen: Outcome | None = None
) -> Outcome:
    before = seen or Outcome()
    read = count(usage, "cache_read_input_tokens")
    written = count(usage, "cache_creation_input_tokens")
    before_written = before.extra.get("cacheWriteTokens")
    if read is None and written is None:
        cached = before.cached_tokens
    else:
        cached = (read or 0) + (written or 0)
    extra = {
        **before.extra,
        **extra_counts(
            cacheWriteTokens=written if written is not None else before_written,
            reasoningTokens=count(usage, "output_tokens_details", "thinking_tokens"),
        ),
    }
    if stop_reason is not None:
        extra["finishReason"] = stop_reason
    input_tokens = count(usage, "input_tokens")
    output_tokens = count(usage, "output_tokens")
    return Outcome(
        input_tokens=before.input_tokens if input_tokens is None else input_tokens,
        output_tokens=before.output_tokens if output_tokens is None else output_tokens,
        cached_tokens=cached,
        model=model or before.model,
        status=_STATUS.get(stop_reason or "", before.status),
        extra=extra,
    )


def _message_outcome(message: Any) -> Outcome:
    stop = getattr(message, "stop_reason", None)
    return _usage_outcome(
        getattr(message, "usage", None),
        getattr(message, "model", None),
        stop if isinstance(stop, str) else None,
    )


class _MessageEvents:
    """Reads a Messages stream: `message_start`, then `message_delta`s with the running usage."""

    def __init__(self) -> None:
        self._seen = Outcome()

    def add(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self._seen = _message_outcome(getattr(event, "message", None))
        elif kind == "message_delta":
            stop = getattr(getattr(event, "delta", None), "stop_reason", None)
            self._seen = _usage_outcome(
                getattr(event, "usage", None),
                None,
                stop if isinstance(stop, str) else None,
                self._seen,
            )
        return True

    def outcome(self) -> Outcome:
        return self._seen
