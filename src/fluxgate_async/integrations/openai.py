"""Track `openai.AsyncOpenAI` calls: chat completions, responses, embeddings, images, audio.

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
and the original client is not modified. Every request the client sends passes
through one tracked path, so a method is tracked however it is called: bare,
through `with_raw_response` or `with_streaming_response` (the OpenAI Agents SDK
streams this way), from an SDK helper, or from a framework holding the client.
One event per request that spends tokens:

- `chat.completions.create(...)`, `.parse(...)` and the `.stream(...)` helper
  (and their `beta.chat.completions` twins);
- `responses.create(...)`, `.parse(...)`, `.stream(...)` and `.compact(...)`;
- `completions.create(...)` (the legacy API), `embeddings.create(...)`,
  `decisions.create(...)`;
- `images.generate`, `images.edit` and `images.create_variation` when the
  answer has `usage` (the gpt-image models), `audio.transcriptions.create` when
  it has token usage;
- background responses, see below;
- the same on clients made by `client.with_options(...)` and `client.copy(...)`.

Every other request (files, models, vector stores, ...) passes through
untracked. The [SDK coverage](coverage.md) page lists each method
that spends tokens, tracked or not and why.

A raw response (`with_raw_response`) is the SDK's own object, recorded when it
arrives; a streaming response (`with_streaming_response`) records when its body
is read, or when the stream its `parse()` returns ends; closed or dropped
before, it records ERROR "response closed before its body was read" (or the
stream's "stream closed before its end").

## Background responses

`responses.create(background=True)` records nothing when it is submitted. The
first `responses.retrieve(...)` (or resumed stream, or `responses.cancel(...)`)
that shows the response ended (`completed`, `failed`, `incomplete`,
`cancelled`) records it, once per response id, with `latencyInMs` from its
`created_at` to its `completed_at`. Retrieving a response that ran inline
records nothing more: it was recorded when it ran.

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

Embeddings record `usage.prompt_tokens` as input and 0 output tokens. Images,
transcriptions and decisions record `usage.input_tokens` and
`usage.output_tokens`; a compaction records its usage like a response. Input
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
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._extras import require_extra
from .._models import AiEventStatus
from .._recording import CANCELLED, Mode, Outcome, Recorder
from ._conventions import finish_status
from ._proxy import refuse_tracked
from ._requests import Route, Router, Sdk, tracked_client
from ._usage import count, count_parent, extra_counts

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
    tracked: _ClientT = _tracked(
        client,
        recorder,
        fluxgate=fluxgate,
        mode=mode,
        provider=provider,
        metadata=metadata,
        background=_BackgroundResponses(),
    )
    return tracked


def _tracked(
    client: Any,
    recorder: Recorder,
    *,
    fluxgate: FluxGate,
    mode: Mode,
    provider: str | None,
    metadata: dict[str, Any],
    background: _BackgroundResponses,
) -> Any:
    import openai  # noqa: PLC0415
    from openai._legacy_response import LegacyAPIResponse  # noqa: PLC0415
    from openai._models import construct_type  # noqa: PLC0415
    from openai._resource import AsyncAPIResource  # noqa: PLC0415
    from openai._response import AsyncAPIResponse  # noqa: PLC0415

    sdk = Sdk(
        resource=AsyncAPIResource,
        api_error=openai.APIError,
        stream=openai.AsyncStream,
        raw=(AsyncAPIResponse, LegacyAPIResponse),
        construct=construct_type,
    )

    def rewrap(copy: Any) -> Any:
        # A copy may point at another base_url: its provider is found again. It
        # shares the background responses recorded, so that each is recorded once.
        detected = (
            "azure" if isinstance(copy, openai.AsyncAzureOpenAI) else detect_provider(copy.base_url)
        )
        again = Recorder(fluxgate, mode=mode, provider=provider or detected, metadata=metadata)
        return _tracked(
            copy,
            again,
            fluxgate=fluxgate,
            mode=mode,
            provider=provider,
            metadata=metadata,
            background=background,
        )

    return tracked_client(client, recorder, _router(background), sdk, rewrap)


_RESPONSE_PATH = re.compile(r"/responses/[^/]+(/cancel)?")


def _router(background: _BackgroundResponses) -> Router:
    """Which OpenAI requests spend tokens, and how to read their answers."""

    def route(method: str, path: str, body: Mapping[str, Any]) -> Route | None:
        path = path.partition("?")[0]
        if method == "post":
            if path in {"/chat/completions", "/completions"}:
                return _chat_route(body)
            if path == "/responses":
                return background.route if body.get("background") is True else _RESPONSES
            found = _POST_ROUTES.get(path)
            if found is not None:
                return found
        match = _RESPONSE_PATH.fullmatch(path)
        if match is not None and (method == "get" or match[1] is not None):
            # A retrieve, a stream resumed, or a cancel: only a background
            # response that has ended is recorded, once.
            return background.route
        return None

    return route


def _chat_route(body: Mapping[str, Any]) -> Route:
    if body.get("stream") is not True:
        return _CHAT
    # Anything but a mapping (absent, None) means "not set".
    options = body.get("stream_options")
    if isinstance(options, Mapping) and "include_usage" in options:
        return _CHAT_STREAM
    given = options if isinstance(options, Mapping) else {}
    return Route(
        read=_chat_outcome,
        events=functools.partial(_ChatChunks, hide_usage_chunk=True),
        body={**body, "stream_options": {**given, "include_usage": True}},
    )


def _chat_usage(usage: Any, model: str | None, finish_reason: str | None) -> Outcome:
    # Read on every chat call: the prompt details once, the extra counts without
    # `extra_counts`' keyword dict (same keys, same order).
    prompt_details = count_parent(usage, "prompt_tokens_details")
    extra: dict[str, Any] = {}
    reasoning = count(usage, "completion_tokens_details", "reasoning_tokens")
    if reasoning:
        extra["reasoningTokens"] = reasoning
    cache_write = count(prompt_details, "cache_write_tokens")
    if cache_write:
        extra["cacheWriteTokens"] = cache_write
    if finish_reason is not None:
        extra["finishReason"] = finish_reason
    return Outcome(
        input_tokens=count(usage, "prompt_tokens") or 0,
        output_tokens=count(usage, "completion_tokens") or 0,
        cached_tokens=count(prompt_details, "cached_tokens"),
        model=model,
        status=finish_status(finish_reason),
        extra=extra,
    )


def _chat_outcome(completion: Any) -> Outcome:
    choices = getattr(completion, "choices", None)
    finish = getattr(choices[0], "finish_reason", None) if choices else None
    return _chat_usage(
        getattr(completion, "usage", None),
        getattr(completion, "model", None),
        finish if isinstance(finish, str) else None,
    )


class _ChatChunks:
    """Reads a chat completion stream; hides the usage chunk if the wrapper asked for it."""

    def __init__(self, *, hide_usage_chunk: bool) -> None:
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
        status = finish_status(reason, AiEventStatus.ERROR)
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
    """Reads a Responses API event stream: the final event carries the whole response.

    The stream of a background response records only its final event, once:
    leaving it earlier leaves the response running.
    """

    def __init__(self, background: _BackgroundResponses | None = None) -> None:
        self._background = background
        self._model: str | None = None
        self._final: Outcome | None = None
        self._error: str | None = None

    def add(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        response = getattr(event, "response", None)
        if response is not None:
            self._model = getattr(response, "model", None) or self._model
        if kind in _FINAL_EVENTS:
            background = self._background
            self._final = (
                _response_outcome(response) if background is None else background.read(response)
            )
        elif kind == "error":
            self._error = getattr(event, "message", None) or "error event in the stream"
        elif getattr(event, "event", None) == "error":
            # openai before 1.97.2 passes an `error` event on untyped, its body under `data`.
            data = getattr(event, "data", None)
            message = data.get("message") if isinstance(data, dict) else None
            self._error = message or "error event in the stream"
        return True

    def outcome(self) -> Outcome | None:
        if self._background is not None:
            return self._final
        outcome = self._final or Outcome(model=self._model)
        if self._error is not None:
            return attrs.evolve(outcome, status=AiEventStatus.ERROR, error_message=self._error)
        return outcome


def _embedding_outcome(response: Any) -> Outcome:
    return Outcome(
        input_tokens=count(getattr(response, "usage", None), "prompt_tokens") or 0,
        model=getattr(response, "model", None),
    )


def _tokens_outcome(answer: Any) -> Outcome | None:
    """Images and transcriptions: `usage.input_tokens` and `output_tokens`, when given."""
    usage = getattr(answer, "usage", None)
    input_tokens = count(usage, "input_tokens")
    output_tokens = count(usage, "output_tokens")
    if input_tokens is None and output_tokens is None:
        return None  # no usage (dall-e, whisper-1, a text transcript): nothing to price
    return Outcome(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cached_tokens=count(usage, "input_tokens_details", "cached_tokens"),
        model=getattr(answer, "model", None),
    )


class _UsageEvents:
    """Reads an image or transcription stream: the event that ends it carries the usage."""

    def __init__(self) -> None:
        self._final: Outcome | None = None

    def add(self, event: Any) -> bool:
        final = _tokens_outcome(event)
        if final is not None:
            self._final = final
        return True

    def outcome(self) -> Outcome:
        return self._final or Outcome()


_TERMINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})
_REMEMBERED = 10_000


class _BackgroundResponses:
    """Responses run with `background=True`: each is recorded once, when it is seen ended.

    Its submission records nothing; the `retrieve` (or resumed stream, or
    cancel) that first shows it ended records it, with the latency from its
    `created_at` to its `completed_at` (else to now).
    """

    def __init__(self) -> None:
        self._recorded: OrderedDict[str, None] = OrderedDict()
        self.route = Route(read=self.read, events=self.events)

    def events(self) -> _ResponseEvents:
        return _ResponseEvents(self)

    def read(self, response: Any) -> Outcome | None:
        if getattr(response, "background", None) is not True:
            return None  # a response run inline was recorded when it ran
        if getattr(response, "status", None) not in _TERMINAL:
            return None
        response_id = getattr(response, "id", None)
        if not isinstance(response_id, str) or response_id in self._recorded:
            return None
        self._recorded[response_id] = None
        if len(self._recorded) > _REMEMBERED:
            self._recorded.popitem(last=False)
        created = getattr(response, "created_at", None)
        completed = getattr(response, "completed_at", None)
        latency = None
        if isinstance(created, int | float):
            end = completed if isinstance(completed, int | float) else time.time()
            latency = max(0.0, float(end - created))
        return attrs.evolve(_response_outcome(response), latency_s=latency)


_CHAT = Route(read=_chat_outcome)
_CHAT_STREAM = Route(
    read=_chat_outcome, events=functools.partial(_ChatChunks, hide_usage_chunk=False)
)
_RESPONSES = Route(read=_response_outcome, events=_ResponseEvents)
_POST_ROUTES = {
    "/responses/compact": Route(read=_response_outcome),
    "/decisions": Route(read=_response_outcome),
    "/embeddings": Route(read=_embedding_outcome),
    "/images/generations": Route(read=_tokens_outcome, events=_UsageEvents),
    "/images/edits": Route(read=_tokens_outcome, events=_UsageEvents),
    "/images/variations": Route(read=_tokens_outcome),
    "/audio/transcriptions": Route(read=_tokens_outcome, events=_UsageEvents),
}
