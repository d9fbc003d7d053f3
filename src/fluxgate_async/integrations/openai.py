"""Track `openai.AsyncOpenAI` calls: chat completions, responses and embeddings, streamed or not.

Install with `pip install 'fluxgate-async[openai]'`.

```python
from openai import AsyncOpenAI
from fluxgate_async import FluxGate, tracking_context
from fluxgate_async.integrations.openai import track_openai

async with FluxGate() as fg, track_openai(AsyncOpenAI(), fg, feature="chat") as client:
    with tracking_context(user="user-123"):
        reply = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}]
        )
    print(reply.choices[0].message.content)
```

Leaving the block closes the OpenAI client, then delivers the event and closes
the FluxGate client.

`client` is a drop-in: it is still an `AsyncOpenAI` to `isinstance` and to type
checkers, every call returns and raises exactly what it would without tracking,
and the original client is not modified. Tracked, one event per call:

- `client.chat.completions.create(...)`, with or without `stream=True`;
- `client.responses.create(...)`, with or without `stream=True`;
- `client.embeddings.create(...)`;
- the same on clients made by `client.with_options(...)` and `client.copy(...)`.

Everything else (`with_raw_response`, `.stream()` and `.parse()` helpers, files,
images, ...) passes through untracked.

## Tokens

Chat completions, from `usage`:

| event field | chat completion `usage` |
| --- | --- |
| `inputTokens` | `prompt_tokens` |
| `outputTokens` | `completion_tokens` |
| `cachedTokens` | `prompt_tokens_details.cached_tokens` |
| metadata `reasoningTokens` | `completion_tokens_details.reasoning_tokens` |
| metadata `cacheWriteTokens` | `prompt_tokens_details.cache_write_tokens` |
| metadata `finishReason` | `choices[0].finish_reason` |

Responses API, from `usage`:

| event field | response `usage` |
| --- | --- |
| `inputTokens` | `input_tokens` |
| `outputTokens` | `output_tokens` |
| `cachedTokens` | `input_tokens_details.cached_tokens` |
| metadata `reasoningTokens` | `output_tokens_details.reasoning_tokens` |
| metadata `cacheWriteTokens` | `input_tokens_details.cache_write_tokens` |
| metadata `finishReason` | `incomplete_details.reason`, else the response's `status` |

Embeddings record `usage.prompt_tokens` as input and 0 output tokens. Input
tokens include the cached ones, as OpenAI counts them; metadata counts are
sent only when known and non-zero. The model is the one the response names,
else the requested one.

## Status

| OpenAI says | status |
| --- | --- |
| `stop`, `tool_calls`, `function_call` (or no finish reason) | SUCCESS |
| `length` | MAX_TOKENS |
| `content_filter` | CONTENT_FILTER |
| Responses API `status="failed"` | ERROR, with `error.message` |
| Responses API `status="incomplete"`, reason `max_output_tokens` | MAX_TOKENS |
| Responses API `status="incomplete"`, reason `content_filter` | CONTENT_FILTER |
| Responses API `status="incomplete"`, another reason | ERROR, "incomplete: <reason>" |
| Responses API `status="cancelled"`, or an `error` stream event | ERROR |
| the call raised a 400, 404, 413 or 422 `APIStatusError` | MALFORMED_REQUEST, then re-raised |
| the call raised anything else | ERROR with its message, then re-raised |
| the call was cancelled | ERROR "cancelled", then `CancelledError` re-raised |

## Streams

A streamed call records `isStreamed: true`, `streamingDurationInMs` from the
first chunk to the end, and metadata `timeToFirstTokenMs`. Chat streams are
sent with `stream_options={"include_usage": True}` unless you set
`include_usage` yourself; when the wrapper added it, the extra usage-only last
chunk is consumed by the wrapper and not shown to you, so your loop sees the
same chunks as without tracking. The finish reason is the last one a chunk
with choices carried. How a stream left early is recorded: see
`fluxgate_async.integrations`.

## Provider

`provider` is `openai`, or the OpenAI-compatible host the client's `base_url`
points at: `azure` (also for `AsyncAzureOpenAI`), `groq`, `openrouter`, `xai`,
`deepseek`, `together`, `fireworks`, `mistral`, `perplexity`, `cerebras`,
`deepinfra`, `google` (Gemini's OpenAI endpoint). Pass `provider=` to name
another.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._extras import require_extra
from .._models import AiEventStatus
from .._recording import CANCELLED, Mode, Outcome, Recorder
from ._proxy import Proxy, TrackedStream, node, refuse_tracked, run_tracked, tracked_create
from ._usage import count, extra_counts

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from .._client import FluxGate

__all__ = ["detect_provider", "track_openai"]

_ClientT = TypeVar("_ClientT", bound="AsyncOpenAI")

# Host (or parent domain) of an OpenAI-compatible API -> the provider FluxGate prices.
_HOSTS = (
    ("openai.azure.com", "azure"),
    ("cognitiveservices.azure.com", "azure"),
    ("services.ai.azure.com", "azure"),
    ("models.inference.ai.azure.com", "azure"),
    ("api.groq.com", "groq"),
    ("openrouter.ai", "openrouter"),
    ("api.x.ai", "xai"),
    ("api.deepseek.com", "deepseek"),
    ("api.together.xyz", "together"),
    ("api.together.ai", "together"),
    ("api.fireworks.ai", "fireworks"),
    ("api.mistral.ai", "mistral"),
    ("api.perplexity.ai", "perplexity"),
    ("api.cerebras.ai", "cerebras"),
    ("api.deepinfra.com", "deepinfra"),
    ("generativelanguage.googleapis.com", "google"),
)

_CHAT_STATUS = {
    "stop": AiEventStatus.SUCCESS,
    "tool_calls": AiEventStatus.SUCCESS,
    "function_call": AiEventStatus.SUCCESS,
    "length": AiEventStatus.MAX_TOKENS,
    "content_filter": AiEventStatus.CONTENT_FILTER,
}

_INCOMPLETE_STATUS = {
    "max_output_tokens": AiEventStatus.MAX_TOKENS,
    "content_filter": AiEventStatus.CONTENT_FILTER,
}


def detect_provider(base_url: object) -> str:
    """The provider an OpenAI-compatible `base_url` belongs to; `openai` for any other host.

    Example:
        >>> detect_provider("https://api.groq.com/openai/v1")
        'groq'
        >>> detect_provider("https://my-resource.openai.azure.com/openai/deployments/gpt-4o")
        'azure'
    """
    from yarl import URL  # noqa: PLC0415 - aiohttp's URL type; imported where needed

    host = (URL(str(base_url)).host or "").lower().rstrip(".")
    for domain, provider in _HOSTS:
        if host == domain or host.endswith("." + domain):
            return provider
    return "openai"


def track_openai(
    client: _ClientT,
    fluxgate: FluxGate,
    *,
    mode: Mode = "background",
    provider: str | None = None,
    **metadata: Any,
) -> _ClientT:
    """Return a drop-in `AsyncOpenAI` whose calls are recorded to FluxGate.

    See the module documentation for what is tracked and how.

    Args:
        client: The `openai.AsyncOpenAI` (or `AsyncAzureOpenAI`) client; not modified.
        fluxgate: The FluxGate client that records the events.
        mode: `"background"` (the calls take no longer than without tracking)
            or `"inline"` (each call awaits FluxGate and its response carries a
            `FluxGateCostTrackingResponse`, see `fluxgate_async.tracking_of`).
        provider: The provider to record, instead of the one found from
            `client.base_url`.
        **metadata: Default metadata for every call (`feature`, `user`,
            `session_id`, `step`, `conversation_id`, any further field);
            `tracking_context` blocks override it.

    Raises:
        TypeError: `client` is not an `openai.AsyncOpenAI`, or `fluxgate` is not a `FluxGate`.
        ValueError: An unknown `mode`, an invalid metadata value, or a client
            that is already tracked.
    """
    openai = require_extra("openai", extra="openai", needed_by="track_openai")

    refuse_tracked(client, "track_openai")
    given: object = client  # checked at run time, whatever the annotation says
    if not isinstance(given, openai.AsyncOpenAI):
        msg = (
            f"track_openai needs an openai.AsyncOpenAI client, got {type(client).__name__}"
            " (the synchronous client is not supported)"
        )
        raise TypeError(msg)
    detected = (
        "azure" if isinstance(client, openai.AsyncAzureOpenAI) else detect_provider(client.base_url)
    )
    recorder = Recorder(fluxgate, mode=mode, provider=provider or detected, metadata=metadata)

    def rewrap(make_client: Any) -> Any:
        # A copy may point at another base_url: its provider is found again.
        @functools.wraps(make_client)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            copy = make_client(*args, **kwargs)
            return track_openai(copy, fluxgate, mode=mode, provider=provider, **metadata)

        return tracked

    return Proxy(  # type: ignore[return-value]  # a Proxy stands in for the client
        client,
        {
            "chat": node({"completions": node({"create": _chat_create(recorder)})}),
            "responses": node(
                {"create": tracked_create(recorder, _response_outcome, _ResponseEvents)}
            ),
            "embeddings": node({"create": tracked_create(recorder, _embedding_outcome)}),
            "with_options": rewrap,
            "copy": rewrap,
        },
    )


def _chat_create(recorder: Recorder) -> Any:
    def override(create: Any) -> Any:
        @functools.wraps(create)
        async def tracked(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("stream") is not True:
                return await run_tracked(
                    recorder, kwargs.get("model"), lambda: create(*args, **kwargs), _chat_outcome
                )
            # Anything but a mapping (absent, None, the SDK's `omit`) means "not set".
            options = kwargs.get("stream_options")
            injected = not isinstance(options, Mapping) or "include_usage" not in options
            if injected:
                given = options if isinstance(options, Mapping) else {}
                kwargs = {**kwargs, "stream_options": {**given, "include_usage": True}}
            return await run_tracked(
                recorder,
                kwargs.get("model"),
                lambda: create(*args, **kwargs),
                _chat_outcome,
                lambda stream, timer: TrackedStream(stream, timer, _ChatChunks(injected)),
            )

        return tracked

    return override


def _chat_usage(usage: Any, model: str | None, finish_reason: str | None) -> Outcome:
    extra = extra_counts(
        reasoningTokens=count(usage, "completion_tokens_details", "reasoning_tokens"),
        cacheWriteTokens=count(usage, "prompt_tokens_details", "cache_write_tokens"),
    )
    if finish_reason is not None:
        extra["finishReason"] = finish_reason
    return Outcome(
        input_tokens=count(usage, "prompt_tokens") or 0,
        output_tokens=count(usage, "completion_tokens") or 0,
        cached_tokens=count(usage, "prompt_tokens_details", "cached_tokens"),
        model=model,
        status=_CHAT_STATUS.get(finish_reason or "stop", AiEventStatus.SUCCESS),
        extra=extra,
    )


def _chat_outcome(completion: Any) -> Outcome:
    choices = getattr(completion, "choices", None) or ()
    finish = getattr(choices[0], "finish_reason", None) if choices else None
    return _chat_usage(
        getattr(completion, "usage", None),
        getattr(completion, "model", None),
        finish if isinstance(finish, str) else None,
    )


class _ChatChunks:
    """Reads a chat completion stream; hides the usage chunk if the wrapper asked for it."""

    def __init__(self, hide_usage_chunk: bool) -> None:
        self._hide_usage_chunk = hide_usage_chunk
        self._model: str | None = None
        self._finish: str | None = None
        self._usage: Any = None

    def add(self, chunk: Any) -> bool:
        self._model = getattr(chunk, "model", None) or self._model
        choices = getattr(chunk, "choices", None)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self._usage = usage
        if choices:
            finish = getattr(choices[0], "finish_reason", None)
            if isinstance(finish, str):
                self._finish = finish
            return True
        return not (self._hide_usage_chunk and usage is not None)

    def outcome(self) -> Outcome:
        return _chat_usage(self._usage, self._model, self._finish)


def _response_outcome(response: Any) -> Outcome:
    usage = getattr(response, "usage", None)
    status_text = getattr(response, "status", None)
    details = getattr(response, "incomplete_details", None)
    reason = getattr(details, "reason", None)
    status = AiEventStatus.SUCCESS
    message = None
    if status_text == "failed":
        status = AiEventStatus.ERROR
        message = getattr(getattr(response, "error", None), "message", None) or "failed"
    elif status_text == "incomplete":
        status = _INCOMPLETE_STATUS.get(reason or "", AiEventStatus.ERROR)
        if status is AiEventStatus.ERROR:
            message = f"incomplete: {reason}"
    elif status_text == "cancelled":
        status = AiEventStatus.ERROR
        message = CANCELLED
    extra = extra_counts(
        reasoningTokens=count(usage, "output_tokens_details", "reasoning_tokens"),
        cacheWriteTokens=count(usage, "input_tokens_details", "cache_write_tokens"),
    )
    if reason or status_text:
        extra["finishReason"] = reason or status_text
    return Outcome(
        input_tokens=count(usage, "input_tokens") or 0,
        output_tokens=count(usage, "output_tokens") or 0,
        cached_tokens=count(usage, "input_tokens_details", "cached_tokens"),
        model=getattr(response, "model", None),
        status=status,
        error_message=message,
        extra=extra,
    )


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _ResponseEvents:
    """Reads a Responses API event stream: the final event carries the whole response."""

    def __init__(self) -> None:
        self._model: str | None = None
        self._final: Outcome | None = None
        self._error: str | None = None

    def add(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        response = getattr(event, "response", None)
        if response is not None:
            self._model = getattr(response, "model", None) or self._model
        if kind in _FINAL_EVENTS:
            self._final = _response_outcome(response)
        elif kind == "error":
            self._error = getattr(event, "message", None) or "error event in the stream"
        return True

    def outcome(self) -> Outcome:
        outcome = self._final or Outcome(model=self._model)
        if self._error is not None:
            return attrs.evolve(outcome, status=AiEventStatus.ERROR, error_message=self._error)
        return outcome


def _embedding_outcome(response: Any) -> Outcome:
    return Outcome(
        input_tokens=count(getattr(response, "usage", None), "prompt_tokens") or 0,
        model=getattr(response, "model", None),
    )
