"""`FluxGate.track`: a call to any provider, timed by a block that sets its usage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs

from ._attached_tracking import FluxGateCostTrackingResponse
from ._models import (
    AiEventStatus,
    _check_duration,
    _check_optional_bool,
    _check_optional_str,
    _check_optional_token_count,
    _check_token_count,
    _to_status,
)
from ._recording import EventSink, Outcome, Recorder, cancelled_outcome, error_outcome

__all__ = ["TrackedCall", "track"]


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
    fluxgate: EventSink,
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
