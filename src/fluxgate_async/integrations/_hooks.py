"""What the framework hooks share: checking their arguments and sending one event safely.

A framework calls its hooks from any thread, on or off an event loop, and a
hook must neither block nor raise: `HookSink.record` builds the event through
`event_for`, the mapping every route shares, and queues it with
`FluxGate.record_event_nowait`, logging instead of raising on a bug of ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .._recording import EventSink, Outcome, event_for
from .._tracking_context import current_context, metadata_fields

__all__ = ["HookSink"]

log = logging.getLogger("fluxgate_async")


class HookSink:
    """Where one hook sends its events: a FluxGate client and default metadata.

    Raises (at construction, where the caller wrote the mistake):
        TypeError: `fluxgate` is not a `FluxGate`.
        ValueError, TypeError: A metadata value does not fit its field.
    """

    __slots__ = ("defaults", "fluxgate")

    def __init__(self, fluxgate: EventSink, metadata: Mapping[str, Any]) -> None:
        given: object = fluxgate  # checked at run time, whatever the annotation says
        if not isinstance(given, EventSink):
            msg = f"fluxgate must be a FluxGate client, got {type(fluxgate).__name__}"
            raise TypeError(msg)
        metadata_fields(metadata)
        self.fluxgate = fluxgate
        self.defaults: Mapping[str, Any] = dict(metadata)

    def record(
        self,
        outcome: Outcome,
        *,
        provider: str | None,
        model: str | None,
        latency_s: float,
        streamed: bool | None,
        time_to_first_chunk_s: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Queue the event of one finished model request. Never raises, never blocks.

        `idempotency_key` names the request when the framework gives it an id
        (a span's), so that the server records a request reported twice once.

        Metadata is merged in this order, the later winning: the hook's
        defaults, `metadata` (what the framework says of this request: its
        agent, its conversation), then the enclosing `tracking_context` blocks.
        """
        try:
            fields = {**self.defaults, **(metadata or {})}
            fields.update(current_context())
            event = event_for(
                outcome,
                provider=provider,
                model=model,
                latency_s=max(latency_s, 0.0),
                streamed=streamed,
                time_to_first_chunk_s=time_to_first_chunk_s,
                metadata=fields,
            )
            self.fluxgate.record_event_nowait(event, idempotency_key=idempotency_key)
        except Exception:
            log.exception("FluxGate: bug while recording a framework's model request")
