"""Reading what a tracked call sent to the collector."""

from __future__ import annotations

import asyncio
from typing import Any

from fluxgate_async import FluxGate
from fluxgate_async.testing import FakeCollector


async def recorded(fg: FluxGate, collector: FakeCollector, count: int = 1) -> list[Any]:
    """The events that reached the collector, once background delivery has settled.

    A few loop turns first let an abandoned stream's generator be finalized
    (asyncio closes it in a task of its own).
    """
    for _ in range(3):
        await asyncio.sleep(0)
    assert await fg.flush(5)
    assert len(collector.events) == count, collector.events
    return collector.events
