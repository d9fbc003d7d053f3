"""`DeliveryStats`: what background delivery did with every event it was given."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

__all__ = ["DeliveryStats", "DropReason", "FailureReason"]


class DropReason:
    """Why an event was dropped without being delivered: the keys of `DeliveryStats.dropped`."""

    QUEUE_FULL = "queue_full"
    """The queue held `max_queue_size` events already (the server is slow or down).

    With a working outbox such events are spilled to it instead; this reason
    then counts only a spilled event the outbox failed to write.
    """
    CLOSED = "closed"
    """The client was closing or closed."""
    INVALID_EVENT = "invalid_event"
    """The event did not validate, or holds a value JSON cannot carry; the log names the field."""
    TOO_LARGE = "too_large"
    """The encoded event was over `max_event_bytes`; the log names its biggest field."""
    BEFORE_SEND = "before_send"
    """`before_send` returned `None`: dropped on purpose."""
    BEFORE_SEND_ERROR = "before_send_error"
    """`before_send` raised; the log has the traceback."""
    DISABLED = "disabled"
    """The client is disabled (`enabled=False` or `FLUXGATE_ENABLED=0`)."""
    SHUTDOWN = "shutdown"
    """Still queued or in flight when `aclose()` ran out of time."""
    INTERNAL_ERROR = "internal_error"
    """An unexpected error in fluxgate-async itself; the log has the traceback."""
    OUTBOX_FULL = "outbox_full"
    """The outbox held `outbox_max_events` events or `outbox_max_bytes` bytes already."""
    EXPIRED = "expired"
    """The event waited in the outbox longer than `outbox_max_age` and was not sent."""


class FailureReason:
    """Why an enqueued event was given up on: the `reason` `on_error` gets for a failed event.

    Events given up on are counted in `DeliveryStats.failed`; the reason is that
    of the last attempt. A status the API answered is `http_` and its code:

        >>> FailureReason.http(422)
        'http_422'
    """

    CONNECTION = "connection"
    """No usable answer: refused, dropped or cut connection, DNS or TLS failure."""
    TIMEOUT = "timeout"
    """No answer within `timeout` seconds."""
    INVALID_RESPONSE = "invalid_response"
    """A 2xx answer that is not the API's JSON, or is over the size limit."""
    INVALID_EVENT = DropReason.INVALID_EVENT
    """A value changed after the event was recorded, and JSON cannot carry it now."""
    INTERNAL_ERROR = DropReason.INTERNAL_ERROR
    """An unexpected error in fluxgate-async itself; the log has the traceback."""
    HTTP_PREFIX = "http_"
    """The start of the reason for an answer that was not a 2xx: `http_400`, `http_503`."""

    @staticmethod
    def http(status: int) -> str:
        """The reason for an answer with the HTTP `status` that is not a success."""
        return f"{FailureReason.HTTP_PREFIX}{status}"


def _frozen_counts(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(value))


@attrs.frozen
class DeliveryStats:
    """A snapshot of background delivery, from `FluxGate.stats`.

    At any quiet point every enqueued event is accounted for exactly once:

        enqueued == sent + failed + queued + in_flight + dropped.get("shutdown", 0)

    Events refused by `record_event_nowait` are counted in `dropped` (by reason)
    but were never enqueued. With an outbox, events left on disk by `aclose()`
    are `kept` instead of dropped, events left by an earlier client count
    as enqueued once `recovered`, and events accepted beyond `max_queue_size`
    wait on disk only, `spilled`, until the queue has room for them:

        enqueued == (sent + failed + queued + in_flight + spilled
                     + dropped.get("shutdown", 0) + kept)

    It may be read from any thread; a snapshot taken from another thread while
    events move between queue, flight and done is exact again at the next quiet point.

    Attributes:
        enqueued: Events accepted by `record_event_nowait`.
        sent: Events the API acknowledged.
        failed: Enqueued events given up on: the API refused them (a 4xx other
            than 408/429, an unusable answer), or every retry failed.
        retried: Further attempts made after a failed one (not events).
        queued: Events waiting for a free sender.
        in_flight: Events being sent or waiting to retry.
        dropped: Events discarded without delivery, counted by `DropReason`.
        persisted: Events written to the outbox (none without one). An event
            acknowledged before its turn to be written is never written.
        recovered: Events an earlier or crashed client left in the outbox,
            taken over and enqueued by this one.
        kept: Events left in the outbox by `aclose()`, for the next start.
        memory_only: Events accepted after the outbox failed (disk full, path
            not writable): delivered from memory, lost if the process dies.
        spilled: Events accepted while the queue was full, waiting in the
            outbox only (not in memory) to be read back, in order, as the queue
            has room. A spilled event the outbox then fails to write is counted
            in `dropped` (`queue_full`) and no longer as enqueued.
    """

    enqueued: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    queued: int = 0
    in_flight: int = 0
    dropped: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen_counts, hash=False)
    persisted: int = 0
    recovered: int = 0
    kept: int = 0
    memory_only: int = 0
    spilled: int = 0

    @property
    def dropped_total(self) -> int:
        """All dropped events, whatever the reason."""
        return sum(self.dropped.values())
