"""Forks: a child never sends what its parent queued, and its own client works."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
import warnings
from typing import Literal

import pytest

from fluxgate_async import AiEventUsage, FluxGate, LLMEvent
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY

# Set before a fork, read by the child: a forked child shares the parent's memory.
_client: FluxGate | None = None


def event(n: int) -> LLMEvent:
    """A small valid event whose input token count identifies it."""
    return LLMEvent(AiEventUsage(n, 1))


def _child_records_its_own(token: int) -> int:
    """In the child: an empty queue, then one event of its own delivered. 0 when all held."""
    fg = _client
    assert fg is not None
    inherited = fg.stats
    if (inherited.enqueued, inherited.queued, inherited.sent) != (0, 0, 0):
        return 2

    async def record() -> None:
        fg.record_event_nowait(event(token))
        await fg.aclose()

    asyncio.run(record())
    return 0 if fg.stats.sent == 1 else 3


def _fork(token: int) -> int:
    """os.fork(): the child runs `_child_records_its_own`; returns the child's exit code."""
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads (the collector's)
        # may deadlock; the child here touches nothing those threads hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = _child_records_its_own(token)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _queue_in_an_ending_loop(fg: FluxGate, collector: FakeCollector) -> None:
    """Queue events from a loop that ends while they are still being sent."""
    collector.reply_with(*[Reply(delay=0.5)] * 3)

    async def leave() -> None:
        for n in range(3):
            fg.record_event_nowait(event(n))
        await asyncio.sleep(0.1)  # the senders have the events in flight

    asyncio.run(leave())


@pytest.mark.parametrize("where", ["no loop yet", "an ended loop"])
def test_a_forked_child_never_resends_what_the_parent_queued(
    threaded_collector: FakeCollector,
    where: Literal["no loop yet", "an ended loop"],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Parent queues, forks; the child sends only its own; each event stored once, one key each."""
    global _client  # noqa: PLW0603 - what the forked child reads
    fg = _client = FluxGate(API_KEY, endpoint=threaded_collector.url)
    if where == "no loop yet":
        for n in range(3):
            assert fg.record_event_nowait(event(n))
    else:
        _queue_in_an_ending_loop(fg, threaded_collector)
    assert fg.stats.enqueued == 3
    assert _fork(100) == 0
    asyncio.run(fg.aclose())
    assert fg.stats.sent == 3
    tokens = sorted(e["usage"]["inputTokens"] for e in threaded_collector.events)
    assert tokens == [0, 1, 2, 100]
    keys = {r.idempotency_key for r in threaded_collector.requests}
    assert len(keys) == 4  # a retried event keeps its key: one key per event


def test_a_multiprocessing_fork_child_sends_only_its_own(
    threaded_collector: FakeCollector,
) -> None:
    """A multiprocessing fork child: the parent's events once, the child's once."""
    global _client  # noqa: PLW0603 - what the forked child reads
    fg = _client = FluxGate(API_KEY, endpoint=threaded_collector.url)
    for n in range(3):
        assert fg.record_event_nowait(event(n))
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # see _fork
        children = [context.Process(target=_exit_with, args=(200 + i,)) for i in range(2)]
        for child in children:
            child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0]
    asyncio.run(fg.aclose())
    tokens = sorted(e["usage"]["inputTokens"] for e in threaded_collector.events)
    assert tokens == [0, 1, 2, 200, 201]


def _exit_with(token: int) -> None:  # pragma: no cover - runs in the child
    raise SystemExit(_child_records_its_own(token))


async def test_idempotency_keys_are_chosen_when_queued(collector: FakeCollector) -> None:
    """An event retried after a 503 keeps the key it was given when queued."""
    collector.reply_with(Reply(status=503, retry_after=0))
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        fg.record_event_nowait(event(1))
        fg.record_event_nowait(event(2))
        assert await fg.flush(5)
    first, second, retried = (r.idempotency_key or "" for r in collector.requests)
    assert retried == first != second
    assert all(str(uuid.UUID(key)) == key for key in (first, second))
