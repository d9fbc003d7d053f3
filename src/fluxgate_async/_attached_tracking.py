"""What an inline-tracked call learned from FluxGate, and how to read it off a response."""

from __future__ import annotations

import logging
import weakref
from typing import Any

import attrs

from ._models import AiEventStatus, CreateAiEventResponse

__all__ = ["TRACKING_ATTRIBUTE", "FluxGateCostTrackingResponse", "attach", "tracking_of"]

log = logging.getLogger("fluxgate_async")

TRACKING_ATTRIBUTE = "fluxgate_tracking"
"""The attribute a response carries its `FluxGateCostTrackingResponse` in, when it accepts one."""

# For responses that take no attribute (slots, immutables) but can be weakly referenced.
_side_table: weakref.WeakKeyDictionary[Any, FluxGateCostTrackingResponse] = (
    weakref.WeakKeyDictionary()
)


@attrs.frozen
class FluxGateCostTrackingResponse:
    """The outcome of tracking one call in `mode="inline"`: the TypeScript SDK's type.

    Attributes:
        status: The status recorded for the call.
        cost: Its price in US dollars, or `None` when FluxGate could not price it
            or the event was not recorded.
        tracking_id: The event's id at FluxGate, or `None` when it was not recorded.
        created_at: When FluxGate stored it (ISO 8601), or `None`.
        error_message: The error recorded with the call, if any.

    Example:
        ```python
        from openai import AsyncOpenAI
        from fluxgate_async import FluxGate, tracking_of
        from fluxgate_async.integrations.openai import track_openai

        async with FluxGate() as fg, track_openai(AsyncOpenAI(), fg, mode="inline") as client:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi!"}]
            )
        tracking = tracking_of(reply)
        if tracking is not None:
            print(tracking.cost, tracking.tracking_id)
        ```
    """

    status: AiEventStatus
    cost: float | None = None
    tracking_id: str | None = None
    created_at: str | None = None
    error_message: str | None = None

    @classmethod
    def from_answer(
        cls,
        status: AiEventStatus,
        error_message: str | None,
        answer: CreateAiEventResponse | None,
    ) -> FluxGateCostTrackingResponse:
        """Combine the recorded status with FluxGate's answer (`None`: not recorded)."""
        if answer is None:
            return cls(status=status, error_message=error_message)
        return cls(
            status=status,
            cost=answer.cost,
            tracking_id=answer.id,
            created_at=answer.created_at or None,
            error_message=error_message,
        )


def attach(response: object, tracking: FluxGateCostTrackingResponse) -> None:
    """Make `tracking_of(response)` return `tracking`, without changing how `response` behaves.

    `object.__setattr__` puts the attribute in the instance's `__dict__` behind
    pydantic's back: the SDKs' models keep their `model_dump()`, JSON, repr and
    equality exactly as they were.
    """
    try:
        object.__setattr__(response, TRACKING_ATTRIBUTE, tracking)
    except (AttributeError, TypeError):
        try:
            _side_table[response] = tracking
        except TypeError:
            log.debug("FluxGate: cannot attach tracking to a %s response", type(response).__name__)


def tracking_of(response: object) -> FluxGateCostTrackingResponse | None:
    """Return the tracking outcome attached to a response of an inline-tracked call.

    Works for the responses and streams returned by wrappers made with
    `mode="inline"` (for a stream, once it has ended). Returns `None` for any
    other object, for calls tracked in the background, and for streams not yet
    finished.

    Example:
        ```python
        from anthropic import AsyncAnthropic
        from fluxgate_async import FluxGate, tracking_of
        from fluxgate_async.integrations.anthropic import track_anthropic

        async with (
            FluxGate() as fg,
            track_anthropic(AsyncAnthropic(), fg, mode="inline") as client,
        ):
            reply = await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=256,
                messages=[{"role": "user", "content": "Hi!"}],
            )
        print(tracking_of(reply))
        # FluxGateCostTrackingResponse(status=<AiEventStatus.SUCCESS: 'SUCCESS'>, cost=0.0003, ...)
        print(tracking_of("any other object"))
        # None
        ```
    """
    found = getattr(response, TRACKING_ATTRIBUTE, None)
    if found is None:
        # The SDKs' stream helpers (`messages.stream()`, `chat.completions.stream()`,
        # `responses.stream()`) read the tracked stream they hold as `_raw_stream`.
        found = getattr(getattr(response, "_raw_stream", None), TRACKING_ATTRIBUTE, None)
    if isinstance(found, FluxGateCostTrackingResponse):
        return found
    try:
        return _side_table.get(response)
    except TypeError:
        return None
