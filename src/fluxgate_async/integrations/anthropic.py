"""Track `anthropic.AsyncAnthropic` calls: messages, beta messages, helpers and tool runners.

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
tracking, and the original client is not modified. Every request the client
sends passes through one tracked path, so a method is tracked however it is
called: bare, through `with_raw_response` or `with_streaming_response`, from an
SDK helper, or from a framework holding the client (pydantic-ai's
`AnthropicModel`). One event per Messages request:

- `client.messages.create(...)`, with or without `stream=True`, and
  `client.messages.parse(...)`;
- `async with client.messages.stream(...) as stream:` (the helper; the event is
  sent when the stream ends, or when the block exits; in inline mode
  `tracking_of(stream)` reads it);
- the same under `client.beta.messages`, and each model request of
  `client.beta.messages.tool_runner(...)` and of a message `thread`;
- the same on clients made by `client.with_options(...)` and `client.copy(...)`.

Everything else (token counting, batches, files, ...) passes through untracked;
the [SDK coverage](coverage.md) page says why for each method. A check the SDK
makes before sending, such as "Streaming is required for operations that may
take longer than 10 minutes" for a large `max_tokens` without `stream=True`,
raises as without tracking and records nothing.

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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._extras import require_extra
from .._recording import Mode, Outcome, Recorder
from ._conventions import finish_status
from ._proxy import refuse_tracked
from ._requests import Route, Sdk, tracked_client
from ._usage import count, extra_counts

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

    from .._client import FluxGate

__all__ = ["track_anthropic"]

_ClientT = TypeVar("_ClientT", bound="AsyncAnthropic")

_PROVIDER = "anthropic"


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
    tracked: _ClientT = _tracked(client, fluxgate, mode, metadata)
    return tracked


def _tracked(client: Any, fluxgate: FluxGate, mode: Mode, metadata: dict[str, Any]) -> Any:
    import anthropic  # noqa: PLC0415
    from anthropic._models import construct_type  # noqa: PLC0415
    from anthropic._resource import AsyncAPIResource  # noqa: PLC0415
    from anthropic._response import AsyncAPIResponse  # noqa: PLC0415

    sdk = Sdk(
        resource=AsyncAPIResource,
        api_error=anthropic.APIError,
        stream=anthropic.AsyncStream,
        raw=(AsyncAPIResponse,),
        construct=construct_type,
    )
    recorder = Recorder(fluxgate, mode=mode, provider=_PROVIDER, metadata=metadata)
    return tracked_client(
        client, recorder, _route, sdk, lambda copy: _tracked(copy, fluxgate, mode, metadata)
    )


def _route(method: str, path: str, body: Mapping[str, Any]) -> Route | None:
    """Which Anthropic requests spend tokens: messages, beta or not (`?beta=true`)."""
    if method == "post" and path.partition("?")[0] == "/v1/messages":
        return _MESSAGES
    return None


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
        status=finish_status(stop_reason, before.status),
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


_MESSAGES = Route(read=_message_outcome, events=_MessageEvents)
