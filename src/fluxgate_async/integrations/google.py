"""Track `google.genai.Client` async calls to Gemini: content, streamed or not, and embeddings.

Install with `pip install 'fluxgate-async[google]'`.

```python
from google import genai
from fluxgate_async import FluxGate
from fluxgate_async.integrations.google import track_genai

async with (
    FluxGate() as fg,
    track_genai(genai.Client(), fg, feature="summaries").aio as client,
):
    reply = await client.models.generate_content(
        model="gemini-2.5-flash", contents="Summarise: tokens are billed."
    )
    print(reply.text)
    async for chunk in await client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="And once more, streamed."
    ):
        print(chunk.text, end="")
```

`client` is a drop-in: it is still a `genai.Client` to `isinstance` and to type
checkers, every call returns and raises exactly what it would without
tracking, and the original client is not modified. Tracked, one event per call:

- `client.aio.models.generate_content(...)`;
- `client.aio.models.generate_content_stream(...)`;
- `client.aio.models.embed_content(...)`;
- each message of a chat made by `client.aio.chats.create(...)`, with
  `send_message` or `send_message_stream`.

One event per model request: when the SDK sends several for one call
(automatic function calling, which runs your Python tools between requests,
or automatic continuations), each records its own usage.

Everything else, the synchronous `client.models` included, passes through
untracked; the [SDK coverage](coverage.md) page says why for each method. An
error the SDK raises before sending (an invalid argument) records nothing.

## Tokens

| event field | `usage_metadata` |
| --- | --- |
| `inputTokens` | `prompt_token_count + tool_use_prompt_token_count` |
| `outputTokens` | `candidates_token_count + thoughts_token_count` (thinking is billed as output) |
| `cachedTokens` | `cached_content_token_count` |
| metadata `reasoningTokens` | `thoughts_token_count` |
| metadata `finishReason` | `candidates[0].finish_reason`, else `prompt_feedback.block_reason` |

In a stream, the last chunk's `usage_metadata` (Gemini sends running totals)
and the last finish reason count. For `embed_content`, input tokens are
`usage_metadata.prompt_token_count`, else the sum of each embedding's
`statistics.token_count` (Vertex AI), else 0. The model is the response's
`model_version`, else the requested model without its `models/` prefix.
Provider is `google`.

## Status

| Gemini says | status |
| --- | --- |
| `STOP` (or no finish reason, or any reason below not listed) | SUCCESS |
| `MAX_TOKENS` | MAX_TOKENS |
| `SAFETY`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII` | BLOCKED |
| `IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT` | BLOCKED |
| a blocked prompt (`prompt_feedback.block_reason`) | BLOCKED, with the block reason |
| `RECITATION`, `IMAGE_RECITATION` | RECITATION |
| `MALFORMED_FUNCTION_CALL` | MALFORMED_REQUEST |
| the call raised a 400, 404, 413 or 422 `errors.APIError` | MALFORMED_REQUEST, then re-raised |
| the call raised anything else | ERROR with its message, then re-raised |
| the call was cancelled | ERROR "cancelled", then `CancelledError` re-raised |

Streams record `isStreamed: true`, `streamingDurationInMs` from the first
chunk to the end and metadata `timeToFirstTokenMs`.
"""

from __future__ import annotations

import contextvars
import inspect
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, TypeVar

from .._extras import require_extra
from .._models import AiEventStatus
from .._recording import CallTimer, Mode, Outcome, Recorder
from ._conventions import finish_status
from ._proxy import (
    LEFT_EARLY,
    IteratedProxy,
    Proxy,
    TrackedStream,
    refuse_tracked,
    run_tracked,
)
from ._usage import count, extra_counts

if TYPE_CHECKING:
    from google.genai import Client

    from .._client import FluxGate

__all__ = ["track_genai"]

_ClientT = TypeVar("_ClientT", bound="Client")

_PROVIDER = "google"


def track_genai(
    client: _ClientT,
    fluxgate: FluxGate,
    *,
    mode: Mode = "background",
    **metadata: Any,
) -> _ClientT:
    """Return a drop-in `google.genai.Client` whose async calls are recorded to FluxGate.

    See the module documentation for what is tracked and how.

    Args:
        client: The `google.genai.Client`; not modified.
        fluxgate: The FluxGate client that records the events.
        mode: `"background"` (the calls take no longer than without tracking)
            or `"inline"` (each call awaits FluxGate and its response carries a
            `FluxGateCostTrackingResponse`, see `fluxgate_async.tracking_of`).
        **metadata: Default metadata for every call (`feature`, `user`,
            `session_id`, `step`, `conversation_id`, any further field);
            `tracking_context` blocks override it.

    Raises:
        TypeError: `client` is not a `google.genai.Client`, or `fluxgate` is not a `FluxGate`.
        ValueError: An unknown `mode`, an invalid metadata value, or a client
            that is already tracked.
    """
    genai = require_extra("google.genai", extra="google", needed_by="track_genai")

    refuse_tracked(client, "track_genai")
    given: object = client  # checked at run time, whatever the annotation says
    if not isinstance(given, genai.Client):
        msg = f"track_genai needs a google.genai.Client, got {type(client).__name__}"
        raise TypeError(msg)
    recorder = Recorder(fluxgate, mode=mode, provider=_PROVIDER, metadata=metadata)

    def aio(async_client: Any) -> Proxy:
        tracked_models = _TrackedModels(async_client.models, recorder)
        # A chat sends each message through the models it is given: the tracked ones.
        return Proxy(
            async_client,
            {
                "models": lambda _: tracked_models,
                "chats": lambda chats: type(chats)(modules=tracked_models),
            },
        )

    return Proxy(client, {"aio": aio})  # type: ignore[return-value]


def _requested_model(kwargs: dict[str, Any]) -> str | None:
    model = kwargs.get("model")
    return model.removeprefix("models/") if isinstance(model, str) else None


# The stream the caller holds, while it asks for its next chunk: the one to attach
# the inline tracking to, whichever model request that chunk comes from.
_shown: contextvars.ContextVar[object] = contextvars.ContextVar(
    "fluxgate_async_gemini_stream", default=None
)


class _TrackedModels(Proxy):
    """`client.aio.models`, whose methods run with this view as `self`.

    `generate_content` and `generate_content_stream` may send several model
    requests (automatic function calling, continuations), each through the
    SDK's private `_generate_content` or `_generate_content_stream`: tracking
    those records one event per model request, with its own usage. An SDK
    without them has its public methods tracked instead, one event per call.
    """

    __slots__ = ("_fg_recorder",)

    def __init__(self, models: Any, recorder: Recorder) -> None:
        super().__init__(models, {})
        object.__setattr__(self, "_fg_recorder", recorder)

    def __getattr__(self, name: str) -> Any:
        cache: dict[str, Any] = self._fg_cache
        found = cache.get(name)
        if found is not None:
            return found
        member = inspect.getattr_static(type(self._fg_target), name, None)
        if not isinstance(member, FunctionType):
            return getattr(self._fg_target, name)
        found = cache[name] = MethodType(member, self)
        return found

    async def _fg_run(self, method: str, kwargs: dict[str, Any], *, streamed: bool) -> Any:
        model = _requested_model(kwargs)
        shown = _shown.get()
        return await run_tracked(
            self._fg_recorder,
            model,
            lambda: getattr(self._fg_target, method)(**kwargs),
            lambda answer: _content_outcome(answer, model),
            (lambda stream, timer: _hop(stream, timer, model, shown)) if streamed else None,
            reached=_reached,
        )

    async def _generate_content(self, **kwargs: Any) -> Any:
        return await self._fg_run("_generate_content", kwargs, streamed=False)

    async def _generate_content_stream(self, **kwargs: Any) -> Any:
        return await self._fg_run("_generate_content_stream", kwargs, streamed=True)

    async def generate_content(self, **kwargs: Any) -> Any:
        """The SDK's `generate_content`: each model request it sends is recorded."""
        sdk = type(self._fg_target)
        if not hasattr(sdk, "_generate_content"):
            return await self._fg_run("generate_content", kwargs, streamed=False)
        return await sdk.generate_content(self, **kwargs)

    async def generate_content_stream(self, **kwargs: Any) -> Any:
        """The SDK's `generate_content_stream`: each model request it streams is recorded."""
        sdk = type(self._fg_target)
        if not hasattr(sdk, "_generate_content_stream"):
            return await self._fg_run("generate_content_stream", kwargs, streamed=True)
        return _ShownStream(await sdk.generate_content_stream(self, **kwargs))

    async def embed_content(self, **kwargs: Any) -> Any:
        """The SDK's `embed_content`, recorded."""
        model = _requested_model(kwargs)
        return await run_tracked(
            self._fg_recorder,
            model,
            lambda: self._fg_target.embed_content(**kwargs),
            lambda answer: _embedding_outcome(answer, model),
            reached=_reached,
        )


def _hop(stream: Any, timer: CallTimer, model: str | None, shown: object) -> TrackedStream:
    """One model request of a stream; the stream the caller holds learns of it."""
    hop = TrackedStream(stream, timer, _ContentChunks(model), shown=shown)
    if isinstance(shown, _ShownStream):
        object.__setattr__(shown, "_fg_hop", hop)
    return hop


class _ShownStream(IteratedProxy):
    """The SDK's stream of `generate_content_stream`, handed to the caller.

    While it fetches a chunk, the model request that chunk comes from knows it
    as the stream to attach its inline tracking to, and it knows that request,
    to record it when the caller leaves early (`break`, `aclose()`).
    """

    __slots__ = ("_fg_hop", "fluxgate_tracking")

    def __init__(self, stream: Any) -> None:
        super().__init__(stream, {})
        object.__setattr__(self, "_fg_hop", None)

    async def __anext__(self) -> Any:
        token = _shown.set(self)
        try:
            return await self._fg_target.__anext__()
        finally:
            _shown.reset(token)

    async def aclose(self) -> None:
        """Close the SDK's stream; a model request not yet recorded is recorded as left."""
        try:
            await self._fg_target.aclose()
        finally:
            self._fg_left()

    def _fg_left(self) -> None:
        hop: TrackedStream | None = self._fg_hop
        if hop is not None:
            hop._fg_left_early(LEFT_EARLY)


# The HTTP libraries google-genai sends with: their errors are the provider's.
_TRANSPORTS = frozenset({"aiohttp", "httpx", "httpx2", "httpcore", "httpcore2"})


def _reached(exc: Exception) -> bool:
    """Whether `exc` came from the provider or the way to it, not from the SDK's own checks."""
    from google.genai import errors  # noqa: PLC0415

    if isinstance(exc, errors.APIError | OSError | TimeoutError):
        return True
    return type(exc).__module__.partition(".")[0] in _TRANSPORTS


def _raw(value: Any) -> str | None:
    # The SDK's enums are str subclasses; an unknown reason may come as a plain str.
    value = getattr(value, "value", value)
    return value if isinstance(value, str) else None


def _outcome(
    usage: Any, model: str | None, finish: str | None, block: str | None, block_message: Any
) -> Outcome:
    thoughts = count(usage, "thoughts_token_count")
    extra = extra_counts(reasoningTokens=thoughts)
    if finish or block:
        extra["finishReason"] = finish or block
    status = finish_status(finish)
    message = None
    if block:
        status = AiEventStatus.BLOCKED
        message = block_message if isinstance(block_message, str) else f"prompt blocked: {block}"
    return Outcome(
        input_tokens=(count(usage, "prompt_token_count") or 0)
        + (count(usage, "tool_use_prompt_token_count") or 0),
        output_tokens=(count(usage, "candidates_token_count") or 0) + (thoughts or 0),
        cached_tokens=count(usage, "cached_content_token_count"),
        model=model,
        status=status,
        error_message=message,
        extra=extra,
    )


def _finish_of(response: Any) -> str | None:
    candidates = getattr(response, "candidates", None) or ()
    return _raw(getattr(candidates[0], "finish_reason", None)) if candidates else None


def _content_outcome(response: Any, model: str | None) -> Outcome:
    feedback = getattr(response, "prompt_feedback", None)
    return _outcome(
        getattr(response, "usage_metadata", None),
        getattr(response, "model_version", None) or model,
        _finish_of(response),
        _raw(getattr(feedback, "block_reason", None)),
        getattr(feedback, "block_reason_message", None),
    )


class _ContentChunks:
    """Reads a `generate_content_stream`: running usage totals, the last finish reason."""

    def __init__(self, model: str | None) -> None:
        self._model = model
        self._usage: Any = None
        self._finish: str | None = None
        self._feedback: Any = None

    def add(self, chunk: Any) -> bool:
        self._model = getattr(chunk, "model_version", None) or self._model
        self._usage = getattr(chunk, "usage_metadata", None) or self._usage
        self._finish = _finish_of(chunk) or self._finish
        self._feedback = getattr(chunk, "prompt_feedback", None) or self._feedback
        return True

    def outcome(self) -> Outcome:
        return _outcome(
            self._usage,
            self._model,
            self._finish,
            _raw(getattr(self._feedback, "block_reason", None)),
            getattr(self._feedback, "block_reason_message", None),
        )


def _embedding_outcome(response: Any, model: str | None) -> Outcome:
    tokens = count(response, "usage_metadata", "prompt_token_count")
    if tokens is None:
        embeddings = getattr(response, "embeddings", None) or ()
        tokens = sum(count(e, "statistics", "token_count") or 0 for e in embeddings)
    return Outcome(input_tokens=tokens, model=model)
