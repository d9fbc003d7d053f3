"""From a finished model request to an `LLMEvent`, sent in the chosen mode.

This is the one mapping every route shares: the provider wrappers, the agent
framework hooks and `FluxGate.track` each read their own objects into an
`Outcome` (tokens, model, status), and `event_for` adds the provider, timing
and metadata to make the event. A `Recorder` holds a wrapper's client, mode,
provider and default metadata; a `CallTimer` times one call with the monotonic
clock and sends its event exactly once. Every step that could fail on a bug of
ours is caught and logged here, so that tracking never changes what the
tracked call returns or raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from ._attached_tracking import FluxGateCostTrackingResponse, attach
from ._models import AiEventMetadata, AiEventStatus, AiEventUsage, CreateAiEventResponse, LLMEvent
from ._routes import end_tracked_request, note_tracked_call
from ._tracking_context import current_context, metadata_fields

__all__ = [
    "CANCELLED",
    "CallTimer",
    "EventSink",
    "Mode",
    "Outcome",
    "Recorder",
    "cancelled_outcome",
    "error_outcome",
    "event_for",
]

log = logging.getLogger("fluxgate_async")

Mode = Literal["background", "inline"]
"""How a tracked call's event is sent.

`"background"`: queued with `FluxGate.record_event_nowait`; the call takes no
longer than without tracking (a whole answer's event is built once the
caller's task yields, see `CallTimer.finish_soon`). `"inline"`: awaited with `FluxGate.record_event`
before the call returns, and FluxGate's answer attached to the response (see
`tracking_of`).
"""

_MODES = ("background", "inline")

CANCELLED = "cancelled"
"""The error message recorded for a call cancelled before it ended."""

# HTTP statuses that say the request itself was wrong, not the caller's quota,
# credentials or luck: recorded as MALFORMED_REQUEST rather than ERROR.
_MALFORMED_STATUSES = frozenset({400, 404, 413, 422})

# The types of the extra fields the routes read off answers, compared by value.
_PLAIN = frozenset({str, int, float, bool, type(None)})


# Not frozen: every tracked call makes one, and a frozen class's `__init__` pays
# for `object.__setattr__` on each field. Nothing changes an outcome once made:
# the routes derive new ones with `attrs.evolve`.
@attrs.define
class Outcome:
    """What a provider's answer says about one call, before timing is added."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None
    model: str | None = None
    status: AiEventStatus = AiEventStatus.SUCCESS
    error_message: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    streaming_duration_in_ms: float | None = None
    """Set only by `FluxGate.track`, whose caller measures it; else from the first chunk."""
    latency_s: float | None = None
    """Set when the provider says how long the request ran (a background response,
    polled later); else the call's own duration."""


def _http_status(exc: BaseException) -> int | None:
    # openai and anthropic errors carry `status_code`, google-genai's `code`.
    for name in ("status_code", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def error_outcome(exc: BaseException, seen: Outcome | None = None) -> Outcome:
    """The outcome of a call that raised `exc`, keeping the usage seen before it.

    A 400, 404, 413 or 422 answer (the request itself was wrong) is
    MALFORMED_REQUEST; anything else (auth, rate limit, server, network, a bug
    in the caller's code) is ERROR. The message is the exception's. Never
    raises, even for an exception whose `str()` does: the caller's exception
    must reach the caller.
    """
    status = AiEventStatus.ERROR
    message = type(exc).__name__
    try:
        if _http_status(exc) in _MALFORMED_STATUSES:
            status = AiEventStatus.MALFORMED_REQUEST
        text = getattr(exc, "message", None)
        if not isinstance(text, str) or not text:
            text = str(exc)
        message = text or message
    except Exception:
        log.warning("FluxGate: cannot read the %s that ended a call", message, exc_info=True)
    return attrs.evolve(seen or Outcome(), status=status, error_message=message)


def cancelled_outcome(seen: Outcome | None = None) -> Outcome:
    """The outcome of a call cancelled before it ended, keeping the usage seen so far."""
    return attrs.evolve(seen or Outcome(), status=AiEventStatus.ERROR, error_message=CANCELLED)


def event_for(
    outcome: Outcome,
    *,
    provider: str | None,
    model: str | None,
    latency_s: float,
    streamed: bool | None,
    time_to_first_chunk_s: float | None,
    metadata: Mapping[str, Any],
) -> LLMEvent:
    """The event for one finished model request.

    `model` is the requested one, used when the answer names none;
    `latency_s` runs from the call's start to its end and
    `time_to_first_chunk_s` from its start to a stream's first chunk (`None`
    when unknown). `metadata` is merged already: defaults, then context.

    Raises:
        TypeError, ValueError: A value does not fit its field.
    """
    return _event(
        outcome,
        provider=provider,
        model=model,
        latency_s=latency_s,
        streamed=streamed,
        time_to_first_chunk_s=time_to_first_chunk_s,
        metadata=lambda extra: metadata_fields({**metadata, **extra}),
    )


def _event(
    outcome: Outcome,
    *,
    provider: str | None,
    model: str | None,
    latency_s: float,
    streamed: bool | None,
    time_to_first_chunk_s: float | None,
    metadata: Callable[[Mapping[str, Any]], AiEventMetadata],
) -> LLMEvent:
    """`event_for`, with `metadata(extra)` making the metadata of the outcome's `extra`.

    Milliseconds are rounded inline: every tracked call runs this.
    """
    extra = outcome.extra
    streaming_ms = outcome.streaming_duration_in_ms
    if streamed and time_to_first_chunk_s is not None:
        streaming_ms = round((latency_s - time_to_first_chunk_s) * 1000.0, 3)
        extra = {**extra, "timeToFirstTokenMs": round(time_to_first_chunk_s * 1000.0, 3)}
    return LLMEvent(
        usage=AiEventUsage(
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cached_tokens=outcome.cached_tokens,
            model=outcome.model or model,
            provider=provider,
            latency_in_ms=round(latency_s * 1000.0, 3),
            is_streamed=streamed,
            streaming_duration_in_ms=streaming_ms,
        ),
        status=outcome.status,
        error_message=outcome.error_message,
        metadata=metadata(extra),
    )


@runtime_checkable
class EventSink(Protocol):
    """What a `Recorder` sends events to: a `FluxGate` client."""

    def record_event_nowait(self, event: LLMEvent, *, idempotency_key: str | None = None) -> bool:
        """Queue `event` for background delivery, under `idempotency_key` if given."""

    async def record_event(
        self, event: LLMEvent, *, idempotency_key: str | None = None
    ) -> CreateAiEventResponse | None:
        """Send `event` now, under `idempotency_key` if given, and return the answer."""


class Recorder:
    """Sends the events of one wrapper, or of `FluxGate.track`, in its mode.

    Raises (at construction, where the caller wrote the mistake):
        TypeError: `fluxgate` is not a `FluxGate`.
        ValueError: `mode` is not `"background"` or `"inline"`, or a metadata
            value does not fit its field.
    """

    def __init__(
        self,
        fluxgate: EventSink,
        *,
        mode: str,
        provider: str | None,
        metadata: Mapping[str, Any],
    ) -> None:
        given: object = fluxgate  # checked at run time, whatever the annotation says
        if not isinstance(given, EventSink):
            msg = f"fluxgate must be a FluxGate client, got {type(fluxgate).__name__}"
            raise TypeError(msg)
        if mode not in _MODES:
            msg = f"mode must be 'background' or 'inline', got {mode!r}"
            raise ValueError(msg)
        metadata_fields(metadata)
        self.fluxgate = fluxgate
        self.mode = mode
        # Where background mode hands the events of calls that returned, to be
        # built once the caller's task yields (see `CallTimer.finish_soon`); a
        # sink that is not a `FluxGate` gets them at once.
        self.soon: Callable[[Callable[[], LLMEvent | None]], None] | None = (
            getattr(fluxgate, "_record_soon", None) if mode == "background" else None
        )
        self.provider = provider
        self.defaults: Mapping[str, Any] = dict(metadata)
        # The metadata last built, with the context and extra fields it was built
        # from: calls in one `tracking_context` (or none) mostly share it.
        self._last_metadata: tuple[Mapping[str, Any], Any, AiEventMetadata] | None = None

    def start(self, model: str | None = None) -> CallTimer:
        """Start timing one call now; `model` is the requested one, if known."""
        return CallTimer(self, model)

    def metadata(self, context: Mapping[str, Any], extra: Mapping[str, Any]) -> AiEventMetadata:
        """The metadata of a call: the defaults, then `context`, then the outcome's `extra`.

        Raises:
            TypeError, ValueError: A value does not fit its field.
        """
        # Reused only when the context is the same object and the extra fields
        # are the same plain values, type for type (1, 1.0 and True are equal).
        # The types come first: values are compared only once they are plain.
        key = (tuple(map(type, extra.values())), tuple(extra.items()))
        last = self._last_metadata
        if last is not None and last[0] is context and last[1] == key:
            return last[2]
        built = metadata_fields({**self.defaults, **context, **extra})
        if _PLAIN.issuperset(key[0]):
            self._last_metadata = (context, key, built)
        return built


class CallTimer:
    """Times one call and sends its event exactly once, however the call ends.

    The `tracking_context` in effect when the call starts is the one recorded,
    even when a stream is consumed later, elsewhere.
    """

    # What `finish_soon` leaves to build the event from: the reader, the answer,
    # and when the call ended.
    _soon: tuple[Callable[[Any], Outcome | None], Any, float]

    def __init__(self, recorder: Recorder, model: str | None) -> None:
        self._recorder = recorder
        self._model = model
        self.inline = recorder.mode == "inline"
        """Whether `finish` awaits FluxGate; else it queues, as `finish_nowait` does."""
        self._context = current_context()
        self._started = time.monotonic()
        self._first_chunk: float | None = None
        self.finished = False
        self._mark = note_tracked_call(self)  # hooks seeing this call too leave it to us

    def request_ended(self) -> None:
        """The request is over (its answer may still stream in): what follows is not in it."""
        end_tracked_request(self._mark)

    def first_chunk(self) -> None:
        """Note that the first chunk of a stream has arrived (later calls do nothing)."""
        if self._first_chunk is None:
            self._first_chunk = time.monotonic()

    def event(
        self, outcome: Outcome, *, streamed: bool | None, ended: float | None = None
    ) -> LLMEvent:
        """Build the event for `outcome`, timed up to `ended` (`time.monotonic()`), or now."""
        first = self._first_chunk
        latency = outcome.latency_s
        if latency is None:
            latency = (time.monotonic() if ended is None else ended) - self._started
        return _event(
            outcome,
            provider=self._recorder.provider,
            model=self._model,
            latency_s=latency,
            streamed=streamed,
            time_to_first_chunk_s=None if first is None else first - self._started,
            metadata=self._metadata,
        )

    def _metadata(self, extra: Mapping[str, Any]) -> AiEventMetadata:
        return self._recorder.metadata(self._context, extra)

    async def finish(
        self, outcome: Outcome, *, streamed: bool | None = False, response: object = None
    ) -> FluxGateCostTrackingResponse | None:
        """Send the event in the recorder's mode; in inline mode attach the answer to `response`.

        Returns the tracking outcome in inline mode, else `None`. Never raises,
        except `asyncio.CancelledError` while awaiting FluxGate in inline mode;
        the event is then queued in the background under the same key.
        """
        if self.finished:
            return None
        self.finished = True
        try:
            event = self.event(outcome, streamed=streamed)
        except Exception:
            log.exception("FluxGate: bug while building an event; not recorded")
            return None
        if not self.inline:
            self._recorder.fluxgate.record_event_nowait(event)
            return None
        fluxgate = self._recorder.fluxgate
        # One key for both ways of sending: if the caller is cancelled while
        # FluxGate answers, the event is queued instead, and the server records
        # it once even when the awaited request had reached it.
        key = str(uuid.uuid4())
        try:
            answer = await fluxgate.record_event(event, idempotency_key=key)
        except asyncio.CancelledError:
            fluxgate.record_event_nowait(event, idempotency_key=key)
            raise
        tracking = FluxGateCostTrackingResponse.from_answer(
            event.status, event.error_message, answer
        )
        if response is not None:
            attach(response, tracking)
        return tracking

    def finish_soon(self, read: Callable[[Any], Outcome | None], answer: Any) -> None:
        """Queue the event of the whole `answer` once the caller's task yields to the loop.

        For a call that returned `answer` in background mode: the call ends
        now, and `read(answer)` (an outcome, or `None` for nothing to record)
        and the event are made just after, so that the caller does not wait
        for them (see `fluxgate_async._later`). With a sink that is not a
        `FluxGate`, or in inline mode, it is all done now. Never raises.
        """
        if self.finished:
            return
        soon = self._recorder.soon
        if soon is None:
            outcome = read(answer)
            if outcome is None:
                self.discard()
            else:
                self.finish_nowait(outcome)
            return
        self.finished = True
        self._soon = (read, answer, time.monotonic())
        soon(self._build_soon)

    def _build_soon(self) -> LLMEvent | None:
        read, answer, ended = self._soon
        del self._soon  # the answer is the caller's: not kept any longer than needed
        outcome = read(answer)
        return None if outcome is None else self.event(outcome, streamed=False, ended=ended)

    def discard(self) -> None:
        """Send nothing for this call: it turned out not to be a model request to record."""
        self.finished = True

    def finish_nowait(self, outcome: Outcome, *, streamed: bool | None = False) -> None:
        """Queue the event in the background, whatever the mode: for calls that cannot wait.

        Used when a call is cancelled, a stream is left early or collected
        unconsumed. Never raises.
        """
        if self.finished:
            return
        self.finished = True
        try:
            self._recorder.fluxgate.record_event_nowait(self.event(outcome, streamed=streamed))
        except Exception:
            log.exception("FluxGate: bug while building an event; not recorded")
