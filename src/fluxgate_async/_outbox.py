"""The durable outbox: background events kept on disk until the API has them.

An outbox is a directory:

    outbox.sqlite3    one row per pending event (SQLite in WAL mode)
    owners/ID.lock    one per live client, held with flock(2) while it runs
    open.lock         held while a process opens, checks or replaces the database

Each row carries the event's Idempotency-Key, its encoded body, when it was
queued, how many attempts failed and why, and its owner: the client that
queued it. A client's lock is released by the kernel when its process dies,
however it dies, so a row whose owner's lock can be taken belongs to no live
client. Another client then *adopts* it: takes the lock, moves the rows to
itself in one write transaction, and only then deletes the lock file. SQLite
lets one writer at a time in, and a row moves only away from a dead owner, so
each row is adopted exactly once.

`Outbox` does all of its disk work on one writer thread. The event loop only
appends to a queue (`add`, `done`, `failed`): the writer takes what has
arrived, writes it in one transaction (a group commit), and comes back for
more. An event acknowledged before its turn came is never written at all.

An event recorded while the client's memory queue is full is *spilled*: written
to disk only, its row number noted, and read back (`spilled`) in order, a page
at a time, as the queue has room for it again. Memory then holds one small
integer per such event, and the outbox's limits bound the backlog.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import attrs

from ._stats import DropReason

__all__ = [
    "DATABASE_NAME",
    "Outbox",
    "OutboxSummary",
    "PendingEvent",
    "adopt_dead_owners",
    "claim_owner",
    "delete_events",
    "open_database",
    "read_events",
    "register_owner",
    "release_owner",
    "summarise",
]

log = logging.getLogger("fluxgate_async")

DATABASE_NAME = "outbox.sqlite3"
"""The database file inside an outbox directory."""
_OWNERS = "owners"
_OPEN_LOCK = "open.lock"
# "FGOB" as a big-endian int: SQLite's application_id says whose file this is.
_APPLICATION_ID: Final = 0x46474F42
_SCHEMA_VERSION: Final = 1
_SCHEMA = """
CREATE TABLE events (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
-- No index on owner: it would cost every write, and only adoption and closing,
-- once per client, look rows up by owner.
-- Every client that may own rows: adoption looks at these, never scans the events.
CREATE TABLE owners (owner TEXT PRIMARY KEY);
-- Kept by triggers so that every writer sees the totals of all, at no scan.
CREATE TABLE totals (events INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO totals VALUES (0, 0);
CREATE TRIGGER events_added AFTER INSERT ON events BEGIN
    UPDATE totals SET events = events + 1, bytes = bytes + length(new.body);
END;
CREATE TRIGGER events_removed AFTER DELETE ON events BEGIN
    UPDATE totals SET events = events - 1, bytes = bytes - length(old.body);
END;
"""
# SQLite result codes (the low byte of an extended code) that mean the file itself is bad.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
# How long a writer waits for another process's transaction before giving up.
_BUSY_SECONDS = 10.0
# Operations written in one transaction at most.
_MAX_BATCH = 2_000
# Rows read back per page when adopted events are handed to the sender.
_PAGE = 500
# How often the writer looks for clients that died, and how often it wakes
# to hand over adopted events while the queue has no room for them.
_ADOPT_EVERY_SECONDS = 2.0
_BACKLOG_POLL_SECONDS = 0.05
# How long the writer gets at exit to write what is waiting.
_EXIT_SECONDS = 2.0


@attrs.frozen
class PendingEvent:
    """One event waiting in an outbox."""

    key: str
    """Its Idempotency-Key, sent with every attempt."""
    body: bytes
    """The event as JSON, exactly as it is sent."""
    enqueued_at: float
    """When it was recorded, in seconds since the epoch."""
    attempts: int = 0
    """Attempts that failed so far."""
    last_error: str | None = None
    """The reason the last attempt failed (a `FailureReason`), or `None`."""


@attrs.frozen
class OutboxSummary:
    """What an outbox holds, for `fluxgate-async outbox`."""

    events: int
    bytes: int
    oldest: float | None
    """When the oldest event was recorded, in seconds since the epoch."""
    by_reason: dict[str, int]
    """Events by the reason their last attempt failed; `not tried` when none failed."""
    owners: dict[str, bool]
    """Each client's id and whether it is running; an ended one's events await adoption."""


class _Unusable(Exception):
    """The outbox cannot be used; the message says why, for the one WARNING."""


# --- the database, usable from any one thread -------------------------------------------


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _problem(conn: sqlite3.Connection) -> str | None:
    """Why the open file is not a usable outbox, or `None`; an empty file becomes one."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id == _APPLICATION_ID:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != _SCHEMA_VERSION:
            return f"an outbox of another version ({version})"
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        return None if check == "ok" else f"damaged ({check})"
    if app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(
            f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id = {_APPLICATION_ID};"
            f" PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;"
        )
        return None
    return "not a fluxgate-async outbox"


def _move_aside(database: Path, why: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = database.with_name(f"{database.name}.bad-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{database}{suffix}").rename(f"{aside}{suffix}")
    log.warning(
        "FluxGate: %s is %s: moved aside to %s, and a fresh outbox started", database, why, aside
    )


@contextlib.contextmanager
def _flocked(path: Path, fds: set[int]) -> Iterator[None]:
    """Hold an exclusive flock on `path`; its fd is in `fds` meanwhile (for a forked child)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fds.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fds.discard(fd)
        os.close(fd)


def open_database(directory: Path, fds: set[int] | None = None) -> sqlite3.Connection:
    """Open the outbox in `directory`, creating it, or replacing a corrupt or foreign file.

    Raises:
        OSError, sqlite3.Error: The directory or the file cannot be used.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _OWNERS).mkdir(exist_ok=True)
    database = directory / DATABASE_NAME
    # One process at a time checks, creates or moves the file aside: two must not
    # both find it corrupt and move each other's fresh file away.
    with _flocked(directory / _OPEN_LOCK, set() if fds is None else fds):
        for _ in range(2):
            conn = sqlite3.connect(
                database, isolation_level=None, check_same_thread=False, timeout=_BUSY_SECONDS
            )
            try:
                problem = _problem(conn)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    conn.close()
                    raise
                problem = f"not a readable SQLite database ({exc})"
            if problem is None:
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL: a commit survives the process being killed; only a power
                # cut can take the last commits back (the docs say so).
                conn.execute("PRAGMA synchronous=NORMAL")
                return conn
            conn.close()
            _move_aside(database, problem)
    msg = f"{database} could not be replaced"  # pragma: no cover - a rename that did not rename
    raise sqlite3.DatabaseError(msg)  # pragma: no cover


def _owner_lock(directory: Path, owner: str) -> Path:
    return directory / _OWNERS / f"{owner}.lock"


def _try_lock(path: Path) -> int | None:
    """The fd holding an exclusive flock on `path`, or `None` when a live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_owner(directory: Path) -> tuple[str, int]:
    """A new owner id and the fd of its held lock, before any row carries the id.

    Raises:
        OSError: The lock file cannot be created.
    """
    (directory / _OWNERS).mkdir(parents=True, exist_ok=True)
    owner = uuid.uuid4().hex
    fd = _try_lock(_owner_lock(directory, owner))
    assert fd is not None  # a fresh name nobody else knows
    return owner, fd


def register_owner(conn: sqlite3.Connection, owner: str) -> None:
    """List `owner` among the clients of the outbox, before any row carries its id."""
    conn.execute("INSERT OR IGNORE INTO owners VALUES (?)", (owner,))


def release_owner(
    directory: Path, owner: str, fd: int, conn: sqlite3.Connection | None = None
) -> None:
    """Give up ownership: unlist `owner` if it left no rows, delete its lock file, let go.

    The lock file goes while the lock is still held: a process that then finds
    no file makes one, locks it, and finds nothing left to adopt.
    """
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute(
                "DELETE FROM owners WHERE owner = ?"
                " AND NOT EXISTS (SELECT 1 FROM events WHERE owner = ?)",
                (owner, owner),
            )
    with contextlib.suppress(OSError):
        _owner_lock(directory, owner).unlink()
    os.close(fd)


def adopt_dead_owners(
    conn: sqlite3.Connection, directory: Path, owner: str, fds: set[int] | None = None
) -> list[int]:
    """Move the rows of every owner whose process is gone to `owner`; their rowids, oldest first."""
    others = [row[0] for row in conn.execute("SELECT owner FROM owners WHERE owner != ?", (owner,))]
    adopted: list[int] = []
    held = set() if fds is None else fds
    for other in others:
        path = _owner_lock(directory, other)
        fd = _try_lock(path)
        if fd is None:
            continue  # alive
        held.add(fd)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "UPDATE events SET owner = ? WHERE owner = ? RETURNING rowid", (owner, other)
                ).fetchall()
                conn.execute("DELETE FROM owners WHERE owner = ?", (other,))
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
            adopted += (row[0] for row in rows)
            if rows:
                log.debug("FluxGate: outbox: adopted %d event(s) of a client that ended", len(rows))
            # Deleted only now: a process that finds no file makes one, locks it, and
            # finds no rows left under that owner.
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            held.discard(fd)
            os.close(fd)
    adopted.sort()
    return adopted


def _roll_back(conn: sqlite3.Connection) -> None:
    # After an I/O error or an interrupt SQLite has already rolled back, and ROLLBACK
    # itself fails: that error must not replace the cause the caller reports.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def read_events(conn: sqlite3.Connection, rowids: list[int]) -> list[tuple[int, PendingEvent]]:
    """The rows with these rowids that still exist, oldest first."""
    if not rowids:
        return []
    marks = ",".join("?" * len(rowids))
    rows = conn.execute(
        "SELECT rowid, key, body, enqueued_at, attempts, last_error FROM events "
        f"WHERE rowid IN ({marks}) ORDER BY rowid",
        rowids,
    ).fetchall()
    return [(row[0], PendingEvent(row[1], bytes(row[2]), *row[3:])) for row in rows]


def delete_events(conn: sqlite3.Connection, keys: list[str]) -> None:
    """Delete the rows with these keys, in one transaction."""
    if not keys:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("DELETE FROM events WHERE key = ?", ((key,) for key in keys))
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise


def summarise(conn: sqlite3.Connection, directory: Path) -> OutboxSummary:
    """Count, size, oldest, reasons and owners of what `conn`'s outbox holds."""
    events, size, oldest = conn.execute(
        "SELECT count(*), coalesce(sum(length(body)), 0), min(enqueued_at) FROM events"
    ).fetchone()
    by_reason = {
        reason or "not tried": count
        for reason, count in conn.execute(
            "SELECT last_error, count(*) FROM events GROUP BY last_error ORDER BY count(*) DESC"
        )
    }
    owners: dict[str, bool] = {}
    for (owner,) in conn.execute("SELECT owner FROM owners"):
        fd = _try_lock(_owner_lock(directory, owner))
        owners[owner] = fd is None
        if fd is not None:
            os.close(fd)  # looked, and left the file for whoever adopts the rows
    return OutboxSummary(events, size, oldest, by_reason, owners)


# --- the client's outbox: a writer thread --------------------------------------------------

_ADD, _SPILL, _DONE, _FAILED, _SYNC, _STOP = range(6)
Prepare = Callable[[Any], "tuple[str, bytes] | None"]
"""An event as the pipeline queued it -> its key and body, or `None` if it cannot be encoded."""


class Outbox:
    """A client's outbox: queued events written to disk by a thread of its own.

    Every method is cheap and thread-safe; none does disk I/O on the caller's
    thread, and none raises. When the directory or the disk fails, one WARNING
    says why and the outbox stops writing (`usable` is `False`): events are
    then delivered from memory only, and counted in `memory_only`.

    Args:
        path: The outbox directory; created when missing.
        max_events: Events the outbox may hold, all its clients together.
        max_bytes: Bytes of event bodies the outbox may hold, all clients together.
        max_age: Seconds after which an adopted event is dropped unsent (`expired`).
        prepare: Called on the writer thread for each added event: its key and body.
        room: How many adopted events the client can take now.
        recovered: Called on the writer thread with adopted events to deliver.
        expired: Called on the writer thread for each adopted event that expired.
        spilled: Called on the writer thread with spilled events read back, to
            queue; `False` when the client is closed and they stay on disk.
        lost: Called on the writer thread for a spilled event that could not be
            written, with the `DropReason` to count it under.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_events: int,
        max_bytes: int,
        max_age: float,
        prepare: Prepare,
        room: Callable[[], int],
        recovered: Callable[[list[PendingEvent]], None],
        expired: Callable[[PendingEvent], None],
        spilled: Callable[[list[PendingEvent]], bool],
        lost: Callable[[Any, str], None],
    ) -> None:
        self.path = Path(path)
        """The outbox directory."""
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._prepare = prepare
        self._room = room
        self._recovered = recovered
        self._expired = expired
        self._spilled = spilled
        self._lost = lost
        self._reset()
        _outboxes.add(self)

    def _reset(self) -> None:
        """A new client's state, or a forked child's: no thread, no connection, no lock yet."""
        self._ops: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._owner = ""
        self._owner_fd: int | None = None
        self._fds: set[int] = set()
        self._backlog: deque[int] = deque()
        # Rowids of this client's spilled events, oldest first, not yet read back.
        self._spill_backlog: deque[int] = deque()
        self._handing = False
        self._opened = threading.Event()
        self._next_adoption = 0.0
        self._stopped = False
        self.usable = True
        """`False` once the outbox could not be written: events stay in memory only."""
        self._rows = 0
        self._bytes = 0
        self._average = 0
        self._added = 0
        self._taken = 0
        self.persisted = 0
        """Events written to disk by this client."""
        self.memory_only = 0
        """Events this client accepted but could not write (the outbox had failed)."""
        self.kept = 0
        """This client's events left on disk when it closed, for the next start."""
        # Kept here rather than by the client's queue, which only adds to them: the
        # queue's object stays small enough for Python's fast attribute access.
        self.queued_back = 0
        """Events read back from disk that the client queued (`DeliveryStats.recovered`)."""
        self.left_queued = 0
        """Queued events the client left on disk when it closed (`DeliveryStats.kept`)."""
        # Spilled events: accepted (by the recording thread), then each read back,
        # lost or kept exactly once (by the writer, or by closing for `kept`).
        self.spills = 0
        self.spills_back = 0
        self.spills_lost = 0
        self.spills_kept = 0

    def __repr__(self) -> str:
        return f"<Outbox {str(self.path)!r}>"

    def start(self) -> None:
        """Start the writer thread, which opens the outbox and adopts what dead clients left."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fluxgate-outbox", daemon=True)
            self._thread.start()

    @property
    def backlog(self) -> int:
        """Adopted events still on disk, waiting for room in the client's queue."""
        return len(self._backlog)

    @property
    def spilled(self) -> int:
        """Spilled events accepted and not yet read back, lost or kept: on disk, or about to be."""
        return self.spills - self.spills_back - self.spills_lost - self.spills_kept

    @property
    def spilling(self) -> bool:
        """Whether spilled events wait: later events spill too, so that order is kept."""
        return self.spills != self.spills_back + self.spills_lost + self.spills_kept

    @property
    def caught_up(self) -> bool:
        """Whether the outbox is open and has handed over every event it adopted so far."""
        if self._stopped:
            return True  # closed: what it did not hand over stays on disk for the next start
        if not self._opened.is_set():
            return False
        if not self.usable:
            return True  # what it spilled stays on disk for the next start (`kept`)
        return not (self._backlog or self._spill_backlog or self._handing or self.spilling)

    def _full(self) -> bool:
        waiting = self._added - self._taken
        return self.usable and (
            self._rows + waiting >= self._max_events
            or self._bytes + (waiting + 1) * self._average > self._max_bytes
        )

    def add(self, item: object) -> bool:
        """Write `item` soon; `False` when the outbox is full (all its clients together)."""
        if self._full():
            return False
        self._added += 1
        self._ops.put((_ADD, item, time.time()))
        if self._thread is None:
            self.start()  # a forked child's first event
        return True

    def spill(self, item: object) -> bool:
        """Write `item` soon, to disk only, and hand it back through `spilled` when there is room.

        `False` when the outbox is full (all its clients together).
        """
        if self._full():
            return False
        self._added += 1
        self.spills += 1
        self._ops.put((_SPILL, item, time.time()))
        if self._thread is None:
            self.start()  # a forked child's first event
        return True

    def keep_spilled(self) -> int:
        """At close: count what is still spilled as kept on disk; how many that is."""
        left = self.spilled
        self.spills_kept += left
        return left

    def done(self, key: str) -> None:
        """The event with `key` was acknowledged or given up on: delete its row."""
        self._ops.put((_DONE, key))

    def failed(self, key: str, reason: str) -> None:
        """An attempt at the event with `key` failed for `reason`; it will be retried."""
        self._ops.put((_FAILED, key, reason))

    def sync(self) -> concurrent.futures.Future[None]:
        """A future set once everything added so far is written (or found unwritable)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._thread is None or not self._thread.is_alive():
            future.set_result(None)
        else:
            self._ops.put((_SYNC, future))
        return future

    def close_nowait(self) -> None:
        """Ask the writer to write what is waiting and release ownership, without waiting."""
        if self._thread is not None and not self._stopped:
            self._stopped = True
            self._ops.put((_STOP, concurrent.futures.Future()))

    async def aclose(self, timeout: float) -> None:
        """Write what is waiting, count what is kept, release ownership; at most `timeout` s."""
        if self._thread is None or self._stopped:
            return
        self._stopped = True
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ops.put((_STOP, future))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wrap_future(future)
        except TimeoutError:
            log.warning("FluxGate: the outbox did not finish writing within %ss", timeout)

    # --- on the writer thread ---

    def _run(self) -> None:
        try:
            self._open()
        except (OSError, sqlite3.Error) as exc:
            self._give_up(exc)
        except Exception as exc:  # a bug must cost the outbox, not the app
            log.exception("FluxGate: unexpected error opening the outbox")
            self._give_up(exc)
        finally:
            self._opened.set()
        while True:
            waiting = self._backlog or self._spill_backlog
            timeout = _BACKLOG_POLL_SECONDS if waiting else _ADOPT_EVERY_SECONDS
            batch: list[tuple[Any, ...]] = []
            with contextlib.suppress(queue.Empty):
                batch.append(self._ops.get(timeout=timeout))
                while len(batch) < _MAX_BATCH:
                    batch.append(self._ops.get_nowait())
            stopping = any(op[0] == _STOP for op in batch)
            try:
                self._write(batch)
                if self.usable and not stopping:
                    self._housekeeping()
            except (OSError, sqlite3.Error) as exc:
                self._give_up(exc)
            except Exception as exc:  # a bug must cost the outbox, not the app
                log.exception("FluxGate: unexpected error in the outbox")
                self._give_up(exc)
            if stopping:
                with contextlib.suppress(OSError, sqlite3.Error):
                    self._close()  # nothing left to do if writing the batch closed it already
                return

    def _open(self) -> None:
        self._owner, self._owner_fd = claim_owner(self.path)
        self._conn = open_database(self.path, self._fds)
        register_owner(self._conn, self._owner)
        self._read_totals()
        self._adopt()

    def _give_up(self, exc: BaseException) -> None:
        if not self.usable:
            return
        self.usable = False
        log.warning(
            "FluxGate: the outbox at %s cannot be written (%s); events are kept in memory "
            "only, and lost if the process dies, until the client is started again",
            self.path,
            exc,
        )

    def _read_totals(self) -> None:
        assert self._conn is not None
        self._rows, self._bytes = self._conn.execute("SELECT events, bytes FROM totals").fetchone()
        if self._rows:
            self._average = self._bytes // self._rows

    def _write(self, batch: list[tuple[Any, ...]]) -> None:  # noqa: PLR0912, PLR0915 - one branch per kind of op
        """Apply `batch` in one transaction; close after it if it holds the stop request."""
        adds: dict[str, list[Any]] = {}
        spills: list[tuple[list[Any], Any]] = []
        removes: list[str] = []
        failures: list[tuple[str, str]] = []
        waiters: list[concurrent.futures.Future[None]] = []
        stop = None
        added = 0
        for op in batch:
            kind = op[0]
            if kind == _ADD:
                self._taken += 1
                added += 1
                if not self.usable:
                    continue  # nothing to write it to: counted below
                prepared = self._prepare(op[1])
                if prepared is not None:
                    key, body = prepared
                    adds[key] = [key, self._owner, body, op[2], 0, None]
            elif kind == _SPILL:
                self._taken += 1
                prepared = self._prepare(op[1]) if self.usable else None
                if prepared is None:
                    why = DropReason.INVALID_EVENT if self.usable else DropReason.QUEUE_FULL
                    self._lose(op[1], why)
                else:
                    key, body = prepared
                    spills.append(([key, self._owner, body, op[2], 0, None], op[1]))
            elif kind == _DONE:
                # Acknowledged before it was written: it never needs to be.
                if adds.pop(op[1], None) is None:
                    removes.append(op[1])
            elif kind == _FAILED:
                row = adds.get(op[1])
                if row is None:
                    failures.append((op[2], op[1]))
                else:
                    row[4] += 1
                    row[5] = op[2]
            elif kind == _SYNC:
                waiters.append(op[1])
            else:
                stop = op[1]
        try:
            # Every event accepted while the outbox cannot be written counts, even one
            # acknowledged before its turn: it was never safe from a crash.
            if not self.usable:
                self.memory_only += added
            elif adds or spills or removes or failures:
                self._persist(list(adds.values()), spills, removes, failures, added)
            if stop is not None:
                self._close()
        finally:
            for waiter in (*waiters, *([stop] if stop is not None else [])):
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    waiter.set_result(None)

    def _lose(self, item: object, reason: str) -> None:
        """A spilled event neither in memory nor on disk: refused after all, for `reason`."""
        self.spills_lost += 1
        self._lost(item, reason)

    def _persist(
        self,
        adds: list[list[Any]],
        spills: list[tuple[list[Any], Any]],
        removes: list[str],
        failures: list[tuple[str, str]],
        added: int,
    ) -> None:
        try:
            rowids = self._commit(adds, spills, removes, failures)
        except (OSError, sqlite3.Error) as exc:
            self.memory_only += added
            self._give_up(exc)
            for _, item in spills:
                self._lose(item, DropReason.QUEUE_FULL)
        else:
            self.persisted += len(adds) + len(rowids)
            self._spill_backlog.extend(rowids)

    def _commit(
        self,
        adds: list[list[Any]],
        spills: list[tuple[list[Any], Any]],
        removes: list[str],
        failures: list[tuple[str, str]],
    ) -> list[int]:
        """Write one transaction; the rowids of the spilled events written, in order."""
        conn = self._conn
        assert conn is not None
        rowids: list[int] = []
        duplicates: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if adds:
                # OR IGNORE: a caller's key given twice names one request, stored once.
                conn.executemany(
                    "INSERT OR IGNORE INTO events "
                    "(key, owner, body, enqueued_at, attempts, last_error) VALUES (?,?,?,?,?,?)",
                    adds,
                )
            for row, item in spills:
                # One at a time, for the rowid by which it is read back.
                written = conn.execute(
                    "INSERT OR IGNORE INTO events "
                    "(key, owner, body, enqueued_at, attempts, last_error) VALUES (?,?,?,?,?,?)"
                    " RETURNING rowid",
                    row,
                ).fetchone()
                if written is None:
                    duplicates.append(item)  # a caller's key already waiting: no row of its own
                else:
                    rowids.append(written[0])
            if removes:
                conn.executemany("DELETE FROM events WHERE key = ?", ((k,) for k in removes))
            if failures:
                conn.executemany(
                    "UPDATE events SET attempts = attempts + 1, last_error = ? WHERE key = ?",
                    failures,
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._read_totals()
        for item in duplicates:
            self._lose(item, DropReason.QUEUE_FULL)
        return rowids

    def _housekeeping(self) -> None:
        if time.monotonic() >= self._next_adoption:
            self._adopt()
        if self._backlog or self._spill_backlog:
            self._hand_over()

    def _adopt(self) -> None:
        assert self._conn is not None
        self._next_adoption = time.monotonic() + _ADOPT_EVERY_SECONDS
        adopted = adopt_dead_owners(self._conn, self.path, self._owner, self._fds)
        if adopted:
            log.info(
                "FluxGate: outbox %s: delivering %d event(s) left by a client that ended",
                self.path,
                len(adopted),
            )
            self._backlog.extend(adopted)
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the client as many adopted, then spilled, events as it has room for."""
        assert self._conn is not None
        room = min(self._room(), _PAGE)
        if room <= 0:
            return
        self._handing = True
        try:
            adopted = min(room, len(self._backlog))
            if adopted:
                self._hand_over_page([self._backlog.popleft() for _ in range(adopted)])
            spilled = min(room - adopted, len(self._spill_backlog))
            if spilled:
                self._hand_back_spilled([self._spill_backlog.popleft() for _ in range(spilled)])
        finally:
            self._handing = False

    def _hand_back_spilled(self, rowids: list[int]) -> None:
        """Read spilled events back for the client's queue; they do not expire, as queued ones."""
        assert self._conn is not None
        events = [pending for _, pending in read_events(self._conn, rowids)]
        if len(events) < len(rowids):  # pragma: no cover - a caller's key given twice
            # Its twin, under the same key, was delivered and deleted the row.
            self.spills_lost += len(rowids) - len(events)
        if events and self._spilled(events):
            self.spills_back += len(events)

    def _hand_over_page(self, rowids: list[int]) -> None:
        assert self._conn is not None
        cutoff = time.time() - self._max_age
        fresh: list[PendingEvent] = []
        stale: list[PendingEvent] = []
        for _, pending in read_events(self._conn, rowids):
            (fresh if pending.enqueued_at >= cutoff else stale).append(pending)
        if stale:
            delete_events(self._conn, [pending.key for pending in stale])
            self._read_totals()
            log.warning(
                "FluxGate: outbox %s: %d event(s) older than %ss dropped unsent (expired)",
                self.path,
                len(stale),
                self._max_age,
            )
            for pending in stale:
                self._expired(pending)
        if fresh:
            self._recovered(fresh)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self.usable:
            with contextlib.suppress(sqlite3.Error):
                self.kept = conn.execute(
                    "SELECT count(*) FROM events WHERE owner = ?", (self._owner,)
                ).fetchone()[0]
        self._spill_backlog.clear()  # on disk, for the next start: `keep_spilled` counts them
        if self._owner_fd is not None:
            release_owner(self.path, self._owner, self._owner_fd, conn if self.usable else None)
            self._owner_fd = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


# Every live outbox, for the fork and exit hooks below.
_outboxes: weakref.WeakSet[Outbox] = weakref.WeakSet()
# Connections a forked child inherited: never used, closed nor collected, because
# closing one could checkpoint and delete the parent's WAL file under it.
_inherited: list[object] = []


def _after_fork_in_child() -> None:
    # The child is a new client: the parent's thread does not exist here, and its
    # connection and locks stay the parent's. Closing our copies of the lock fds
    # leaves the parent's locks held (flock belongs to the parent's open file).
    for outbox in list(_outboxes):
        _inherited.append(outbox._conn)
        for fd in {*outbox._fds, *([outbox._owner_fd] if outbox._owner_fd is not None else [])}:
            with contextlib.suppress(OSError):
                os.close(fd)
        outbox._reset()  # its writer starts with the child's first event


def _write_at_exit() -> None:
    # Daemon threads stop dead at exit: give each writer a moment to commit what
    # the program queued last, which the next start then delivers.
    deadline = time.monotonic() + _EXIT_SECONDS
    for outbox in list(_outboxes):
        with contextlib.suppress(concurrent.futures.TimeoutError):
            outbox.sync().result(timeout=max(0.0, deadline - time.monotonic()))


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system has it
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_write_at_exit)
