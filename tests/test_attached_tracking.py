"""`tracking_of` and `FluxGateCostTrackingResponse`: reading an inline call's outcome."""

from __future__ import annotations

from fluxgate_async import (
    AiEventStatus,
    CreateAiEventResponse,
    FluxGateCostTrackingResponse,
    tracking_of,
)
from fluxgate_async._attached_tracking import attach

TRACKING = FluxGateCostTrackingResponse(status=AiEventStatus.SUCCESS, cost=0.1, tracking_id="e")


class Plain:
    """An object that takes attributes."""


class Slotted:
    """An object that takes no new attribute, but can be weakly referenced."""

    __slots__ = ("__weakref__",)


def test_attached_as_an_attribute_where_the_object_accepts_one() -> None:
    """A plain object carries the tracking as `fluxgate_tracking`."""
    obj = Plain()
    attach(obj, TRACKING)
    assert tracking_of(obj) is TRACKING
    assert obj.fluxgate_tracking is TRACKING  # type: ignore[attr-defined]


def test_objects_without_attributes_still_report_their_tracking() -> None:
    """An object with slots gets its tracking through `tracking_of` all the same."""
    obj = Slotted()
    attach(obj, TRACKING)
    assert tracking_of(obj) is TRACKING


def test_objects_that_take_nothing_report_none() -> None:
    """An immutable object gets no tracking, and attaching does not raise."""
    attach((1, 2), TRACKING)
    assert tracking_of((1, 2)) is None
    assert tracking_of(Plain()) is None


def test_from_answer_copies_fluxgates_answer() -> None:
    """FluxGate's answer fills the id, cost and date; no answer leaves them `None`."""
    answer = CreateAiEventResponse(id="evt_9", created_at="", cost=None)
    tracked = FluxGateCostTrackingResponse.from_answer(AiEventStatus.ERROR, "boom", answer)
    assert tracked == FluxGateCostTrackingResponse(
        status=AiEventStatus.ERROR, tracking_id="evt_9", error_message="boom"
    )
    missing = FluxGateCostTrackingResponse.from_answer(AiEventStatus.SUCCESS, None, None)
    assert missing == FluxGateCostTrackingResponse(status=AiEventStatus.SUCCESS)
