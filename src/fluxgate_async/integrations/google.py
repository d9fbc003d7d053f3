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
- `client.aio.models.embed_content(...)`.

Everything else, the synchronous `client.models` included, passes through untracked.

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

import functools
from typing import TYPE_CHECKING, Any, TypeVar

from .._extras import require_extra
from .._models import AiEventStatus
from .._recording import Mode, Outcome, Recorder
from ._proxy import Proxy, TrackedStream, node, refuse_tracked, run_tracked
from ._usage import count, extra_counts

if TYPE_CHECKING:
    from google.genai import Client

    from .._client import FluxGate

__all__ = ["track_genai"]

_ClientT = TypeVar("_ClientT", bound="Client")

_PROVIDER = "google"

_STATUS = {
    "STOP": AiEventStatus.SUCCESS,
    "MAX_TOKENS": AiEventStatus.MAX_TOKENS,
    "SAFETY": AiEventStatus.BLOCKED,
    "BLOCKLIST": AiEventStatus.BLOCKED,
    "PROHIBITED_CONTENT": AiEventStatus.BLOCKED,
    "SPII": AiEventStatus.BLOCKED,
    "IMAGE_SAFETY": AiEventStatus.BLOCKED,
    "IMAGE_PROHIBITED_CONTENT": AiEventStatus.BLOCKED,
    "RECITATION": AiEventStatus.RECITATION,
    "IMAGE_RECITATION": AiEventStatus.RECITATION,
    "MALFORMED_FUNCTION_CALL": AiEventStatus.MALFORMED_REQUEST,
}


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
    models = {
        "generate_content": _tracked(recorder, _content_outcome, streamed=False),
        "generate_content_stream": _tracked(recorder, _content_outcome, streamed=True),
        "embed_content": _tracked(recorder, _embedding_outcome, streamed=False),
    }
    return Proxy(client, {"aio": node({"models": node(models)})})  # type: ignore[return-value]


def _requested_model(kwargs: dict[str, Any]) -> str | None:
    model = kwargs.get("model")
    return model.removeprefix("models/") if isinstance(model, str) else None


def _tracked(recorder: Recorder, read: Any, *, streamed: bool) -> Any:
    def override(method: Any) -> Any:
        @functools.wraps(method)
        async def tracked(*args: Any, **kwargs: Any) -> Any:
            model = _requested_model(kwargs)
            return await run_tracked(
                recorder,
                model,
                lambda: method(*args, **kwargs),
                lambda answer: read(answer, model),
                (lambda stream, timer: TrackedStream(stream, timer, _ContentChunks(model)))
                if streamed
                else None,
            )

        return tracked

    return override


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
    status = _STATUS.get(finish or "", AiEventStatus.SUCCESS)
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
