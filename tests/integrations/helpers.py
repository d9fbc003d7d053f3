"""Reading what a tracked call sent to the collector."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from fluxgate_async import FluxGate
from fluxgate_async.integrations import _coverage
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


def known_gaps() -> dict[str, str]:
    """The rows of the coverage page's table of usage an older SDK drops, by method."""
    page = Path(__file__).parent.parent.parent / "docs" / "reference" / "coverage.md"
    rows: dict[str, str] = {}
    for line in page.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            rows[cells[0].strip("`")] = line
    return rows


def oldest_versions() -> dict[str, str]:
    """The SDK versions the oldest-SDK run pins (tests/constraints-oldest.txt), by package."""
    text = (Path(__file__).parent.parent / "constraints-oldest.txt").read_text()
    pins = (line.split("==") for line in text.splitlines() if "==" in line)
    return {name.strip(): pinned.strip() for name, pinned in pins}


def missing_from_sdk(package: str, bare: Any, path: str, tracked: Any) -> bool:
    """Whether the installed SDK lacks `path`, a method or a parameter of one, from `bare`.

    `path` names a method (`"chat.completions.parse"`) or a parameter of one
    (`"responses.create(background)"`). Only the oldest SDK version tested may
    lack what a test uses (it came later); the tracked client then lacks it just
    the same, adding nothing of its own. A test calls this first and, when it
    returns True, has checked all it can.
    """
    attributes, _, parameter = path.rstrip(")").partition("(")
    ours, theirs = bare, tracked
    for name in attributes.split("."):
        if not hasattr(ours, name):
            _expected_absence(package, attributes, path)
            assert not hasattr(theirs, name)
            return True
        ours, theirs = getattr(ours, name), getattr(theirs, name)
    if parameter and parameter not in inspect.signature(ours).parameters:
        _expected_absence(package, attributes, path)
        assert inspect.signature(theirs) == inspect.signature(ours)
        return True
    return False


def _expected_absence(package: str, method: str, path: str) -> None:
    # Only the oldest SDK tested may lack it, and the coverage page lists the method.
    assert version(package) == oldest_versions()[package], f"{package} lacks {path}"
    rows = {"openai": _coverage.OPENAI, "anthropic": _coverage.ANTHROPIC}[package]
    assert method in {row.method for row in rows}, f"{method} is not on the coverage page"
