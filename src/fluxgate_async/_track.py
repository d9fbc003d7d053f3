"""Tracking one LLM call: timing it, building its event, and sending it in the chosen mode.

`FluxGate.track` (any provider) and the provider wrappers share this: a
`Recorder` holds a wrapper's client, mode, provider and default metadata; a
`CallTimer` times one call with the monotonic clock and sends its event exactly
once. Every step that could fail on a bug of ours is caught and logged here, so
that tracking never changes what the tracked call returns or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._context import current_context, metadata_fields
from ._models import (
    AiEventStatus,
    AiEventUsage,
    LLMEvent,
    _check_duration,
    _check_optional_bool,
    _check_optional_str,
    _check_optional_token_count,
    _check_token_count,
    _to_status,
)
from ._tracking import FluxGateCostTrackingResponse, attach

if TYPE_CHECKING:
    from ._client import FluxGate

__all__ = [
    "CallTimer",
    "Mode",
    "Outcome",
    "Recorder",
    "TrackedCall",
    "cancelled_outcome",
    "error_outcome",
    "track",
]

log = logging.getLogger("fluxgate_async")

Mode = Literal["background", "inline"]
"""How a tracked call's event is sent.

`"background"`: queued with `FluxGate.record_event_nowait`; the call takes no
longer than without tracking. `"inline"`: awaited with `FluxGate.record_event`
before the call returns, and FluxGate's answer attached to the response (see
`tracking_of`).
"""

_MODES = ("background", "inline")

CANCELLED = "cancelled"
"""The error message recorded for a call cancelled before it ended."""

# HTTP statuses that say the request itself was wrong, not the caller's quota,
# credentials or luck: recorded as MALFORMED_REQUEST rather than ERROR.
_MALFORMED_STATUSES = frozenset({400, 404, 413, 422})


@attrs.frozen
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


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class Recorder:
    """Sends the events of one wrapper, or of `FluxGate.track`, in its mode.

    Raises (at construction, where the caller wrote the mistake):
        TypeError: `fluxgate` is not a `FluxGate`.
        ValueError: `mode` is not `"background"` or `"inline"`, or a metadata
            value does not fit its field.
    """

    def __init__(
        self,
        fluxgate: FluxGate,
        *,
        mode: str,
        provider: str | None,
        metadata: Mapping[str, Any],
    ) -> None:
        from ._client import FluxGate  # noqa: PLC0415 - _client imports this module

        given: object = fluxgate  # checked at run time, whatever the annotation says
        if not isinstance(given, FluxGate):
            msg = f"fluxgate must be a FluxGate client, got {type(fluxgate).__name__}"
            raise TypeError(msg)
        if mode not in _MODES:
            msg = f"mode must be 'background' or 'inline', got {mode!r}"
            raise ValueError(msg)
        metadata_fields(metadata)
        self.fluxgate = fluxgate
        self.mode = mode
        self.provider = provider
        self.defaults: Mapping[str, Any] = dict(metadata)

    def start(self, model: str | None = None) -> CallTimer:
        """Start timing one call now; `model` is the requested one, if known."""
        return CallTimer(self, model)


class CallTimer:
    """Times one call and sends its event exactly once, however the call ends.

    The `tracking_context` in effect when the call starts is the one recorded,
    even when a stream is consumed later, elsewhere.
    """

    def __init__(self, recorder: Recorder, model: str | None) -> None:
        self._recorder = recorder
        self._model = model
        self._context = current_context()
        self._started = time.monotonic()
        self._first_chunk: float | None = None
        self.finished = False

    def first_chunk(self) -> None:
        """Note that the first chunk of a stream has arrived (later calls do nothing)."""
        if self._first_chunk is None:
            self._first_chunk = time.monotonic()

    def event(self, outcome: Outcome, *, streamed: bool | None) -> LLMEvent:
        """Build the event for `outcome`, timed up to now."""
        now = time.monotonic()
        recorder = self._recorder
        extra = dict(outcome.extra)
        streaming_ms = outcome.streaming_duration_in_ms
        if streamed and self._first_chunk is not None:
            streaming_ms = _ms(now - self._first_chunk)
            extra["timeToFirstTokenMs"] = _ms(self._first_chunk - self._started)
        fields = {**recorder.defaults, **self._context, **extra}
        return LLMEvent(
            usage=AiEventUsage(
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                cached_tokens=outcome.cached_tokens,
                model=outcome.model or self._model,
                provider=recorder.provider,
                latency_in_ms=_ms(now - self._started),
                is_streamed=streamed,
                streaming_duration_in_ms=streaming_ms,
            ),
            status=outcome.status,
            error_message=outcome.error_message,
            metadata=metadata_fields(fields),
        )

    async def finish(
        self, outcome: Outcome, *, streamed: bool | None = False, response: object = None
    ) -> FluxGateCostTrackingResponse | None:
        """Send the event in the recorder's mode; in inline mode attach the answer to `response`.

        Returns the tracking outcome in inline mode, else `None`. Never raises,
        except `asyncio.CancelledError` while awaiting FluxGate in inline mode.
        """
        if self.finished:
            return None
        self.finished = True
        try:
            event = self.event(outcome, streamed=streamed)
        except Exception:
            log.exception("FluxGate: bug while building an event; not recorded")
            return None
        if self._recorder.mode != "inline":
            self._recorder.fluxgate.record_event_nowait(event)
            return None
        answer = await self._recorder.fluxgate.record_event(event)
        tracking = FluxGateCostTrackingResponse.from_answer(
            event.status, event.error_message, answer
        )
        if response is not None:
            attach(response, tracking)
        return tracking

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


@attrs.define(repr=False)
class TrackedCall:
    """The call being tracked by `FluxGate.track`: set what it consumed in the block.

    Every attribute is checked when it is set, so a wrong value raises at the
    line that wrote it, naming the field.

    Attributes:
        input_tokens: Prompt tokens.
        output_tokens: Completion tokens.
        cached_tokens: Prompt tokens served from a cache, if known.
        model: The model that answered.
        status: The outcome, `SUCCESS` unless you set another (an exception
            leaving the block sets `ERROR`).
        error_message: Why the call did not succeed, if it did not.
        is_streamed: Whether the answer was streamed.
        streaming_duration_in_ms: How long the stream ran, if streamed.
        tracking: In `mode="inline"`, FluxGate's answer, set when the block exits.
    """

    input_tokens: int = attrs.field(default=0, validator=_check_token_count)
    output_tokens: int = attrs.field(default=0, validator=_check_token_count)
    cached_tokens: int | None = attrs.field(default=None, validator=_check_optional_token_count)
    model: str | None = attrs.field(default=None, validator=_check_optional_str)
    status: AiEventStatus = attrs.field(
        default=AiEventStatus.SUCCESS,
        converter=_to_status,
        on_setattr=attrs.setters.convert,
    )
    error_message: str | None = attrs.field(default=None, validator=_check_optional_str)
    is_streamed: bool | None = attrs.field(default=None, validator=_check_optional_bool)
    streaming_duration_in_ms: float | None = attrs.field(default=None, validator=_check_duration)
    tracking: FluxGateCostTrackingResponse | None = None

    def set_usage(
        self, input_tokens: int, output_tokens: int, cached_tokens: int | None = None
    ) -> None:
        """Set the token counts in one line.

        Raises:
            TypeError, ValueError: A count is not a non-negative int.
        """
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_tokens = cached_tokens

    def __repr__(self) -> str:
        return (
            f"<TrackedCall model={self.model!r} input_tokens={self.input_tokens} "
            f"output_tokens={self.output_tokens} status={self.status.value}>"
        )

    def _outcome(self) -> Outcome:
        return Outcome(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            model=self.model,
            status=self.status,
            error_message=self.error_message,
            streaming_duration_in_ms=self.streaming_duration_in_ms,
        )


@contextlib.asynccontextmanager
async def track(
    fluxgate: FluxGate,
    *,
    model: str | None,
    provider: str | None,
    mode: str,
    metadata: Mapping[str, Any],
) -> AsyncIterator[TrackedCall]:
    """Implement `FluxGate.track` (documented there)."""
    recorder = Recorder(fluxgate, mode=mode, provider=provider, metadata=metadata)
    call = TrackedCall(model=model)
    timer = recorder.start(model)
    try:
        yield call
    except asyncio.CancelledError:
        timer.finish_nowait(cancelled_outcome(call._outcome()), streamed=call.is_streamed)
        raise
    except Exception as exc:
        call.tracking = await timer.finish(
            error_outcome(exc, call._outcome()), streamed=call.is_streamed
        )
        raise
    call.tracking = await timer.finish(call._outcome(), streamed=call.is_streamed)
