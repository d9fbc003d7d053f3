"""The outbox store on its own: written off the caller's thread, adopted once, bounded, robust."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fluxgate_async import _outbox
from fluxgate_async._outbox import (
    DATABASE_NAME,
    Outbox,
    PendingEvent,
    adopt_dead_owners,
    delete_events,
    open_database,
    register_owner,
    summarise,
)

BODY = b'{"usage":{"inputTokens":1,"outputTokens":1}}'


class Client:
    """What the pipeline gives an outbox: room for adopted events, and where they go."""

    def __init__(self, room: int = 1_000) -> None:
        self.room = room
        self.recovered: list[PendingEvent] = []
        self.expired: list[PendingEvent] = []
        self.spilled: list[PendingEvent] = []
        self.lost: list[tuple[Any, str]] = []
        self.threads: set[str] = set()

    def take(self, events: list[PendingEvent]) -> None:
        """The `recovered` hook: keep the events, and take up their room."""
        self.threads.add(threading.current_thread().name)
        self.recovered += events
        self.room -= len(events)

    def take_spilled(self, events: list[PendingEvent]) -> bool:
        """The `spilled` hook: keep the events read back, and take up their room."""
        self.spilled += events
        self.room -= len(events)
        return True

    def outbox(self, path: Path, **limits: Any) -> Outbox:
        """An outbox on `path` whose hooks are this client's."""
        options: dict[str, Any] = {
            "max_events": 1_000,
            "max_bytes": 1_000_000,
            "max_age": 3600.0,
            **limits,
        }
        return Outbox(
            path,
            prepare=_prepare,
            room=lambda: self.room,
            recovered=self.take,
            expired=self.expired.append,
            spilled=self.take_spilled,
            lost=lambda item, reason: self.lost.append((item, reason)),
            **options,
        )


def _prepare(item: Any) -> tuple[str, bytes] | None:
    """Items in these tests are (key, body) already; None stands for an unencodable event."""
    result: tuple[str, bytes] | None = item
    return result


def _rows(path: Path) -> list[tuple[str, bytes, int, str | None]]:
    conn = sqlite3.connect(path / DATABASE_NAME)
    try:
        return conn.execute(
            "SELECT key, body, attempts, last_error FROM events ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()


async def _synced(outbox: Outbox) -> None:
    await asyncio.wait_for(asyncio.wrap_future(outbox.sync()), 10)


async def _started_on_a_full_disk(outbox: Outbox) -> None:
    """Start `outbox` with one row written, then make SQLite answer SQLITE_FULL (a full disk)."""
    outbox.start()
    outbox.add(("first", BODY))
    await _synced(outbox)
    assert outbox._conn is not None
    pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
    outbox._conn.execute(f"PRAGMA max_page_count = {pages}")


async def _wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the writer thread sets no asyncio event
            await asyncio.sleep(0.01)


@pytest.fixture
def client() -> Client:
    """A stand-in client with room for 1,000 adopted events."""
    return Client()


async def test_events_are_written_by_the_writer_thread_and_deleted_once_done(
    tmp_path: Path, client: Client
) -> None:
    """Added events become rows with key and body; done() deletes, failed() counts attempts."""
    outbox = client.outbox(tmp_path)
    outbox.start()
    assert outbox.add(("k1", BODY))
    assert outbox.add(("k2", BODY))
    assert outbox.add(None)  # not encodable: the sender fails it, nothing is written
    await _synced(outbox)
    assert [row[0] for row in _rows(tmp_path)] == ["k1", "k2"]
    assert outbox.persisted == 2
    outbox.failed("k2", "http_503")
    outbox.failed("k2", "connection")
    outbox.done("k1")
    await _synced(outbox)
    assert _rows(tmp_path) == [("k2", BODY, 2, "connection")]
    await outbox.aclose(5)
    assert outbox.kept == 1


async def test_an_event_done_before_its_turn_is_never_written(
    tmp_path: Path, client: Client
) -> None:
    """Added, failed once and acknowledged within one batch: no row, and not counted persisted."""
    outbox = client.outbox(tmp_path)
    # Holding the lock taken to open the database keeps the writer from starting its first
    # batch until all three are queued.
    lock = os.open(tmp_path / "open.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    outbox.add(("quick", BODY))
    outbox.failed("quick", "connection")
    outbox.done("quick")
    os.close(lock)
    await _synced(outbox)
    assert _rows(tmp_path) == []
    assert outbox.persisted == 0
    await outbox.aclose(5)


async def test_a_closed_clients_events_are_adopted_with_their_keys(
    tmp_path: Path, client: Client
) -> None:
    """Events left at close go, with key, body and attempts, to the next outbox on the path."""
    first = client.outbox(tmp_path)
    first.start()
    for n in range(3):
        first.add((f"key-{n}", BODY))
    first.failed("key-1", "http_500")
    await first.aclose(5)
    assert first.kept == 3

    second = Client()
    outbox = second.outbox(tmp_path)
    outbox.start()
    await _wait_until(lambda: len(second.recovered) == 3)
    assert [(e.key, e.body, e.attempts) for e in second.recovered] == [
        ("key-0", BODY, 0),
        ("key-1", BODY, 1),
        ("key-2", BODY, 0),
    ]
    assert second.threads == {"fluxgate-outbox"}
    await outbox.aclose(5)
    assert outbox.kept == 3  # handed over, not yet acknowledged: still on disk


async def test_a_live_clients_events_are_never_adopted(tmp_path: Path, client: Client) -> None:
    """Two clients share the path: neither takes the other's events while both run."""
    alive = client.outbox(tmp_path)
    alive.start()
    alive.add(("mine", BODY))
    await _synced(alive)
    other = Client()
    outbox = other.outbox(tmp_path)
    outbox.start()
    await _synced(outbox)
    outbox._next_adoption = 0  # look again now rather than in two seconds
    outbox.add(("theirs", BODY))
    await _synced(outbox)
    assert other.recovered == []
    await outbox.aclose(5)
    await alive.aclose(5)


async def test_events_of_a_client_that_ended_are_adopted_by_exactly_one(
    tmp_path: Path,
) -> None:
    """Three clients look for the same dead client's events: each event goes to one of them."""
    gone = Client().outbox(tmp_path)
    gone.start()
    for n in range(200):
        gone.add((f"key-{n}", BODY))
    await gone.aclose(5)
    takers = [Client() for _ in range(3)]
    outboxes = [taker.outbox(tmp_path) for taker in takers]
    for outbox in outboxes:
        outbox.start()
    await _wait_until(lambda: sum(len(t.recovered) for t in takers) >= 200)
    await asyncio.sleep(0.2)  # room for a second adoption, which must not happen
    keys = [event.key for taker in takers for event in taker.recovered]
    assert sorted(keys) == sorted(f"key-{n}" for n in range(200))
    for outbox in outboxes:
        await outbox.aclose(5)


async def test_adopted_events_are_handed_over_as_room_allows(tmp_path: Path) -> None:
    """With room for 10 at a time, 25 adopted events arrive in pages, oldest first."""
    gone = Client().outbox(tmp_path)
    gone.start()
    for n in range(25):
        gone.add((f"key-{n:02}", BODY))
    await gone.aclose(5)
    taker = Client(room=10)
    outbox = taker.outbox(tmp_path)
    outbox.start()
    await _wait_until(lambda: len(taker.recovered) == 10)
    assert outbox.backlog == 15
    taker.room = 100
    await _wait_until(lambda: len(taker.recovered) == 25)
    assert [e.key for e in taker.recovered] == [f"key-{n:02}" for n in range(25)]
    assert outbox.backlog == 0
    await outbox.aclose(5)


async def test_adopted_events_older_than_max_age_expire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An adopted event past max_age is deleted and reported expired, never handed over."""
    gone = Client().outbox(tmp_path)
    gone.start()
    gone.add(("old", BODY))
    await gone.aclose(5)
    conn = sqlite3.connect(tmp_path / DATABASE_NAME)
    conn.execute("UPDATE events SET enqueued_at = ?", (time.time() - 100,))
    conn.commit()
    conn.close()
    taker = Client()
    outbox = taker.outbox(tmp_path, max_age=50.0)
    outbox.start()
    await _wait_until(lambda: len(taker.expired) == 1)
    assert taker.expired[0].key == "old"
    assert taker.recovered == []
    await _synced(outbox)
    assert _rows(tmp_path) == []
    assert f"FluxGate: outbox {tmp_path}: 1 event(s) older than 50.0s dropped unsent (expired)" in [
        r.getMessage() for r in caplog.records
    ]
    await outbox.aclose(5)


async def test_max_events_counts_every_client_sharing_the_path(tmp_path: Path) -> None:
    """One client's rows count against another's limit: the second refuses at the total."""
    first = Client().outbox(tmp_path, max_events=5)
    first.start()
    for n in range(3):
        assert first.add((f"a{n}", BODY))
    await _synced(first)
    second = Client().outbox(tmp_path, max_events=5)
    second.start()
    await _synced(second)
    assert second.add(("b0", BODY))
    assert second.add(("b1", BODY))
    assert not second.add(("b2", BODY))
    await _synced(second)
    assert len(_rows(tmp_path)) == 5
    await second.aclose(5)
    await first.aclose(5)


async def test_max_bytes_refuses_once_the_bodies_fill_it(tmp_path: Path) -> None:
    """With room for about three bodies, the fourth is refused once the first are written."""
    outbox = Client().outbox(tmp_path, max_bytes=len(BODY) * 3 + 1)
    outbox.start()
    for n in range(3):
        assert outbox.add((f"k{n}", BODY))
    await _synced(outbox)
    assert not outbox.add(("k3", BODY))
    await outbox.aclose(5)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (
            b"this is not a database, it is a text file\n" * 100,
            " is not a readable SQLite database (",
        ),
        (None, " is not a fluxgate-async outbox: moved aside to "),
        (b"version", " is an outbox of another version (99): moved aside to "),
    ],
    ids=["corrupt", "foreign", "other-version"],
)
async def test_a_corrupt_or_foreign_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None, why: str
) -> None:
    """The file is renamed with a WARNING, and a fresh outbox stores events as usual."""
    database = tmp_path / DATABASE_NAME
    if content == b"version":
        open_database(tmp_path).close()
        other = sqlite3.connect(database)
        other.execute("PRAGMA user_version = 99")
        other.close()
        content = None
    elif content is None:
        other = sqlite3.connect(database)
        other.execute("CREATE TABLE invoices (id INTEGER)")
        other.commit()
        other.close()
    else:
        database.write_bytes(content)
    outbox = Client().outbox(tmp_path)
    outbox.start()
    outbox.add(("k", BODY))
    await _synced(outbox)
    assert outbox.usable
    assert [row[0] for row in _rows(tmp_path)] == ["k"]
    [aside] = tmp_path.glob(f"{DATABASE_NAME}.bad-*")  # noqa: ASYNC240 - a test's directory
    assert aside.read_bytes()[:16] == (content or b"SQLite format 3\x00")[:16]
    assert why in caplog.text
    assert "moved aside" in caplog.text
    await outbox.aclose(5)


async def test_an_unwritable_path_warns_once_and_counts_events_kept_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A path under a regular file: one WARNING, add() still accepts, memory_only counts."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    outbox = Client().outbox(blocker / "outbox")
    outbox.start()
    for n in range(3):
        assert outbox.add((f"k{n}", BODY))
    await _synced(outbox)
    assert not outbox.usable
    assert outbox.memory_only == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert re.fullmatch(
        rf"FluxGate: the outbox at {re.escape(str(blocker / 'outbox'))} cannot be written "
        r"\(\[Errno 20\] Not a directory: .+\); events are kept in memory only, and lost if "
        r"the process dies, until the client is started again",
        warnings[0].getMessage(),
    )
    await outbox.aclose(5)
    assert outbox._thread is not None
    await asyncio.to_thread(outbox._thread.join, 10)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # closing is silent
    assert outbox.kept == 0


async def test_a_directory_in_place_of_the_file_makes_the_outbox_unusable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite cannot open a directory: not corrupt, so nothing is moved; one WARNING."""
    (tmp_path / DATABASE_NAME).mkdir()
    outbox = Client().outbox(tmp_path)
    outbox.add(("k", BODY))
    await _synced(outbox)
    assert not outbox.usable
    assert outbox.memory_only == 1
    assert (tmp_path / DATABASE_NAME).is_dir()
    assert caplog.text.count("cannot be written") == 1
    await outbox.aclose(5)


async def test_a_disk_that_fills_up_warns_once_and_keeps_going_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's 'database or disk is full' mid-run: one WARNING, then events count memory_only."""
    outbox = Client().outbox(tmp_path)
    await _started_on_a_full_disk(outbox)
    for n in range(50):
        outbox.add((f"k{n}", BODY * 100))
    await _synced(outbox)
    assert not outbox.usable
    assert outbox.persisted + outbox.memory_only == 51
    assert outbox.memory_only >= 1
    assert caplog.text.count("cannot be written") == 1
    assert "full" in caplog.text
    await outbox.aclose(5)


async def test_summary_counts_reasons_oldest_and_live_owners(tmp_path: Path) -> None:
    """The summary the CLI prints: totals, reasons, the oldest time, which owners live."""
    outbox = Client().outbox(tmp_path)
    outbox.start()
    before = time.time()
    for n in range(3):
        outbox.add((f"k{n}", BODY))
    outbox.failed("k0", "http_503")
    await _synced(outbox)
    conn = open_database(tmp_path)
    summary = summarise(conn, tmp_path)
    assert (summary.events, summary.bytes) == (3, 3 * len(BODY))
    assert summary.by_reason == {"not tried": 2, "http_503": 1}
    assert summary.oldest is not None
    assert before <= summary.oldest <= time.time()
    assert list(summary.owners.values()) == [True]
    await outbox.aclose(5)
    assert list(summarise(conn, tmp_path).owners.values()) == [False]
    conn.close()


def test_constructing_touches_no_file_and_the_writer_thread_creates_the_outbox(
    tmp_path: Path,
) -> None:
    """A new outbox has no directory yet; the first add starts the thread, which creates it."""
    outbox = Client().outbox(tmp_path / "later")
    assert not (tmp_path / "later").exists()
    outbox.add(("k", BODY))
    assert outbox.sync().result(10) is None
    assert (tmp_path / "later" / DATABASE_NAME).exists()
    asyncio.run(outbox.aclose(5))


async def test_close_nowait_writes_what_is_waiting_and_lets_another_client_adopt_it(
    tmp_path: Path,
) -> None:
    """A client collected without aclose(): its writer still writes, then releases its events."""
    gone = Client().outbox(tmp_path)
    gone.add(("left", BODY))
    gone.close_nowait()
    assert gone._thread is not None
    await asyncio.to_thread(gone._thread.join, 10)
    taker = Client()
    outbox = taker.outbox(tmp_path)
    outbox.start()
    await _wait_until(lambda: len(taker.recovered) == 1)
    assert taker.recovered[0].key == "left"
    await outbox.aclose(5)


async def test_spilled_events_are_read_back_in_order_as_room_allows(tmp_path: Path) -> None:
    """Spilled: on disk only, handed back 10 at a time, in the order spilled, then not spilling."""
    taker = Client(room=0)
    outbox = taker.outbox(tmp_path)
    outbox.start()
    for n in range(25):
        assert outbox.spill((f"key-{n:02}", BODY))
    assert outbox.spilling
    await _synced(outbox)
    assert [row[0] for row in _rows(tmp_path)] == [f"key-{n:02}" for n in range(25)]
    assert (outbox.spilled, outbox.persisted, taker.spilled) == (25, 25, [])
    assert not outbox.caught_up
    taker.room = 10
    await _wait_until(lambda: len(taker.spilled) == 10)
    taker.room = 100
    await _wait_until(lambda: len(taker.spilled) == 25)
    assert [e.key for e in taker.spilled] == [f"key-{n:02}" for n in range(25)]
    assert {(e.body, e.attempts, e.last_error) for e in taker.spilled} == {(BODY, 0, None)}
    assert (outbox.spilled, outbox.spilling, outbox.caught_up) == (0, False, True)
    assert taker.recovered == []
    await outbox.aclose(5)


async def test_spilled_events_that_cannot_be_written_are_lost_with_a_reason(
    tmp_path: Path,
) -> None:
    """Unencodable: invalid_event; a key already waiting: queue_full; none counted as spilled."""
    client = Client(room=0)
    outbox = client.outbox(tmp_path)
    outbox.start()
    assert outbox.add(("twin", BODY))
    assert outbox.spill(None)
    assert outbox.spill(("twin", BODY))
    assert outbox.spill(("fine", BODY))
    await _synced(outbox)
    assert client.lost == [(None, "invalid_event"), (("twin", BODY), "queue_full")]
    assert [row[0] for row in _rows(tmp_path)] == ["twin", "fine"]
    assert (outbox.spilled, outbox.spills_lost) == (1, 2)
    assert outbox.keep_spilled() == 1
    assert (outbox.spilled, outbox.spilling) == (0, False)
    await outbox.aclose(5)


async def test_spilling_to_an_unwritable_outbox_loses_the_events_as_queue_full(
    tmp_path: Path,
) -> None:
    """No disk to write to and not in memory: each spilled event is reported queue_full."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    client = Client()
    outbox = client.outbox(blocker / "outbox")
    for n in range(3):
        assert outbox.spill((f"k{n}", BODY))
    await _synced(outbox)
    assert not outbox.usable
    assert outbox.caught_up
    assert client.lost == [((f"k{n}", BODY), "queue_full") for n in range(3)]
    assert outbox.spilled == 0
    await outbox.aclose(5)


async def test_spilled_events_a_closed_client_refuses_stay_on_disk(tmp_path: Path) -> None:
    """The client closed while they were read back: not counted back, left on disk."""
    client = Client()
    refused: list[PendingEvent] = []

    def closed(events: list[PendingEvent]) -> bool:
        refused.extend(events)
        return False

    outbox = client.outbox(tmp_path)
    outbox._spilled = closed
    outbox.start()
    assert outbox.spill(("k", BODY))
    await _wait_until(lambda: refused != [])
    assert outbox.spilled == 1
    await outbox.aclose(5)
    assert outbox.keep_spilled() == 1
    assert [row[0] for row in _rows(tmp_path)] == ["k"]


async def test_a_disk_that_fills_while_spilling_loses_the_batch_as_queue_full(
    tmp_path: Path,
) -> None:
    """SQLITE_FULL on a batch of spilled events: each one reported queue_full, none left spilled."""
    client = Client(room=0)
    outbox = client.outbox(tmp_path)
    await _started_on_a_full_disk(outbox)
    for n in range(50):
        outbox.spill((f"k{n}", BODY * 100))
    await _synced(outbox)
    assert not outbox.usable
    assert len(client.lost) + outbox.spilled == 50
    assert client.lost
    assert {reason for _, reason in client.lost} == {"queue_full"}
    spilled = [(f"k{n}", BODY * 100) for n in range(50)]
    assert [item for item, _ in client.lost] == spilled[50 - len(client.lost) :]
    await outbox.aclose(5)


async def test_sync_answers_at_once_before_the_writer_starts_and_after_it_ends(
    tmp_path: Path,
) -> None:
    """Nothing to wait for without a writer: `sync()` is done at once, never stuck or raising."""
    outbox = Client().outbox(tmp_path)
    assert outbox.sync().done()
    outbox.start()
    outbox.add(("k", BODY))
    await _synced(outbox)
    await outbox.aclose(5)
    assert outbox._thread is not None
    outbox._thread.join(5)
    assert outbox.sync().done()


# --- a file that cannot be used: moved aside whole when damaged, left alone when locked -----


@pytest.fixture
def far_time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time 5 h 45 min ahead of UTC, so that a local time stamp cannot pass for UTC."""
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_time_zone")
async def test_a_damaged_file_is_moved_aside_under_a_utc_stamp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file goes to `.bad-<UTC time>`; the WARNING names the file, why, and where it went."""
    database = tmp_path / DATABASE_NAME
    database.write_bytes(b"not a database\n" * 100)
    before = datetime.now(UTC).replace(microsecond=0)
    outbox = Client().outbox(tmp_path)
    outbox.add(("k", BODY))
    await _synced(outbox)
    after = datetime.now(UTC)
    assert outbox.usable
    [aside] = tmp_path.glob(f"{DATABASE_NAME}.bad-*[0-9]Z")  # noqa: ASYNC240 - a test's directory
    stamp = re.fullmatch(rf"{DATABASE_NAME}\.bad-(\d{{8}}T\d{{12}})Z", aside.name)
    assert stamp is not None
    moved_at = datetime.strptime(stamp[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    assert before <= moved_at <= after
    assert aside.read_bytes() == b"not a database\n" * 100
    [warning] = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert re.fullmatch(
        rf"FluxGate: {re.escape(str(database))} is not a readable SQLite database \(.+\): "
        rf"moved aside to {re.escape(str(aside))}, and a fresh outbox started",
        warning,
    )
    await outbox.aclose(5)


async def test_a_foreign_database_in_use_is_moved_aside_with_its_wal_and_shm(
    tmp_path: Path,
) -> None:
    """Rows another program has only in its -wal stay readable in the copy moved aside."""
    database = tmp_path / DATABASE_NAME
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("PRAGMA wal_autocheckpoint=0")  # its rows stay in the -wal
    holder.execute("CREATE TABLE invoices (id INTEGER)")
    holder.execute("INSERT INTO invoices VALUES (1), (2)")
    try:
        outbox = Client().outbox(tmp_path)
        outbox.add(("k", BODY))
        await _synced(outbox)
        assert outbox.usable
        [aside] = tmp_path.glob(f"{DATABASE_NAME}.bad-*[0-9]Z")  # noqa: ASYNC240
        assert Path(f"{aside}-wal").exists()  # noqa: ASYNC240
        assert Path(f"{aside}-shm").exists()  # noqa: ASYNC240
        copy = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        assert copy.execute("SELECT id FROM invoices ORDER BY id").fetchall() == [(1,), (2,)]
        copy.close()
        await outbox.aclose(5)
    finally:
        holder.close()


async def test_a_file_another_program_holds_locked_is_not_taken_for_damaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'database is locked' leaves the file in place: the outbox is unusable, with one WARNING."""
    monkeypatch.setattr(_outbox, "_BUSY_SECONDS", 0.1)
    database = tmp_path / DATABASE_NAME
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE mine (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        outbox = Client().outbox(tmp_path)
        outbox.add(("k", BODY))
        await _synced(outbox)
        assert not outbox.usable
        assert outbox.memory_only == 1
        assert not list(tmp_path.glob(f"{DATABASE_NAME}.bad-*"))  # noqa: ASYNC240
        assert "moved aside" not in caplog.text
        assert caplog.text.count("cannot be written (database is locked)") == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await outbox.aclose(5)


def test_opening_a_locked_file_raises_and_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`open_database` (the CLI's way in) lets 'database is locked' out rather than replace it."""
    monkeypatch.setattr(_outbox, "_BUSY_SECONDS", 0.1)
    database = tmp_path / DATABASE_NAME
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE mine (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            open_database(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["open.lock", DATABASE_NAME, "owners"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_events_already_written_count_once_against_max_events(tmp_path: Path) -> None:
    """With max_events=3, written one at a time, the third is accepted and the fourth refused."""
    outbox = Client().outbox(tmp_path, max_events=3)
    outbox.start()
    for n in range(3):
        assert outbox.add((f"k{n}", BODY))
        await _synced(outbox)
    assert not outbox.add(("k3", BODY))
    assert outbox.persisted == 3
    await outbox.aclose(5)


async def test_max_bytes_holds_exactly_as_many_bodies_as_fit(tmp_path: Path) -> None:
    """Room for exactly three bodies: the third is accepted once two are written, the fourth not."""
    outbox = Client().outbox(tmp_path, max_bytes=len(BODY) * 3)
    outbox.start()
    for n in range(2):
        assert outbox.add((f"k{n}", BODY))
    await _synced(outbox)
    assert outbox.add(("k2", BODY))
    await _synced(outbox)
    assert not outbox.add(("k3", BODY))
    assert [row[0] for row in _rows(tmp_path)] == ["k0", "k1", "k2"]
    await outbox.aclose(5)


async def test_closing_an_outbox_never_started_is_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No writer to wait for: aclose() returns without a WARNING and creates nothing."""
    outbox = Client().outbox(tmp_path / "unused")
    await outbox.aclose(5)
    assert caplog.records == []
    assert not (tmp_path / "unused").exists()


async def test_aclose_waits_at_most_its_timeout_for_a_blocked_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer held up by another process's open lock: aclose(0.2) gives up with a WARNING."""
    lock = os.open(tmp_path / "open.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        outbox = Client().outbox(tmp_path)
        outbox.add(("k", BODY))
        await outbox.aclose(0.2)
        assert [r.getMessage() for r in caplog.records] == [
            "FluxGate: the outbox did not finish writing within 0.2s"
        ]
    finally:
        os.close(lock)
    assert outbox._thread is not None
    outbox._thread.join(10)  # unblocked, the writer still writes the event, for the next start
    assert not outbox._thread.is_alive()
    assert [row[0] for row in _rows(tmp_path)] == ["k"]
    assert len(caplog.records) == 1  # finishing after aclose gave up is silent


def test_a_delete_that_fails_part_way_deletes_nothing_and_frees_the_database(
    tmp_path: Path,
) -> None:
    """`delete_events` is one transaction: a key it cannot bind undoes the deletes before it."""
    conn = open_database(tmp_path)
    conn.execute("INSERT INTO events (key, owner, body, enqueued_at) VALUES ('a', 'o', x'00', 0)")
    with pytest.raises(sqlite3.ProgrammingError, match="binding parameter"):
        delete_events(conn, ["a", object()])  # type: ignore[list-item]
    other = sqlite3.connect(tmp_path / DATABASE_NAME, timeout=0.1)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock was let go
        other.execute("ROLLBACK")
        assert other.execute("SELECT key FROM events").fetchall() == [("a",)]
    finally:
        other.close()
        conn.close()


def test_an_outbox_shows_its_directory_in_its_repr(tmp_path: Path) -> None:
    """What a debugger or a log shows of an outbox: the directory it writes to."""
    assert repr(Client().outbox(tmp_path)) == f"<Outbox {str(tmp_path)!r}>"


# --- at exit: the writer gets a moment, with a deadline, to write what is waiting ------------

# A program that queues three events and ends without closing its outbox.
_ENDS_UNCLOSED = """
import sys
from fluxgate_async._outbox import Outbox

outboxes = [
    Outbox(
        sys.argv[1],
        max_events=100,
        max_bytes=1_000_000,
        max_age=3600.0,
        prepare=lambda item: item,
        room=lambda: 0,
        recovered=lambda events: None,
        expired=lambda event: None,
        spilled=lambda events: False,
        lost=lambda item, reason: None,
    )
    for _ in range(int(sys.argv[2]))
]
for outbox in outboxes:
    for n in range(3):
        outbox.add((f"k{n}", b"{}"))
print("added", flush=True)
"""


async def _end_unclosed(path: Path, outboxes: int = 1) -> tuple[int | None, bytes]:
    """Run `_ENDS_UNCLOSED`; once it says `added`, wait a moment, then let its writers open."""
    lock = os.open(path / "open.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _ENDS_UNCLOSED,
            str(path),
            str(outboxes),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line == b"added\n"
        await asyncio.sleep(0.3)  # the program is at its end, its writers held up
    finally:
        os.close(lock)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, stderr


async def test_a_program_that_ends_without_closing_leaves_its_events_on_disk(
    tmp_path: Path,
) -> None:
    """Events still waiting for the writer when the program ends are written at exit."""
    assert await _end_unclosed(tmp_path) == (0, b"")
    assert [row[0] for row in _rows(tmp_path)] == ["k0", "k1", "k2"]


async def test_a_writer_held_up_at_exit_delays_the_end_two_seconds_at_most(
    tmp_path: Path,
) -> None:
    """Six outboxes whose writers cannot open: the program still ends, silently, within 2 s."""
    lock = os.open(tmp_path / "open.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _ENDS_UNCLOSED,
            str(tmp_path),
            "6",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"added\n"
        ended = time.monotonic()
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        waited = time.monotonic() - ended
    finally:
        os.close(lock)
    assert (process.returncode, stderr) == (0, b"")
    # One deadline for all six, not one each: a second each would be 7 s.
    assert waited < 5.0
    assert not (tmp_path / DATABASE_NAME).exists()


# --- across a fork: the child is a new client, the parent's events stay the parent's ---------


def _fork_quietly() -> int:
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock; the
        # child here touches nothing those threads hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _parent_then_killed(path: Path, ready: int, hold: int) -> None:  # pragma: no cover - forked
    """In a forked process: queue one event, fork a child that queues one, die by SIGKILL.

    Outboxes that never started are about too, as in any program with several clients.
    The child writes its event, closes its outbox (the event stays on disk), says so on
    `ready`, and lives on until `hold` is closed.
    """
    unused = [Client().outbox(path / f"unused-{n}") for n in range(20)]
    outbox = Client().outbox(path)
    outbox.add(("parent", BODY))
    outbox.sync().result(10)
    child_r, child_w = os.pipe()
    if _fork_quietly() == 0:
        code = 1
        try:
            outbox.add(("child", BODY))
            outbox.sync().result(10)
            outbox.close_nowait()
            assert outbox._thread is not None
            outbox._thread.join(10)
            os.write(child_w, b"closed")
            os.read(hold, 1)
            code = 0 if unused else 2
        finally:
            os._exit(code)
    # Alive until the child has opened its outbox, so that the child does not adopt ours.
    os.write(ready, os.read(child_r, 64))
    os.kill(os.getpid(), signal.SIGKILL)


async def test_a_forked_child_holds_nothing_of_its_killed_parents_outbox(tmp_path: Path) -> None:
    """A child outlives its parent, killed: the next client adopts all their events at once."""
    await _left_by_a_client_that_ended(tmp_path, 1)  # the parent adopts it before it forks
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = _fork_quietly()
    if pid == 0:  # pragma: no cover - reports through its pipe, then dies by SIGKILL
        try:
            os.close(ready_r)
            os.close(hold_w)
            _parent_then_killed(tmp_path, ready_w, hold_r)
        finally:
            os._exit(1)
    os.close(ready_w)
    os.close(hold_r)
    try:
        said = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 64), 30)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
        assert said == b"closed"  # and the child lives on
        taker = Client()
        outbox = taker.outbox(tmp_path)
        outbox.start()
        await _synced(outbox)  # opened, and adopted what it could
        assert sorted(e.key for e in taker.recovered) == ["child", "key-0", "parent"]
        await outbox.aclose(5)
    finally:
        os.close(hold_w)  # the child ends
        os.close(ready_r)


# --- handing events over: never more than the room, never "caught up" too soon --------------


async def _left_by_a_client_that_ended(path: Path, count: int) -> None:
    gone = Client().outbox(path)
    gone.start()
    for n in range(count):
        gone.add((f"key-{n}", BODY))
    await gone.aclose(5)


async def test_with_room_for_one_event_adopted_events_are_handed_over_one_by_one(
    tmp_path: Path,
) -> None:
    """A queue with one free place at a time still gets every adopted event, in order."""
    await _left_by_a_client_that_ended(tmp_path, 3)
    taker = Client(room=1)
    outbox = taker.outbox(tmp_path)
    outbox.start()
    for n in range(3):
        await _wait_until(lambda n=n: len(taker.recovered) == n + 1)  # type: ignore[misc]
        assert taker.room == 0
        taker.room = 1  # the client sent one: room for the next
    assert [e.key for e in taker.recovered] == ["key-0", "key-1", "key-2"]
    await outbox.aclose(5)


async def test_an_outbox_is_not_caught_up_while_it_hands_events_over(tmp_path: Path) -> None:
    """Until the client has the events being handed over, `caught_up` says no (flush waits)."""
    await _left_by_a_client_that_ended(tmp_path, 3)
    taker = Client(room=0)
    seen: list[bool] = []
    outbox = taker.outbox(tmp_path)

    def take(events: list[PendingEvent]) -> None:
        seen.append(outbox.caught_up)
        taker.take(events)

    outbox._recovered = take
    outbox.start()
    await _synced(outbox)  # opened, the events adopted, no room for them yet
    assert (outbox.backlog, outbox.caught_up) == (3, False)
    taker.room = 10
    await _wait_until(lambda: taker.recovered != [])
    assert (len(taker.recovered), seen) == (3, [False])
    assert outbox.caught_up
    await outbox.aclose(5)


async def test_adopted_and_spilled_events_waiting_together_share_the_room(tmp_path: Path) -> None:
    """Room for 10: the 5 adopted events first, then 5 of the 20 spilled, no more."""
    await _left_by_a_client_that_ended(tmp_path, 5)
    taker = Client(room=0)
    outbox = taker.outbox(tmp_path)
    outbox.start()
    for n in range(20):
        assert outbox.spill((f"spilled-{n}", BODY))
    await _synced(outbox)
    assert (outbox.backlog, outbox.spilled) == (5, 20)
    taker.room = 10
    await _wait_until(lambda: taker.room <= 0)
    await _synced(outbox)
    assert [e.key for e in taker.recovered] == [f"key-{n}" for n in range(5)]
    assert [e.key for e in taker.spilled] == [f"spilled-{n}" for n in range(5)]
    assert (taker.room, outbox.spilled) == (0, 15)
    await outbox.aclose(5)


async def test_a_spilled_event_whose_key_was_delivered_meanwhile_is_counted_once(
    tmp_path: Path,
) -> None:
    """A caller's key given twice, the twin delivered first: the spilled one waits no more."""
    client = Client(room=0)
    outbox = client.outbox(tmp_path)
    outbox.start()
    assert outbox.spill(None)  # lost (invalid_event) before any of the others
    assert outbox.spill(("twice", BODY))
    assert outbox.spill(("once", BODY))
    await _synced(outbox)
    assert outbox.add(("twice", BODY))  # the same key again, in the queue: stored once
    await _synced(outbox)
    outbox.done("twice")  # delivered, which deletes the one row under that key
    await _synced(outbox)
    assert [row[0] for row in _rows(tmp_path)] == ["once"]
    assert (outbox.spilled, outbox.spilling) == (2, True)
    client.room = 10
    await _wait_until(lambda: client.spilled != [])
    await _synced(outbox)
    assert [e.key for e in client.spilled] == ["once"]
    assert (outbox.spilled, outbox.spilling, outbox.caught_up) == (0, False, True)
    assert outbox.spills_lost == 2  # the unencodable one, and the twin
    await outbox.aclose(5)


async def test_a_client_whose_disk_fills_leaves_the_outbox_to_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write is undone at once: other clients on the path keep writing, unblocked."""
    monkeypatch.setattr(_outbox, "_BUSY_SECONDS", 1.0)
    full = Client().outbox(tmp_path)
    await _started_on_a_full_disk(full)  # SQLITE_FULL for this client's connection only
    other = Client().outbox(tmp_path)
    other.start()
    await _synced(other)
    full.add(("too-big", BODY * 1_000))
    await _synced(full)
    assert not full.usable
    other.add(("other", BODY))
    await _synced(other)
    assert other.usable
    assert [row[0] for row in _rows(tmp_path)] == ["first", "other"]
    await other.aclose(5)
    await full.aclose(5)


def _interrupted_on(conn: sqlite3.Connection, change: str) -> None:
    """Interrupt `conn`'s next `change` (DELETE, UPDATE) of a row: SQLite rolls back itself."""
    conn.create_function("interrupt", 0, conn.interrupt)
    conn.execute(f"CREATE TEMP TRIGGER cut BEFORE {change} ON events BEGIN SELECT interrupt(); END")


def test_a_delete_that_sqlite_rolled_back_itself_raises_its_cause(tmp_path: Path) -> None:
    """Interrupted, SQLite undoes the whole delete: the error says so, not that ROLLBACK failed."""
    conn = open_database(tmp_path)
    conn.execute("INSERT INTO events (key, owner, body, enqueued_at) VALUES ('a', 'o', x'00', 0)")
    _interrupted_on(conn, "DELETE")
    with pytest.raises(sqlite3.OperationalError, match=r"^interrupted$"):
        delete_events(conn, ["a"])
    assert conn.execute("SELECT key FROM events").fetchall() == [("a",)]
    conn.close()


async def test_an_adoption_that_sqlite_rolled_back_itself_raises_its_cause(
    tmp_path: Path,
) -> None:
    """Interrupted, the adoption is undone whole and says why; the next one takes every row."""
    await _left_by_a_client_that_ended(tmp_path, 2)
    conn = open_database(tmp_path)
    _interrupted_on(conn, "UPDATE")
    with pytest.raises(sqlite3.OperationalError, match=r"^interrupted$"):
        adopt_dead_owners(conn, tmp_path, "me")
    conn.execute("DROP TRIGGER cut")
    assert len(adopt_dead_owners(conn, tmp_path, "me")) == 2
    assert conn.execute("SELECT DISTINCT owner FROM events").fetchall() == [("me",)]
    conn.close()


async def test_adoption_says_what_it_took_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DEBUG: how many events of each ended client; INFO: how many the outbox will deliver."""
    caplog.set_level(logging.DEBUG, logger="fluxgate_async")
    await _left_by_a_client_that_ended(tmp_path, 2)
    taker = Client()
    outbox = taker.outbox(tmp_path)
    outbox.start()
    await _synced(outbox)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", "FluxGate: outbox: adopted 2 event(s) of a client that ended"),
        ("INFO", f"FluxGate: outbox {tmp_path}: delivering 2 event(s) left by a client that ended"),
    ]
    await outbox.aclose(5)


def test_a_live_client_listed_first_does_not_stop_adopting_an_ended_ones_events(
    tmp_path: Path,
) -> None:
    """Owners are looked at one by one: a live one is passed over, the ended one after it taken."""
    conn = open_database(tmp_path)
    for owner in ("a-live", "b-ended"):
        register_owner(conn, owner)
    conn.execute(
        "INSERT INTO events (key, owner, body, enqueued_at) VALUES ('k', 'b-ended', x'00', 0)"
    )
    alive = os.open(tmp_path / "owners" / "a-live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(alive, fcntl.LOCK_EX)
    try:
        assert len(adopt_dead_owners(conn, tmp_path, "me")) == 1
        assert conn.execute("SELECT owner FROM events").fetchall() == [("me",)]
        assert sorted(row[0] for row in conn.execute("SELECT owner FROM owners")) == ["a-live"]
    finally:
        os.close(alive)
        conn.close()


async def test_owner_lock_files_are_private_to_the_user(tmp_path: Path) -> None:
    """The files an outbox creates for its locks are read-write for their owner only."""
    outbox = Client().outbox(tmp_path)
    outbox.start()
    await _synced(outbox)
    [lock] = (tmp_path / "owners").iterdir()
    assert lock.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "open.lock").stat().st_mode & 0o777 == 0o600
    await outbox.aclose(5)


async def test_closing_while_another_process_writes_still_lets_go_of_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its owner row cannot be deleted (database locked): its lock still goes, its events too."""
    monkeypatch.setattr(_outbox, "_BUSY_SECONDS", 0.2)
    first = Client().outbox(tmp_path)
    first.start()
    first.add(("left", BODY))
    await _synced(first)
    holder = sqlite3.connect(tmp_path / DATABASE_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        await first.aclose(5)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert first.kept == 1
    taker = Client()
    outbox = taker.outbox(tmp_path)
    outbox.start()
    await _synced(outbox)
    assert [e.key for e in taker.recovered] == ["left"]
    await outbox.aclose(5)


async def test_a_file_with_damaged_pages_is_moved_aside_as_damaged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outbox whose header reads well but whose pages do not: moved aside, saying so."""
    conn = open_database(tmp_path)
    conn.executemany(
        "INSERT INTO events (key, owner, body, enqueued_at) VALUES (?, 'o', ?, 0)",
        [(f"k{n}", b"x" * 100) for n in range(200)],
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    database = tmp_path / DATABASE_NAME
    data = bytearray(database.read_bytes())
    data[-2000:-1800] = b"\xff" * 200  # the middle of the last page
    database.write_bytes(bytes(data))
    outbox = Client().outbox(tmp_path)
    outbox.add(("k", BODY))
    await _synced(outbox)
    assert outbox.usable
    assert [row[0] for row in _rows(tmp_path)] == ["k"]
    assert f"FluxGate: {database} is damaged (" in caplog.text
    await outbox.aclose(5)


async def test_a_writer_waits_for_another_processs_transaction_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program writes for 6 s: the outbox waits (up to its limit), then writes."""
    monkeypatch.setattr(_outbox, "_BUSY_SECONDS", 30.0)
    open_database(tmp_path).close()
    holder = sqlite3.connect(tmp_path / DATABASE_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        outbox = Client().outbox(tmp_path)
        outbox.add(("k", BODY))
        await asyncio.sleep(6)  # longer than SQLite's own default wait of 5 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await _synced(outbox)
    assert outbox.usable
    assert [row[0] for row in _rows(tmp_path)] == ["k"]
    await outbox.aclose(5)


class _Bug(Exception):
    """What a bug in the code the outbox calls raises."""


def _broken(*_args: object) -> Any:
    raise _Bug("a bug")


@pytest.mark.parametrize(
    ("hook", "where"), [("_room", "opening the outbox"), ("_prepare", "in the outbox")]
)
async def test_a_bug_costs_the_outbox_not_the_app(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, hook: str, where: str
) -> None:
    """An unexpected exception: logged once with its traceback, one WARNING, memory only."""
    await _left_by_a_client_that_ended(tmp_path, 1)  # opening hands it over: asks for room
    outbox = Client().outbox(tmp_path)
    setattr(outbox, hook, _broken)
    outbox.add(("k", BODY))
    await _wait_until(lambda: not outbox.usable)
    outbox.add(("k2", BODY))
    await _synced(outbox)
    assert outbox.memory_only >= 1  # k2 at least: in memory only
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == f"FluxGate: unexpected error {where}"
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], _Bug)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "cannot be written (a bug); events are kept in memory only" in warning
    await outbox.aclose(5)


async def test_an_adoption_another_process_keeps_locked_out_warns_with_the_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lock held past the wait while adopting: one WARNING that says so, memory only."""
    monkeypatch.setattr(_outbox, "_BUSY_SECONDS", 0.2)
    taker = Client()
    outbox = taker.outbox(tmp_path)
    outbox.start()
    await _synced(outbox)
    await _left_by_a_client_that_ended(tmp_path, 1)
    holder = sqlite3.connect(tmp_path / DATABASE_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        outbox._next_adoption = 0  # look for ended clients now rather than in two seconds
        await _synced(outbox)  # adoption runs after this batch
        await _synced(outbox)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not outbox.usable
    assert taker.recovered == []
    assert caplog.text.count("cannot be written (database is locked)") == 1
    await outbox.aclose(5)


async def test_spilled_events_count_once_against_max_events(tmp_path: Path) -> None:
    """With max_events=5 and three spilled events written, two more are accepted, not three."""
    outbox = Client(room=0).outbox(tmp_path, max_events=5)
    outbox.start()
    for n in range(3):
        assert outbox.spill((f"s{n}", BODY))
    await _synced(outbox)
    assert outbox.add(("a0", BODY))
    assert outbox.add(("a1", BODY))
    assert not outbox.add(("a2", BODY))
    await _synced(outbox)
    assert len(_rows(tmp_path)) == 5
    await outbox.aclose(5)


async def test_attempts_that_failed_before_the_event_was_written_are_all_counted(
    tmp_path: Path, client: Client
) -> None:
    """Added and failed twice within one batch: its row says two attempts, and the last reason."""
    outbox = client.outbox(tmp_path)
    lock = os.open(tmp_path / "open.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the writer waits until all three are queued
    outbox.add(("slow", BODY))
    outbox.failed("slow", "http_503")
    outbox.failed("slow", "connection")
    os.close(lock)
    await _synced(outbox)
    assert _rows(tmp_path) == [("slow", BODY, 2, "connection")]
    await outbox.aclose(5)


async def test_a_client_that_closes_with_nothing_left_leaves_no_trace(tmp_path: Path) -> None:
    """Every event acknowledged: the client is no longer listed, and its lock file is gone."""
    outbox = Client().outbox(tmp_path)
    outbox.start()
    outbox.add(("k", BODY))
    await _synced(outbox)
    outbox.done("k")
    await outbox.aclose(5)
    assert outbox.kept == 0
    conn = open_database(tmp_path)
    try:
        assert summarise(conn, tmp_path).owners == {}
    finally:
        conn.close()
    assert list((tmp_path / "owners").iterdir()) == []
