"""FluxGate(outbox=...): background events kept on disk until acknowledged, and resumed."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from fluxgate_async import AiEventMetadata, AiEventUsage, DropReason, FluxGate, LLMEvent
from fluxgate_async._outbox import DATABASE_NAME
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY


def event(n: int) -> LLMEvent:
    """A small valid event whose input token count identifies it."""
    return LLMEvent(AiEventUsage(n, 1))


def _rows(path: Path) -> list[tuple[str, int]]:
    """(key, input tokens) of each row left in the outbox."""
    if not (path / DATABASE_NAME).exists():
        return []
    conn = sqlite3.connect(path / DATABASE_NAME)
    try:
        return [
            (key, int(body.split(b'"inputTokens":')[1].split(b",")[0]))
            for key, body in conn.execute("SELECT key, body FROM events ORDER BY rowid")
        ]
    finally:
        conn.close()


async def _leave(path: Path, collector: FakeCollector, count: int) -> FluxGate:
    """A client that records `count` events FluxGate never answers, and closes out of time."""
    collector.responder = lambda _request: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=path, timeout=20)
    for n in range(count):
        assert fg.record_event_nowait(event(n))
    await fg.aclose(timeout=0.2)
    collector.responder = None
    return fg


async def test_acknowledged_events_leave_the_outbox(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Delivered events are deleted: nothing is left on disk once they are all acknowledged."""
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path) as fg:
        for n in range(50):
            assert fg.record_event_nowait(event(n))
        assert await fg.flush(10)
    assert fg.stats.sent == 50
    assert fg.stats.kept == 0
    assert _rows(tmp_path) == []


async def test_aclose_out_of_time_keeps_events_and_the_next_client_delivers_them_first(
    collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Kept, not dropped; the next client sends them under their original keys, stored once."""
    seen: list[str] = []
    caplog.set_level(logging.INFO, logger="fluxgate_async")
    first = await _leave(tmp_path, collector, 5)
    assert first.stats.kept == 5
    assert first.stats.dropped == {}
    closing = [r for r in caplog.records if "closed with" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in closing] == [
        (
            "INFO",
            f"FluxGate: closed with 5 event(s) undelivered, kept in the outbox at {tmp_path} "
            "for the next start",
        )
    ]
    kept = _rows(tmp_path)
    assert sorted(n for _, n in kept) == list(range(5))
    first_keys = {r.idempotency_key for r in collector.requests}

    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=tmp_path,
        on_error=lambda _e, reason: seen.append(reason),
    ) as fg:
        assert await fg.flush(10)
        stats = fg.stats
    assert (stats.recovered, stats.sent, stats.enqueued) == (5, 5, 5)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(5))
    assert {key for key, _ in kept} == {r.idempotency_key for r in collector.requests}
    assert first_keys <= {key for key, _ in kept}  # in flight at the close: the same key again
    assert seen == []
    assert _rows(tmp_path) == []


async def test_an_event_the_api_refuses_for_good_leaves_the_outbox(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """A 422 is final: the event is failed, reported, and not kept for another try."""
    seen: list[str] = []
    collector.reply_with(Reply(status=422))
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=tmp_path,
        on_error=lambda _e, reason: seen.append(reason),
    ) as fg:
        fg.record_event_nowait(event(1))
        assert await fg.flush(10)
    assert (fg.stats.failed, fg.stats.kept) == (1, 0)
    assert seen == ["http_422"]
    assert _rows(tmp_path) == []


async def test_retried_events_record_their_attempts_on_disk(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """While an event is retried its row says how often and why the last attempt failed."""
    collector.responder = lambda _request: Reply(status=503, retry_after=0.05)
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, max_retries=1_000)
    fg.record_event_nowait(event(7))
    async with asyncio.timeout(10):
        while len(collector.requests) < 3:  # noqa: ASYNC110 - the server has no event to wait on
            await asyncio.sleep(0.01)
    await fg.aclose(timeout=0.1)
    conn = sqlite3.connect(tmp_path / DATABASE_NAME)
    [(attempts, reason)] = conn.execute("SELECT attempts, last_error FROM events").fetchall()
    conn.close()
    assert attempts >= 2
    assert reason == "http_503"


async def test_a_small_queue_reads_a_large_outbox_back_in_pages(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """300 events left on disk, a queue of 20: all delivered, memory never over the queue."""
    await _leave(tmp_path, collector, 300)
    most_queued = 0
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=20) as fg:
        done = asyncio.ensure_future(fg.flush(30))
        while not done.done():
            most_queued = max(most_queued, fg.stats.queued + fg.stats.in_flight)
            await asyncio.sleep(0.001)
        assert done.result()
    assert fg.stats.recovered == 300
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(300))
    assert most_queued <= 20 + fg.config.concurrency


async def test_the_outbox_comes_from_the_environment(
    collector: FakeCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLUXGATE_OUTBOX names the directory when no outbox is given."""
    monkeypatch.setenv("FLUXGATE_OUTBOX", str(tmp_path / "from-env"))
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        fg.record_event_nowait(event(1))
        assert await fg.flush(10)
    assert fg.config.outbox == str(tmp_path / "from-env")
    assert (tmp_path / "from-env" / DATABASE_NAME).exists()


@pytest.mark.parametrize(
    ("outbox", "error", "message"),
    [
        (42, TypeError, "outbox must be a directory path (str or os.PathLike), got int"),
        ("  ", ValueError, "outbox must be a non-empty directory path"),
    ],
)
def test_an_invalid_outbox_is_a_configuration_error(
    outbox: object, error: type[Exception], message: str
) -> None:
    """The constructor names the setting, as for every other one."""
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        FluxGate(API_KEY, outbox=outbox)  # type: ignore[arg-type]


def test_an_outbox_without_fork_hooks_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where the system has no fork hooks (not POSIX), an outbox is refused, saying why."""
    monkeypatch.delattr(os, "register_at_fork")
    message = "outbox needs a POSIX system (Linux, macOS): it locks files with flock"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FluxGate(API_KEY, outbox=tmp_path / "outbox")
    assert not (tmp_path / "outbox").exists()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("outbox_max_events", 0, "outbox_max_events must be a positive int, got 0"),
        ("outbox_max_bytes", -1, "outbox_max_bytes must be a positive int, got -1"),
        ("outbox_max_age", 0, "outbox_max_age must be a positive number of seconds, got 0"),
    ],
)
def test_outbox_limits_are_checked(name: str, value: int, message: str) -> None:
    """A limit out of range is a configuration error naming it."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FluxGate(API_KEY, outbox="x", **{name: value})  # type: ignore[arg-type]


async def test_a_disabled_client_writes_no_outbox(collector: FakeCollector, tmp_path: Path) -> None:
    """enabled=False sends nothing and writes nothing."""
    async with FluxGate(
        API_KEY, endpoint=collector.url, outbox=tmp_path / "box", enabled=False
    ) as fg:
        assert not fg.record_event_nowait(event(1))
    assert not (tmp_path / "box").exists()


async def test_events_from_another_thread_are_written_too(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """A thread's events go through the outbox like the loop's; a timed-out close keeps them."""
    collector.responder = lambda _request: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, timeout=20)
    fg.record_event_nowait(event(0))  # the loop's thread makes it home
    worker = threading.Thread(target=lambda: [fg.record_event_nowait(event(n)) for n in (1, 2)])
    worker.start()
    await asyncio.to_thread(worker.join)
    await fg.aclose(timeout=0.2)
    assert fg.stats.kept == 3
    assert sorted(n for _, n in _rows(tmp_path)) == [0, 1, 2]


async def test_an_unwritable_outbox_still_delivers_from_memory(
    collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The directory cannot be made: one WARNING, every event delivered, counted memory_only."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=blocker / "box") as fg:
        for n in range(20):
            assert fg.record_event_nowait(event(n))
        assert await fg.flush(10)
    assert fg.stats.sent == 20
    assert fg.stats.memory_only == 20
    assert caplog.text.count("cannot be written") == 1


def _child_has_its_own_outbox(fg: FluxGate, parent_owner: str) -> int:
    """In a forked child: a new owner and writer; the parent's rows stay the parent's."""
    outbox = fg._pipeline._outbox  # type: ignore[union-attr]
    assert outbox is not None
    if outbox._thread is not None or outbox._owner == parent_owner:
        return 2

    async def record() -> None:
        fg.record_event_nowait(event(100))
        await fg.aclose(timeout=0.2)

    asyncio.run(record())
    return 0 if outbox._owner not in ("", parent_owner) and fg.stats.kept == 1 else 3


async def test_a_forked_child_writes_under_an_owner_of_its_own(
    threaded_collector: FakeCollector, tmp_path: Path
) -> None:
    """After fork the child starts its own writer and owner; the parent's events are untouched."""
    threaded_collector.responder = lambda _request: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url, outbox=tmp_path, timeout=20)
    fg.record_event_nowait(event(1))
    await asyncio.wrap_future(fg._pipeline._outbox.sync())  # type: ignore[union-attr]
    parent_owner = fg._pipeline._outbox._owner  # type: ignore[union-attr]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = _child_has_its_own_outbox(fg, parent_owner)
        finally:
            os._exit(code)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    await fg.aclose(timeout=0.2)
    assert sorted(n for _, n in _rows(tmp_path)) == [1, 100]
    # The child has ended: on a slow machine the parent may adopt its event before closing
    # (it looks every 2 s), and then keeps that one too, counted as recovered.
    assert fg.stats.kept == 1 + fg.stats.recovered


async def test_flush_after_aclose_returns_at_once_with_events_left_on_disk(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """A closed client's flush does not wait for what its outbox keeps for the next start."""
    await _leave(tmp_path, collector, 50)
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=2)
    await fg.aclose(timeout=0.01)
    assert await asyncio.wait_for(fg.flush(), 5)
    left = len(_rows(tmp_path))
    assert left > 0
    assert fg.stats.sent + left == 50


async def test_a_client_collected_without_aclose_leaves_its_events_to_the_next(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Never closed: a ResourceWarning, and its events stay on disk for the next client."""
    collector.responder = lambda _request: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, timeout=20)
    for n in range(2):
        fg.record_event_nowait(event(n))
    outbox = fg._pipeline._outbox  # type: ignore[union-attr]
    assert outbox is not None
    await asyncio.wrap_future(outbox.sync())
    with pytest.warns(ResourceWarning, match="never closed"):
        del fg  # nothing else refers to it: collected here
    assert outbox._thread is not None
    await asyncio.to_thread(outbox._thread.join, 10)
    collector.responder = None
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path) as fg:
        assert await fg.flush(10)
    assert fg.stats.recovered == 2
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == [0, 1]


async def test_a_full_outbox_refuses_events_from_every_thread(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """An event over outbox_max_events is refused, counted and given to on_error as outbox_full.

    From the loop's own thread and from another alike.
    """
    collector.responder = lambda _request: Reply(delay=30)
    seen: list[tuple[object, str]] = []
    fg = FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=tmp_path,
        outbox_max_events=1,
        timeout=20,
        on_error=lambda e, reason: seen.append((e, reason)),
    )
    events = [event(n) for n in range(3)]
    assert fg.record_event_nowait(events[0])  # the loop's thread makes it home
    assert fg.record_event_nowait(events[1]) is False
    answers: list[bool] = []
    worker = threading.Thread(target=lambda: answers.append(fg.record_event_nowait(events[2])))
    worker.start()
    await asyncio.to_thread(worker.join)
    await fg.aclose(timeout=0.1)
    assert answers == [False]
    assert seen == [(events[1], "outbox_full"), (events[2], "outbox_full")]
    assert fg.stats.dropped == {"outbox_full": 2}
    assert fg.stats.kept == 1


async def test_closing_with_an_unwritable_outbox_drops_as_without_one(
    collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing could be kept on disk, so aclose() out of time counts the rest as shutdown."""
    collector.responder = lambda _request: Reply(delay=30)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=blocker / "box", timeout=20)
    for n in range(3):
        fg.record_event_nowait(event(n))
    caplog.set_level(logging.INFO, logger="fluxgate_async")
    await fg.aclose(timeout=0.2)
    assert fg.stats.dropped == {"shutdown": 3}
    assert (fg.stats.kept, fg.stats.memory_only) == (0, 3)
    closing = [r for r in caplog.records if "closed with" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in closing] == [
        ("WARNING", "FluxGate: closed with 3 event(s) undelivered, counted as dropped (shutdown)")
    ]


async def test_closing_waits_a_bounded_time_for_an_outbox_writer_held_up(
    collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer blocked by another process's lock: aclose() still returns, in about 2 s."""
    lock = os.open(tmp_path / "open.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        fg = FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path)
        assert fg.record_event_nowait(event(0))
        started = time.monotonic()
        await asyncio.wait_for(fg.aclose(timeout=0.2), 10)
        assert time.monotonic() - started < 5
    finally:
        os.close(lock)
    outbox = fg._pipeline._outbox  # type: ignore[union-attr]
    assert outbox is not None
    assert outbox._thread is not None
    outbox._thread.join(10)  # unblocked, it finishes: the event was delivered meanwhile
    assert (fg.stats.sent, _rows(tmp_path)) == (1, [])
    assert "FluxGate: the outbox did not finish writing within 2.0s" in [
        r.getMessage() for r in caplog.records
    ]


def _accounted(fg: FluxGate) -> int:
    """Every enqueued event, counted where it is or ended up, spilled and kept included."""
    stats = fg.stats
    return (
        stats.sent
        + stats.failed
        + stats.queued
        + stats.in_flight
        + stats.spilled
        + stats.dropped.get("shutdown", 0)
        + stats.kept
    )


async def _record_while_down(fg: FluxGate, count: int) -> int:
    """Record `count` events, all accepted; the most the memory queue held meanwhile."""
    most_queued = 0
    for n in range(count):
        assert fg.record_event_nowait(event(n))
        most_queued = max(most_queued, fg.stats.queued)
        if n % 100 == 0:
            await asyncio.sleep(0)  # let the senders and the writer's hand-backs run
    return most_queued


async def test_events_beyond_the_queue_spill_to_the_outbox_and_are_all_delivered_once(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Server down, a queue of 100, 2,000 events: none refused, memory bounded, each sent once."""
    collector.responder = lambda _request: Reply(status=503, retry_after=0.05)
    async with FluxGate(
        API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=100, max_retries=10_000
    ) as fg:
        most_queued = await _record_while_down(fg, 2_000)
        stats = fg.stats
        assert stats.dropped == {}
        assert stats.enqueued == 2_000 == _accounted(fg)
        assert stats.spilled >= 2_000 - 100 - fg.config.concurrency
        collector.responder = None  # the server is back
        done = asyncio.ensure_future(fg.flush(60))
        while not done.done():
            most_queued = max(most_queued, fg.stats.queued)
            await asyncio.sleep(0.001)
        assert done.result()
        stats = fg.stats
    assert most_queued <= 100
    assert (stats.sent, stats.spilled, stats.failed, stats.kept) == (2_000, 0, 0, 0)
    assert stats.dropped == {}
    delivered = [e["usage"]["inputTokens"] for e in collector.events]
    assert sorted(delivered) == list(range(2_000))
    accepted_keys = {r.idempotency_key for r in collector.requests}
    assert len(accepted_keys) == 2_000  # one key per event, kept through the disk
    # Read back in order: the first events recorded arrive before the spilled ones.
    assert max(delivered.index(n) for n in range(50)) < min(
        delivered.index(n) for n in range(1_000, 2_000)
    )
    assert _rows(tmp_path) == []


async def test_aclose_out_of_time_keeps_spilled_events_for_the_next_client(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Spilled events stay on disk, counted kept; the next client delivers every one once."""
    collector.responder = lambda _request: Reply(status=503, retry_after=0.05)
    fg = FluxGate(
        API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=10, max_retries=10_000
    )
    await _record_while_down(fg, 300)
    await fg.aclose(timeout=0.2)
    stats = fg.stats
    assert (stats.enqueued, stats.kept, stats.spilled, stats.sent) == (300, 300, 0, 0)
    assert stats.dropped == {}
    assert sorted(n for _, n in _rows(tmp_path)) == list(range(300))

    collector.responder = None
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path) as fg:
        assert await fg.flush(30)
    assert (fg.stats.recovered, fg.stats.sent) == (300, 300)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(300))
    assert _rows(tmp_path) == []


async def test_another_threads_events_spill_behind_the_loops(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Events from a thread once the queue is full spill too, and are delivered after the rest."""
    collector.responder = lambda _request: Reply(status=503, retry_after=0.05)
    async with FluxGate(
        API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=20, max_retries=10_000
    ) as fg:
        await _record_while_down(fg, 50)
        answers: list[bool] = []
        worker = threading.Thread(
            target=lambda: answers.extend(fg.record_event_nowait(event(n)) for n in range(50, 100))
        )
        worker.start()
        await asyncio.to_thread(worker.join)
        assert answers == [True] * 50
        assert fg.stats.enqueued == 100 == _accounted(fg)
        collector.responder = None
        assert await fg.flush(30)
    assert (fg.stats.sent, fg.stats.spilled, fg.stats.dropped) == (100, 0, {})
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(100))


def _client_of_a_busy_server(
    collector: FakeCollector, outbox: Path, seen: list[tuple[object, str]], **settings: Any
) -> FluxGate:
    """A client with an outbox, its server answering 503 to all; `on_error` reports go to `seen`."""
    collector.responder = lambda _request: Reply(status=503, retry_after=0.05)
    return FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=outbox,
        max_retries=10_000,
        on_error=lambda e, reason: seen.append((e, reason)),
        **settings,
    )


async def test_closing_after_the_outbox_failed_keeps_only_what_was_spilled(
    collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills up after events spilled: those stay on disk, the ones in memory are lost."""
    seen: list[tuple[object, str]] = []
    fg = _client_of_a_busy_server(collector, tmp_path, seen, max_queue_size=2, concurrency=2)
    assert all(fg.record_event_nowait(event(n)) for n in range(6))  # 2 queued, 4 spilled
    assert (fg.stats.queued, fg.stats.spilled) == (2, 4)
    outbox = fg._pipeline._outbox  # type: ignore[union-attr]
    assert outbox is not None
    await asyncio.wrap_future(outbox.sync())
    assert outbox._conn is not None
    pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
    outbox._conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite answers "disk is full"
    big = LLMEvent(AiEventUsage(99, 1), metadata=AiEventMetadata(extra={"pad": "x" * 50_000}))
    fg.record_event_nowait(big)  # spilled too, but there is no room left to write it
    await asyncio.wrap_future(outbox.sync())
    assert not outbox.usable
    caplog.set_level(logging.INFO, logger="fluxgate_async")
    await fg.aclose(timeout=0.1)
    stats = fg.stats
    # Some spilled events may have come back to the queue before the disk filled up.
    assert 1 <= stats.kept <= 4
    lost = stats.dropped[DropReason.SHUTDOWN]
    assert lost >= 2  # in flight, and any taken back from disk
    assert [r.getMessage() for r in caplog.records if "closed with" in r.getMessage()] == [
        f"FluxGate: closed with {stats.kept} event(s) undelivered, kept in the outbox at "
        f"{tmp_path} for the next start",
        f"FluxGate: closed with {lost} event(s) undelivered, counted as dropped (shutdown)",
    ]


async def test_spilling_stops_at_the_outbox_limit(
    collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox's own limit bounds the backlog: past it, events are refused as outbox_full."""
    seen: list[tuple[object, str]] = []
    fg = _client_of_a_busy_server(
        collector, tmp_path, seen, max_queue_size=10, outbox_max_events=50
    )
    events = [event(n) for n in range(80)]
    answers = [fg.record_event_nowait(e) for e in events]
    caplog.set_level(logging.INFO, logger="fluxgate_async")
    await fg.aclose(timeout=0.2)
    # Those in memory and those spilled alike, kept.
    assert [r.getMessage() for r in caplog.records if "closed with" in r.getMessage()] == [
        f"FluxGate: closed with 50 event(s) undelivered, kept in the outbox at {tmp_path} "
        "for the next start"
    ]
    assert answers == [True] * 50 + [False] * 30
    assert seen == [(e, "outbox_full") for e in events[50:]]  # each refused event itself
    assert fg.stats.dropped == {"outbox_full": 30}
    assert fg.stats.enqueued == 50 == _accounted(fg)
    assert len(_rows(tmp_path)) == 50


async def test_an_unwritable_outbox_refuses_events_beyond_the_queue_as_before(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """With the outbox failed, memory only: events past max_queue_size are queue_full."""
    collector.responder = lambda _request: Reply(delay=30)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    seen: list[tuple[object, str]] = []
    fg = FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=blocker / "box",
        max_queue_size=5,
        timeout=20,
        on_error=lambda e, reason: seen.append((e, reason)),
    )
    assert fg.record_event_nowait(event(0))
    assert not await fg.flush(0.2)  # the outbox has tried to open by now, and failed
    events = [event(n) for n in range(1, 30)]
    answers = [fg.record_event_nowait(e) for e in events]
    refused = [e for e, queued in zip(events, answers, strict=True) if not queued]
    assert seen == [(e, "queue_full") for e in refused]  # each refused event itself
    await fg.aclose(timeout=0.1)
    assert refused
    assert fg.stats.dropped.get("queue_full") == len(refused)
    assert fg.stats.spilled == 0


async def test_events_handed_over_through_the_inbox_go_before_later_ones(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Another thread's event (as spilled ones read back) waiting for the loop is sent first."""
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, concurrency=1) as fg:
        assert fg.record_event_nowait(event(0))  # the loop's thread makes it home
        worker = threading.Thread(target=fg.record_event_nowait, args=(event(1),))
        worker.start()
        worker.join(10)  # blocking the loop on purpose: the event waits in the inbox
        assert fg.record_event_nowait(event(2))
        assert await fg.flush(10)
    assert [e["usage"]["inputTokens"] for e in collector.events] == [0, 1, 2]


async def test_events_an_earlier_client_left_are_delivered_without_a_flush(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """A client started on an outbox delivers what the last one left on its own, unasked."""
    await _leave(tmp_path, collector, 3)
    left_over = len(collector.events)
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path):
        async with asyncio.timeout(10):
            while len(collector.events) < left_over + 3:  # noqa: ASYNC110 - nothing to wait on
                await asyncio.sleep(0.01)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events[left_over:]) == [0, 1, 2]


async def test_a_spilled_event_is_delivered_under_the_key_it_was_recorded_with(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """An `idempotency_key` given for an event that spilled to disk is the one it is sent with."""
    collector.responder = lambda _request: Reply(status=503, retry_after=0.05)
    async with FluxGate(
        API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=5, max_retries=10_000
    ) as fg:
        for n in range(30):
            assert fg.record_event_nowait(event(n), idempotency_key=f"span-{n}")
        assert fg.stats.spilled > 0
        collector.responder = None
        assert await fg.flush(30)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(30))
    # Every attempt, refused or accepted, went under the key given for its event.
    assert [r.idempotency_key for r in collector.requests] == [
        f"span-{r.json['usage']['inputTokens']}" for r in collector.requests
    ]


async def test_events_left_past_outbox_max_age_are_reported_expired_with_their_content(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Too old to send: each left-over event reaches on_error as its JSON, reason `expired`."""
    await _leave(tmp_path, collector, 2)
    await asyncio.sleep(0.2)
    seen: list[tuple[object, str]] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=tmp_path,
        outbox_max_age=0.1,
        on_error=lambda e, reason: seen.append((e, reason)),
    ) as fg:
        assert await fg.flush(10)
    assert sorted((e["usage"]["inputTokens"], r) for e, r in seen) == [  # type: ignore[index]
        (0, "expired"),
        (1, "expired"),
    ]
    assert _rows(tmp_path) == []


async def test_a_left_event_refused_for_good_reaches_on_error_as_its_json(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """An event read back from disk and refused by the API: on_error gets its JSON mapping."""
    await _leave(tmp_path, collector, 1)
    collector.responder = lambda _request: Reply(status=422)
    seen: list[tuple[object, str]] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=tmp_path,
        on_error=lambda e, reason: seen.append((e, reason)),
    ) as fg:
        assert await fg.flush(10)
    [(refused, reason)] = seen
    assert reason == "http_422"
    assert refused["usage"]["inputTokens"] == 0  # type: ignore[index]
    assert _rows(tmp_path) == []


async def test_a_spilled_event_under_a_key_already_waiting_is_reported_dropped(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """The same request reported twice, the second spilled: stored once, the twin reported."""
    seen: list[tuple[object, str]] = []
    fg = _client_of_a_busy_server(collector, tmp_path, seen, max_queue_size=1)
    first, twin = event(1), event(2)
    assert fg.record_event_nowait(first, idempotency_key="request-1")
    assert fg.record_event_nowait(twin, idempotency_key="request-1")  # the queue is full: spilled
    async with asyncio.timeout(10):
        while not seen:  # noqa: ASYNC110 - the outbox's writer thread reports it
            await asyncio.sleep(0.01)
    assert seen == [(twin, "queue_full")]
    assert fg.stats.dropped == {"queue_full": 1}
    assert _rows(tmp_path) == [("request-1", 1)]
    await fg.aclose(timeout=0.2)
    assert fg.stats.enqueued == 1 == fg.stats.kept


async def test_a_threads_events_beyond_the_queue_spill_until_the_outbox_is_full(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """The loop busy: a thread's events fill the queue, then spill, then are refused outbox_full."""
    seen: list[tuple[object, str]] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        outbox=tmp_path,
        max_queue_size=5,
        outbox_max_events=10,
        on_error=lambda e, reason: seen.append((e, reason)),
    ) as fg:
        events = [event(n) for n in range(20)]
        answers: list[bool] = []
        worker = threading.Thread(
            target=lambda: answers.extend(
                fg.record_event_nowait(e, idempotency_key=f"span-{n}") for n, e in enumerate(events)
            )
        )
        worker.start()
        worker.join(10)  # blocking the loop on purpose: the queue cannot drain
        assert answers == [True] * 10 + [False] * 10
        assert (fg.stats.queued, fg.stats.spilled) == (5, 5)
        assert seen == [(e, "outbox_full") for e in events[10:]]  # each refused event itself
        assert await fg.flush(10)
    assert fg.stats.dropped == {"outbox_full": 10}
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(10))
    # Queued or spilled, each went out under the key given for it.
    assert {(r.idempotency_key, r.json["usage"]["inputTokens"]) for r in collector.requests} == {
        (f"span-{n}", n) for n in range(10)
    }


async def test_a_threads_events_waiting_to_be_taken_count_against_the_queue(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Events another thread handed over fill the queue: the loop's own next event spills."""
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=5) as fg:
        worker = threading.Thread(
            target=lambda: [fg.record_event_nowait(event(n)) for n in range(5)]
        )
        worker.start()
        worker.join(10)  # blocking the loop on purpose: what it handed over is not taken yet
        assert fg.record_event_nowait(event(5))
        assert (fg.stats.queued, fg.stats.spilled) == (5, 1)
        assert await fg.flush(10)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(6))


def test_a_client_whose_loop_ended_takes_in_events_another_left_for_its_next_loop(
    threaded_collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox adopts another client's events while no loop runs; the next loop sends them."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url, outbox=tmp_path)

    async def first() -> None:
        assert fg.record_event_nowait(event(9))
        assert await fg.flush(10)

    asyncio.run(first())  # ends without aclose(): its loop is closed, the client lives on
    # Another client on the same directory leaves two events and ends.
    asyncio.run(_leave(tmp_path, threaded_collector, 2))
    deadline = time.monotonic() + 10
    while fg.stats.queued < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the outbox looks for events left by ended clients every 2 s
    assert fg.stats.queued == 2

    async def second() -> None:
        assert await fg.flush(10)
        await fg.aclose()

    asyncio.run(second())
    assert (fg.stats.recovered, fg.stats.sent, fg.stats.dropped) == (2, 3, {})
    assert _rows(tmp_path) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_flush_out_of_time_says_so_while_an_earlier_clients_events_come_back(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """flush() returns False when its time runs out before what was left is even queued."""
    await _leave(tmp_path, collector, 20)
    collector.responder = lambda _request: Reply(delay=0.2)
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=1) as fg:
        assert await fg.flush(0.1) is False
        collector.responder = None
        assert await fg.flush(10)
    assert fg.stats.recovered == 20


async def test_flush_with_an_outbox_keeps_to_its_timeout(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """An event FluxGate is slow to answer: flush(0.2) says False after 0.2 s, not later."""
    collector.responder = lambda _request: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, timeout=20)
    assert fg.record_event_nowait(event(0))
    started = time.monotonic()
    assert await fg.flush(0.2) is False
    assert 0.19 <= time.monotonic() - started < 0.9  # a flush holding on would take 1 s
    await fg.aclose(timeout=0.1)


async def test_events_an_earlier_client_left_go_out_without_waiting_for_flush(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """What an earlier client left is sent as soon as the next one starts, not at its flush()."""
    await _leave(tmp_path, collector, 3)
    left_over = len(collector.events)
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path) as fg:
        await collector.wait_for_events(left_over + 3, timeout=5)
        assert fg.stats.recovered == 3
    assert sorted(e["usage"]["inputTokens"] for e in collector.events[left_over:]) == [0, 1, 2]


def test_an_event_cut_off_by_the_loops_end_is_sent_by_the_next_loop(
    threaded_collector: FakeCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With an outbox as without: in flight when asyncio.run ends, sent by the next one."""
    threaded_collector.reply_with(Reply(delay=0.5))
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url, outbox=tmp_path)

    async def first_run() -> None:
        assert fg.record_event_nowait(event(1))
        await asyncio.sleep(0.1)  # in flight when the loop ends

    asyncio.run(first_run())
    assert (fg.stats.queued, fg.stats.in_flight) == (1, 0)
    assert "event loop stopped with 1 event(s) undelivered" in caplog.text

    async def second_run() -> bool:
        done = await fg.flush(5)
        await fg.aclose()
        return done

    assert asyncio.run(second_run())
    assert (fg.stats.sent, fg.stats.kept, fg.stats.dropped) == (1, 0, {})
    assert _rows(tmp_path) == []


def test_with_no_loop_anywhere_events_beyond_the_queue_spill_and_wait_for_a_loop(
    threaded_collector: FakeCollector, tmp_path: Path
) -> None:
    """No loop running: one event queued, the next spilled to the outbox; a later loop sends all."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url, outbox=tmp_path, max_queue_size=1)
    assert [fg.record_event_nowait(event(n)) for n in range(3)] == [True] * 3
    assert (fg.stats.queued, fg.stats.spilled) == (1, 2)

    async def deliver() -> None:
        assert await fg.flush(10)
        await fg.aclose()

    asyncio.run(deliver())
    assert (fg.stats.sent, fg.stats.dropped) == (3, {})
    assert sorted(e["usage"]["inputTokens"] for e in threaded_collector.events) == [0, 1, 2]


async def test_a_queue_of_one_takes_back_what_an_earlier_client_left(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """max_queue_size=1: the events left on disk still come back, one at a time, and go out."""
    await _leave(tmp_path, collector, 3)
    left_over = len(collector.events)
    async with FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, max_queue_size=1) as fg:
        assert await fg.flush(10)
    assert (fg.stats.recovered, fg.stats.sent) == (3, 3)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events[left_over:]) == [0, 1, 2]
    assert _rows(tmp_path) == []
