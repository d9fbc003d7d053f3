"""The outbox across real crashes: application processes killed with SIGKILL, then resumed.

Each test runs `tests/outbox_worker.py` as a child process against a FakeCollector
in this process, kills it with SIGKILL at a chosen point (no handler, no atexit,
no `finally` runs), and checks what the collector stored in the end: every
event, each once, under the key it was first given.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from fluxgate_async._outbox import DATABASE_NAME
from fluxgate_async.testing import FakeCollector, RecordedRequest, Reply

from .conftest import API_KEY

ROOT = Path(__file__).resolve().parent.parent
DOWN = "http://127.0.0.1:9/api/events"  # nothing listens on the discard port
_LINE_SECONDS = 120.0


class Worker:
    """A child process running `tests/outbox_worker.py`, and its lines of output."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: object) -> Worker:
        """Start `python -m tests.outbox_worker ARGS` from the repository's root."""
        return cls(await _spawn("-m", "tests.outbox_worker", *args))

    async def line(self) -> str:
        """The next line it prints; fails the test if it prints none in time."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), _LINE_SECONDS)
        text = raw.decode().strip()
        if not text:
            stderr = b"" if self.process.stderr is None else await self.process.stderr.read()
            raise AssertionError(f"worker ended early:\n{stderr.decode()}")
        return text

    async def stats(self) -> dict[str, Any]:
        """The stats it prints last, and its exit status 0."""
        stats: dict[str, Any] = json.loads(await self.line())
        assert await asyncio.wait_for(self.process.wait(), _LINE_SECONDS) == 0
        return stats

    async def kill(self) -> None:
        """SIGKILL: the process ends at once, running nothing of its own."""
        self.process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(self.process.wait(), _LINE_SECONDS) == -signal.SIGKILL


async def _spawn(*args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *map(str, args),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _numbers(collector: FakeCollector) -> list[int]:
    """The input token count of each stored event: its number in the worker."""
    return sorted(event["usage"]["inputTokens"] for event in collector.events)


def _keys_on_disk(path: Path) -> set[str]:
    conn = sqlite3.connect(path / DATABASE_NAME)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM events")}
    finally:
        conn.close()


async def _until(condition: Any, seconds: float = _LINE_SECONDS) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - another process's progress, no event to await
            await asyncio.sleep(0.02)


async def test_events_queued_against_a_down_server_survive_sigkill(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """5,000 events on disk, the process killed; a new process delivers all, each key once."""
    worker = await Worker.start("record", tmp_path, DOWN, 0, 5000)
    assert await worker.line() == "persisted"
    await worker.kill()
    keys = _keys_on_disk(tmp_path)
    assert len(keys) == 5000

    stats = await (await Worker.start("resume", tmp_path, collector.url)).stats()

    assert _numbers(collector) == list(range(5000))
    assert {request.idempotency_key for request in collector.requests} == keys
    assert (stats["recovered"], stats["sent"], stats["failed"]) == (5000, 5000, 0)
    assert _keys_on_disk(tmp_path) == set()


async def test_events_spilled_past_the_queue_survive_sigkill(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """2,000 events through a queue of 100, most on disk only; killed, a new process sends all."""
    worker = await Worker.start("spill", tmp_path, DOWN, 2000)
    assert await worker.line() == "persisted"
    spilled = int((await worker.line()).removeprefix("spilled "))
    assert spilled >= 1800  # all but the queue and the senders' events
    await worker.kill()
    keys = _keys_on_disk(tmp_path)
    assert len(keys) == 2000

    stats = await (await Worker.start("resume", tmp_path, collector.url)).stats()

    assert _numbers(collector) == list(range(2000))
    assert {request.idempotency_key for request in collector.requests} == keys
    assert (stats["recovered"], stats["sent"], stats["failed"]) == (2000, 2000, 0)
    assert _keys_on_disk(tmp_path) == set()


async def test_killed_mid_delivery_against_a_flapping_server_each_event_is_stored_once(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Killed while a flapping server takes its events; `outbox --flush` delivers the rest once."""
    count = itertools.count()

    def flapping(_request: RecordedRequest) -> Reply:
        n = next(count) % 10
        if n in (1, 6):
            return Reply(status=503, retry_after=0)
        if n == 3:
            return Reply(drop=True)
        return Reply(delay=0.01 if n == 8 else 0)

    collector.responder = flapping
    worker = await Worker.start("record", tmp_path, collector.url, 0, 3000)
    await _until(lambda: len(collector.events) >= 1000)
    await worker.kill()
    stored_before = len(collector.events)
    assert stored_before < 3000

    flush = await _spawn(
        "-m",
        "fluxgate_async",
        "outbox",
        tmp_path,
        "--flush",
        "--endpoint",
        collector.url,
        "--api-key",
        API_KEY,
        "--max-retries",
        "30",
    )
    out, err = await asyncio.wait_for(flush.communicate(), _LINE_SECONDS)
    assert flush.returncode == 0, err.decode()

    assert _numbers(collector) == list(range(3000))
    assert len(collector.events) == len({r.idempotency_key for r in collector.requests})
    assert f"{tmp_path}: empty" in out.decode()


async def test_two_workers_share_a_path_and_the_survivor_delivers_the_killed_ones_events(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Two processes on one outbox, one killed: the other adopts and delivers its events."""
    collector.responder = lambda _request: Reply(status=503, retry_after=0.3)
    killed = await Worker.start("record", tmp_path, collector.url, 0, 1000)
    survivor = await Worker.start("record", tmp_path, collector.url, 1000, 1000, 2000)
    assert await killed.line() == "persisted"
    assert await survivor.line() == "persisted"
    await killed.kill()
    collector.responder = None  # the server recovers

    stats = await survivor.stats()

    assert _numbers(collector) == list(range(2000))
    assert (stats["recovered"], stats["sent"], stats["failed"]) == (1000, 2000, 0)
    assert _keys_on_disk(tmp_path) == set()


async def test_a_full_disk_warns_once_and_every_event_is_still_delivered(
    collector: FakeCollector, tmp_path: Path
) -> None:
    """Files capped at 256 KiB by the kernel: one WARNING, events go on from memory, all sent."""
    worker = await Worker.start("fill", tmp_path, collector.url, 3000)
    stats = await worker.stats()
    assert worker.process.stderr is not None
    stderr = (await worker.process.stderr.read()).decode()

    assert stderr.count("cannot be written") == 1, stderr
    # The WARNING names the cause SQLite gave, not an error met while undoing the write.
    assert re.search(r"cannot be written \((disk I/O error|database or disk is full)\)", stderr)
    assert stats["memory_only"] > 0
    assert stats["sent"] == 3000
    assert _numbers(collector) == list(range(3000))
