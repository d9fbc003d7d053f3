"""Recording from other threads: a hand-off that wakes the loop, truthful answers, exact counts."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvloop

from fluxgate_async import AiEventUsage, DeliveryStats, DropReason, FluxGate, LLMEvent
from fluxgate_async._delivery import _Keys
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY

THREADS = 8


def event(n: int) -> LLMEvent:
    """A small valid event whose input token count identifies it."""
    return LLMEvent(AiEventUsage(n, 1))


def accounted(stats: DeliveryStats) -> int:
    """Every enqueued event, counted where it ended up."""
    return (
        stats.sent
        + stats.failed
        + stats.queued
        + stats.in_flight
        + stats.dropped.get(DropReason.SHUTDOWN, 0)
    )


def hammer(fg: FluxGate, per_thread: int, threads: int = THREADS) -> list[bool]:
    """`threads` threads, started together, each recording `per_thread` events."""
    start = threading.Barrier(threads)

    def record(t: int) -> list[bool]:
        start.wait(5)
        return [fg.record_event_nowait(event(t * per_thread + i)) for i in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        return [ok for results in pool.map(record, range(threads)) for ok in results]


def _once_the_loop_sleeps(record: Callable[[], bool]) -> tuple[threading.Thread, list[bool]]:
    """A started thread that calls `record` once the loop sleeps in its selector; its answer."""
    answers: list[bool] = []

    def later() -> None:
        time.sleep(0.1)  # by then the loop sleeps in its selector
        answers.append(record())

    thread = threading.Thread(target=later)
    thread.start()
    return thread, answers


@pytest.mark.parametrize("debug", [False, True])
async def test_an_event_from_a_thread_wakes_an_idle_loop_at_once(
    fg: FluxGate, collector: FakeCollector, debug: bool
) -> None:
    """The loop sleeps with nothing to do; a thread's event is sent at once, debug mode too."""
    asyncio.get_running_loop().set_debug(debug)
    assert fg.record_event_nowait(event(0))  # the senders start, then go idle
    assert await fg.flush(5)
    thread, answers = _once_the_loop_sleeps(lambda: fg.record_event_nowait(event(1)))
    # The loop's only timer is this wait's own 1 s deadline: an event that did not wake
    # the loop would be sent only when that deadline wakes it, too late.
    await collector.wait_for_events(2, timeout=1.0)
    thread.join(5)
    assert answers == [True]
    assert await fg.flush(5)
    assert fg.stats.sent == 2


@pytest.mark.parametrize(("debug", "per_thread"), [(False, 250), (True, 40)])
async def test_threads_hammering_an_idle_loop_deliver_every_event_once(
    collector: FakeCollector, debug: bool, per_thread: int
) -> None:
    """Eight threads: each True delivered once, counters exact, in asyncio debug mode too."""
    asyncio.get_running_loop().set_debug(debug)
    total = THREADS * per_thread
    async with FluxGate(API_KEY, endpoint=collector.url, max_queue_size=100_000) as fg:
        fg.record_event_nowait(event(0))  # the home loop is this one
        results = await asyncio.to_thread(hammer, fg, per_thread)
        assert results == [True] * total
        assert await fg.flush(30)
        stats = fg.stats
    assert stats.enqueued == total + 1 == stats.sent == accounted(stats)
    tokens = sorted(e["usage"]["inputTokens"] for e in collector.events)
    assert tokens == [0, *range(total)]
    keys = [r.idempotency_key for r in collector.requests]
    assert len(set(keys)) == len(keys) == total + 1


async def test_threads_and_the_loop_recording_together_while_the_loop_is_busy(
    collector: FakeCollector,
) -> None:
    """The loop blocks and records itself while threads record: nothing lost, nothing twice."""
    async with FluxGate(API_KEY, endpoint=collector.url, max_queue_size=100_000) as fg:
        fg.record_event_nowait(event(100_000))
        done = threading.Event()
        results: list[bool] = []

        def record() -> None:
            results.extend(hammer(fg, 100))
            done.set()

        worker = threading.Thread(target=record)
        worker.start()
        mine = 0
        while not done.is_set():
            busy_until = time.monotonic() + 0.002
            while time.monotonic() < busy_until:  # busy: the loop runs no callback meanwhile
                pass
            mine += fg.record_event_nowait(event(200_000 + mine))
            await asyncio.sleep(0)
        worker.join(5)
        assert results == [True] * 800
        assert await fg.flush(30)
        stats = fg.stats
    assert stats.enqueued == 801 + mine == stats.sent == accounted(stats)
    assert len(collector.events) == stats.sent
    assert len({r.idempotency_key for r in collector.requests}) == stats.sent


async def test_a_full_queue_refuses_threads_truthfully(collector: FakeCollector) -> None:
    """Every False is a queue_full drop, every True an event sent; memory stays bounded."""
    collector.responder = lambda _: Reply(delay=0.05)
    dropped: list[str] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        max_queue_size=20,
        concurrency=1,
        on_error=lambda _e, r: dropped.append(r),
    ) as fg:
        fg.record_event_nowait(event(0))
        results = await asyncio.to_thread(hammer, fg, 20)
        peak = fg.stats.queued
        assert await fg.flush(30)
        stats = fg.stats
    accepted = sum(results) + 1
    assert stats.sent == accepted == len(collector.events)
    assert stats.dropped == {DropReason.QUEUE_FULL: results.count(False)}
    assert dropped == [DropReason.QUEUE_FULL] * results.count(False)
    assert peak <= 20 + THREADS


async def test_stats_and_flush_from_another_thread(fg: FluxGate, collector: FakeCollector) -> None:
    """A thread with its own loop reads stats and awaits flush while the home loop runs."""
    collector.responder = lambda _: Reply(delay=0.1)
    for n in range(5):
        assert fg.record_event_nowait(event(n))

    def elsewhere() -> tuple[bool, DeliveryStats]:
        return asyncio.run(fg.flush(10)), fg.stats

    flushed, stats = await asyncio.to_thread(elsewhere)
    assert flushed
    assert stats.sent == 5 == len(collector.events)


async def test_a_thread_recording_after_close_is_refused_and_counted(
    collector: FakeCollector,
) -> None:
    """After aclose() a thread gets False and the event is counted as closed."""
    reasons: list[str] = []
    fg = FluxGate(API_KEY, endpoint=collector.url, on_error=lambda _e, r: reasons.append(r))
    fg.record_event_nowait(event(0))
    await fg.aclose()
    assert await asyncio.to_thread(fg.record_event_nowait, event(1)) is False
    assert fg.stats.dropped == {DropReason.CLOSED: 1}
    assert reasons == [DropReason.CLOSED]


async def test_a_client_collected_on_another_thread_has_its_senders_cancelled_on_its_loop(
    collector: FakeCollector,
) -> None:
    """Its last reference dropped by a thread while its loop runs: the senders still end."""
    clients = [FluxGate(API_KEY, endpoint=collector.url)]
    assert clients[0].record_event_nowait(event(1))
    assert await clients[0].flush(5)

    senders = [task for task in asyncio.all_tasks() if task.get_name() == "fluxgate-sender"]
    assert len(senders) == 8

    def drop_the_last_reference() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clients.clear()  # collected here, on this thread
        return [str(w.message) for w in caught]

    said = await asyncio.to_thread(drop_the_last_reference)
    assert len(said) == 1
    assert said[0].startswith("FluxGate client was never closed")
    _, running = await asyncio.wait(senders, timeout=3)
    assert running == set()
    assert all(task.cancelled() for task in senders)


def test_threads_recording_with_no_loop_anywhere_never_overfill_the_queue() -> None:
    """No loop running: threads racing for the queue's last places get max_queue_size, no more.

    A race is a matter of luck: ten clients in turn, each filled by eight threads at once.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as the interpreter can
    try:
        for _ in range(10):
            fg = FluxGate(API_KEY, endpoint="http://127.0.0.1:9/v1/events", max_queue_size=500)
            results = hammer(fg, 250)
            stats = fg.stats
            assert (sum(results), stats.enqueued, stats.queued) == (500, 500, 500)
            assert stats.dropped == {DropReason.QUEUE_FULL: 1500}
            with pytest.warns(ResourceWarning, match="500 event"):
                del fg  # never used in a loop: its events are lost with it, and it says so
    finally:
        sys.setswitchinterval(interval)


async def test_a_threads_event_that_meets_aclose_half_way_is_counted_as_closed(
    collector: FakeCollector,
) -> None:
    """A thread's event still in `before_send` as aclose() finishes is refused as closed.

    It was checked before the client closed and handed over after: counted and given
    to on_error as closed, not lost and not taken for a bug.
    """
    in_hook, closed = threading.Event(), threading.Event()
    seen: list[tuple[object, str]] = []

    def before_send(e: LLMEvent) -> LLMEvent:
        in_hook.set()
        closed.wait(10)
        return e

    fg = FluxGate(
        API_KEY,
        endpoint=collector.url,
        before_send=before_send,
        on_error=lambda e, reason: seen.append((e, reason)),
    )
    late = event(1)
    answers: list[bool] = []
    worker = threading.Thread(target=lambda: answers.append(fg.record_event_nowait(late)))
    worker.start()
    assert await asyncio.to_thread(in_hook.wait, 10)
    await fg.aclose()
    closed.set()
    await asyncio.to_thread(worker.join, 10)
    assert answers == [False]
    assert seen == [(late, DropReason.CLOSED)]
    assert fg.stats.dropped == {DropReason.CLOSED: 1}
    assert collector.events == []


def test_on_uvloop_events_from_the_loop_and_from_other_threads_are_delivered(
    threaded_collector: FakeCollector,
) -> None:
    """On uvloop, uvicorn's loop when installed: awaited, queued, handed-over events arrive."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)

    async def serve() -> None:
        assert not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)
        assert await fg.record_event(event(1000)) is not None
        assert fg.record_event_nowait(event(1001))
        assert all(await asyncio.to_thread(hammer, fg, 25, 4))
        assert await fg.flush(10)
        await fg.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())
    assert (fg.stats.sent, fg.stats.dropped) == (101, {})  # the awaited one is not counted here
    tokens = sorted(e["usage"]["inputTokens"] for e in threaded_collector.events)
    assert tokens == [*range(100), 1000, 1001]


def test_with_no_loop_anywhere_events_wait_for_the_next_loop(
    threaded_collector: FakeCollector,
) -> None:
    """Threads record with no loop running: queued, counted, delivered by the next asyncio.run."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)
    results = hammer(fg, 25, threads=4)
    assert all(results)
    stats = fg.stats
    assert (stats.enqueued, stats.queued, stats.sent) == (100, 100, 0)
    asyncio.run(fg.aclose())
    assert fg.stats.sent == 100
    assert len(threaded_collector.events) == 100


def test_with_no_loop_anywhere_the_queue_refuses_at_its_size(
    threaded_collector: FakeCollector,
) -> None:
    """No loop running: max_queue_size events wait, the next is refused as queue_full."""
    refused: list[tuple[object, str]] = []
    fg = FluxGate(
        API_KEY,
        endpoint=threaded_collector.url,
        max_queue_size=3,
        on_error=lambda e, reason: refused.append((e, reason)),
    )
    events = [event(n) for n in range(4)]
    assert [fg.record_event_nowait(e) for e in events] == [True, True, True, False]
    assert refused == [(events[3], DropReason.QUEUE_FULL)]
    assert (fg.stats.queued, fg.stats.dropped) == (3, {DropReason.QUEUE_FULL: 1})
    asyncio.run(fg.aclose())
    assert fg.stats.sent == 3 == len(threaded_collector.events)


def test_a_key_given_in_a_later_loop_is_the_one_sent(threaded_collector: FakeCollector) -> None:
    """An idempotency_key given in a second asyncio.run, the client's new loop, is sent as given."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)

    async def first() -> None:
        assert fg.record_event_nowait(event(0))
        assert await fg.flush(5)

    async def second() -> None:
        assert fg.record_event_nowait(event(1), idempotency_key="span-1")
        await fg.aclose()

    asyncio.run(first())
    asyncio.run(second())
    assert [r.idempotency_key for r in threaded_collector.requests][1:] == ["span-1"]


async def test_a_second_loop_in_another_thread_records_with_its_own_session(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """record_event awaited in another thread's loop works while the home loop sends."""
    fg.record_event_nowait(event(0))

    def elsewhere() -> object:
        return asyncio.run(fg.record_event(event(1)))

    answer = await asyncio.to_thread(elsewhere)
    assert answer is not None
    assert await fg.flush(5)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == [0, 1]


async def test_nowait_in_another_threads_short_loop_is_delivered_by_the_home_loop(
    fg: FluxGate, collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread's own asyncio.run records and ends at once: the home loop sends it, no warning."""
    assert fg.record_event_nowait(event(0))  # this loop becomes the client's
    assert await fg.flush(5)

    async def elsewhere() -> bool:
        return fg.record_event_nowait(event(1))

    thread, answers = _once_the_loop_sleeps(lambda: asyncio.run(elsewhere()))
    # This loop's only timer is the wait's own 1 s deadline: it must be woken to send it.
    await collector.wait_for_events(2, timeout=1.0)
    thread.join(5)
    assert answers == [True]
    assert await fg.flush(5)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == [0, 1]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_events_a_thread_handed_over_count_against_the_queue(
    collector: FakeCollector,
) -> None:
    """The loop busy while a thread fills the queue: the loop's own event is refused, itself."""
    refused: list[tuple[object, str]] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        max_queue_size=3,
        on_error=lambda e, reason: refused.append((e, reason)),
    ) as fg:
        assert fg.record_event_nowait(event(0))  # this loop becomes the client's
        await collector.wait_for_events(1)
        worker = threading.Thread(
            target=lambda: [fg.record_event_nowait(event(n)) for n in (1, 2, 3)]
        )
        worker.start()
        worker.join(10)  # blocking the loop on purpose: the three wait in the hand-over
        mine = event(4)
        assert fg.record_event_nowait(mine) is False
        assert refused == [(mine, DropReason.QUEUE_FULL)]
        assert await fg.flush(5)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == [0, 1, 2, 3]


async def test_aclose_from_another_threads_loop_delivers_on_the_home_loop(
    collector: FakeCollector,
) -> None:
    """A client closed from a thread with its own loop: the home loop delivers, then it is shut."""
    fg = FluxGate(API_KEY, endpoint=collector.url)
    for n in range(3):
        assert fg.record_event_nowait(event(n))
    await asyncio.to_thread(lambda: asyncio.run(fg.aclose()))
    assert fg.closed
    assert fg.stats.sent == 3
    assert fg.record_event_nowait(event(9)) is False


async def test_aclose_from_another_threads_loop_delivers_within_its_timeout_and_ends_on_time(
    collector: FakeCollector,
) -> None:
    """aclose(timeout) awaited elsewhere: what is answered within it is sent, the rest dropped."""
    collector.responder = lambda request: Reply(
        delay=0.1 if request.json["usage"]["inputTokens"] == 1 else 30
    )
    fg = FluxGate(API_KEY, endpoint=collector.url, timeout=20)
    assert fg.record_event_nowait(event(1))  # this loop becomes the client's
    assert fg.record_event_nowait(event(2))  # FluxGate never answers it
    started = time.monotonic()
    await asyncio.to_thread(lambda: asyncio.run(fg.aclose(timeout=0.3)))
    elapsed = time.monotonic() - started
    assert (fg.stats.sent, fg.stats.dropped) == (1, {DropReason.SHUTDOWN: 1})
    assert elapsed < 1.8  # the timeout, and a moment for the senders to unwind


class _HomeLoop:
    """The client's loop in a thread of its own, with one event in flight for 30 s."""

    def __init__(self, collector: FakeCollector) -> None:
        collector.responder = lambda _: Reply(delay=30)
        self.fg = FluxGate(API_KEY, endpoint=collector.url)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever)

    async def __aenter__(self) -> FluxGate:
        self._thread.start()
        fg = self.fg

        async def record() -> None:  # on the thread's loop, which becomes the client's
            fg.record_event_nowait(event(1))
            await asyncio.sleep(0.2)  # the sender has the event in flight

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(record(), self.loop))
        return fg

    async def __aexit__(self, *exc_info: object) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 5)
        await asyncio.to_thread(self.loop.run_until_complete, self.fg.aclose(timeout=0.5))
        self.loop.close()


async def test_flush_from_another_thread_ends_at_its_timeout(collector: FakeCollector) -> None:
    """flush(timeout) awaited elsewhere returns False once the timeout has run out."""
    home = _HomeLoop(collector)
    async with home as fg, asyncio.timeout(10):
        started = time.monotonic()
        assert await fg.flush(0.3) is False
        assert time.monotonic() - started < 2.5
        # Even while the client's loop is stuck (a blocking call in it) and cannot run the wait.
        home.loop.call_soon_threadsafe(time.sleep, 3)
        started = time.monotonic()
        assert await fg.flush(0.3) is False
        assert time.monotonic() - started < 2.5


async def test_cancelling_a_flush_from_another_thread_cancels_it(collector: FakeCollector) -> None:
    """The caller's cancellation reaches the caller, as CancelledError."""
    async with _HomeLoop(collector) as fg:
        flushing = asyncio.ensure_future(fg.flush())
        await asyncio.sleep(0.3)
        flushing.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await flushing


async def test_a_flush_whose_work_the_home_loop_cancels_returns_false(
    collector: FakeCollector,
) -> None:
    """The client's loop cancels its tasks (shutting down): a flush awaited elsewhere is False."""
    async with _HomeLoop(collector) as fg:
        flushing = asyncio.ensure_future(fg.flush())
        await asyncio.sleep(0.3)
        home = fg._pipeline._loop  # type: ignore[union-attr]
        assert home is not None
        home.call_soon_threadsafe(lambda: [task.cancel() for task in asyncio.all_tasks(home)])
        async with asyncio.timeout(10):
            assert await flushing is False


async def test_flush_from_another_thread_ends_when_the_home_loop_stops(
    collector: FakeCollector,
) -> None:
    """flush() without a timeout, awaited elsewhere, returns False when the home loop stops."""
    home = _HomeLoop(collector)
    async with home as fg:
        flushing = asyncio.ensure_future(fg.flush())
        await asyncio.sleep(0.3)
        assert not flushing.done()  # the event is in flight: flush waits
        home.loop.call_soon_threadsafe(home.loop.stop)  # stopped, its tasks not cancelled
        async with asyncio.timeout(10):
            assert await flushing is False
    assert fg.stats.dropped == {DropReason.SHUTDOWN: 1}


def test_idempotency_keys_are_unique_version_4_uuids_across_threads() -> None:
    """Keys drawn from eight threads at once never repeat, and each reads as a UUID 4."""
    keys = _Keys()
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        into.extend(keys.next() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = [key for into in drawn for key in into]
    assert len(set(every)) == len(every) == 16_000
    assert all(uuid.UUID(key).version == 4 and str(uuid.UUID(key)) == key for key in every)
    assert _Keys().next()[:24] != every[0][:24]  # another client or process: another prefix


async def test_aclose_closes_a_session_on_another_threads_running_loop(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """The session a running loop in another thread opened is closed there, without a warning."""
    fg = FluxGate(API_KEY, endpoint=collector.url)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever)
    thread.start()
    try:
        sent = asyncio.run_coroutine_threadsafe(fg.record_event(event(1)), other)
        assert await asyncio.wrap_future(sent) is not None
        transport = fg._transport
        assert transport is not None
        (session,) = [session for session, _ in transport._sessions.values()]
        await fg.aclose()
        assert session.closed
        assert not transport.has_open_session
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
