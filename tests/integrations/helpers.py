"""Reading what a tracked call sent to the collector."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fluxgate_async import FluxGate
from fluxgate_async.testing import FakeCollector


async def recorded(fg: FluxGate, collector: FakeCollector, count: int = 1) -> list[Any]:
    """The events that reached the collector, once background delivery has settled.

    A few loop turns first let an abandoned stream's generator be finalized
    (asyncio closes it in a task of its own; a generator held by another,
    such as a chat's stream around the SDK's, one turn after the other).
    """
    for _ in range(10):
        await asyncio.sleep(0)
    assert await fg.flush(5)
    assert len(collector.events) == count, collector.events
    return collector.events


async def cancel_when(task: asyncio.Task[Any], ready: Callable[[], bool]) -> None:
    """Cancel `task` once `ready()` (polled for up to a second), and check it ends cancelled."""
    for _ in range(100):
        if ready():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def cancel_reading(stream: Any, chunks: int) -> list[Any]:
    """Read `stream` in a task, cancel it once `chunks` arrived; return what it saw."""
    seen: list[Any] = []

    async def consume() -> None:
        async for chunk in stream:
            seen.append(chunk)

    await cancel_when(asyncio.create_task(consume()), lambda: len(seen) >= chunks)
    return seen
