"""Events in one SQLite file, written by one thread with group commit.

Every database call runs on the store's own thread, so the event loop never
waits on SQLite. Writes queue up while the thread commits the previous batch,
and the next batch commits them together: one fsync covers many requests, and
each request is answered only after its batch is on disk.

Before each batch the thread checks that the file it has open is still the
one at its path, and writable: a database deleted or made read-only while the
collector runs would otherwise swallow acknowledged events into a file no one
will ever read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from .._models import CreateAiEventResponse
from ._store import (
    COLUMNS,
    GROUPS,
    STOP,
    Batch,
    EventPage,
    EventRecord,
    EventStore,
    Handover,
    StoreUnavailableError,
    decode_cursor,
    encode_cursor,
    listed_event,
    settle,
    summary_query,
    summary_rows,
    take_batch,
)
from ._usage import SQLITE, Usage, UsageWindow, read_usage

__all__ = ["SQLiteEventStore", "connect_readonly", "summarise"]

log = logging.getLogger("fluxgate_async.collector")

T = TypeVar("T")

MIGRATIONS: Final = (
    (
        """CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            idempotency_key TEXT UNIQUE,
            created_at TEXT NOT NULL,
            provider TEXT,
            model TEXT,
            feature TEXT,
            user_id TEXT,
            status TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER,
            latency_ms REAL,
            cost REAL,
            price_status TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS events_created_at ON events (created_at, seq)",
    ),
)
"""The schema, one tuple of statements per version; `PRAGMA user_version` says which ran.

Version 1 is the schema of the first collector release, written with
`IF NOT EXISTS` so that files made before versioning adopt it unchanged.
"""

BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another process's lock on the file before it fails."""


def _migrate(conn: sqlite3.Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock: two collectors starting at once migrate in turn.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            msg = (
                f"the database has schema version {version}, newer than this collector's "
                f"{len(MIGRATIONS)}: upgrade fluxgate-async"
            )
            raise sqlite3.DatabaseError(msg)
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the request is answered, even across power loss.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Open an existing SQLite store for reading, as `fluxgate-async report` does.

    Raises:
        FileNotFoundError: There is no database at `path`.
        sqlite3.Error: The file is not a collector database.
    """
    target = Path(path)
    if not target.is_file():
        msg = f"no collector database at {str(path)!r}"
        raise FileNotFoundError(msg)
    conn = sqlite3.connect(target.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("SELECT 1 FROM events LIMIT 1")
    except BaseException:
        conn.close()
        raise
    return conn


_ROWS_PER_INSERT = 1000
"""Rows in one INSERT statement: 15,000 parameters, under SQLite's limit of 32,766."""


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> set[str]:
    """Insert `rows` unless their key is stored; return the ids of those inserted."""
    stored: set[str] = set()
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        values = ", ".join([_ROW_PLACEHOLDERS] * len(chunk))
        cursor = conn.execute(
            f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES {values}"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            [value for row in chunk for value in row],
        )
        stored.update(row[0] for row in cursor)
    return stored


_ROW_PLACEHOLDERS: Final = "(" + ", ".join("?" * len(COLUMNS)) + ")"


def _commit(conn: sqlite3.Connection, records: list[EventRecord]) -> list[CreateAiEventResponse]:
    """Insert `records` in the open transaction; the answer for each (see `Batch`)."""
    batch = Batch(records)
    taken = batch.taken(_insert(conn, batch.rows()))
    existing: dict[str, CreateAiEventResponse] = {}
    for start in range(0, len(taken), _ROWS_PER_INSERT):
        keys = taken[start : start + _ROWS_PER_INSERT]
        rows = conn.execute(
            "SELECT idempotency_key, id, created_at, cost, price_status FROM events"
            f" WHERE idempotency_key IN ({', '.join('?' * len(keys))})",
            keys,
        )
        existing.update(
            (
                row[0],
                CreateAiEventResponse(id=row[1], created_at=row[2], cost=row[3], status=row[4]),
            )
            for row in rows
        )
    return batch.answers(existing)


def _page(
    conn: sqlite3.Connection, *, since: str | None, cursor: str | None, limit: int
) -> EventPage:
    # One writer commits in `seq` order, so a reader never sees a later seq before an
    # earlier one: "after the last seq seen" skips and repeats nothing.
    (after,) = decode_cursor(cursor, 1) if cursor else (0,)
    rows = conn.execute(
        "SELECT seq, id, created_at, cost, price_status, body FROM events"
        " WHERE seq > ? AND created_at >= ? ORDER BY seq LIMIT ?",
        (after, since or "", limit + 1),
    ).fetchall()
    shown = rows[:limit]
    last = shown[-1][0] if shown else after
    return EventPage(
        [listed_event(*row[1:]) for row in shown], encode_cursor((last,)), len(rows) > limit
    )


def summarise(
    conn: sqlite3.Connection, group_by: str, *, since: str | None = None
) -> list[dict[str, Any]]:
    """Calls, tokens and cost per value of `group_by` (one of `GROUPS`), costliest first.

    See `EventStore.summary`.

    Raises:
        KeyError: `group_by` is not one of `GROUPS`.
    """
    rows = conn.execute(*summary_query(group_by, SQLITE, since=since)).fetchall()
    return summary_rows(group_by, rows)


@attrs.frozen
class _Read:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


@attrs.frozen
class _Write:
    record: EventRecord
    future: asyncio.Future[CreateAiEventResponse]


@attrs.frozen
class _FileIdentity:
    device: int
    inode: int


def _identity(path: Path) -> _FileIdentity:
    info = path.stat()
    return _FileIdentity(info.st_dev, info.st_ino)


class SQLiteEventStore(EventStore):
    """Events in a SQLite file in WAL mode, and the one thread that uses it.

    Use it with `async with SQLiteEventStore(path) as store:`; `add` returns
    only once the event is committed to disk.

    Args:
        path: The SQLite file; created with its table when missing.
        readonly: Open an existing file for reading only (and fail if there is none).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self._thread: threading.Thread | None = None
        self.path = Path(path)
        """The database file."""
        self._readonly = readonly
        self._jobs: queue.SimpleQueue[list[_Read | _Write] | object] = queue.SimpleQueue()
        self._handover: Handover[_Read | _Write] = Handover(self._jobs.put)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._opened: _FileIdentity | None = None

    def __repr__(self) -> str:
        return f"<SQLiteEventStore {str(self.path)!r}>"

    async def open(self) -> None:
        """Start the writer thread and create or migrate the table if needed.

        Raises:
            StoreUnavailableError: The database cannot be opened.
        """
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="fluxgate-collector-db", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise

    async def add(self, record: EventRecord) -> CreateAiEventResponse:
        """See `EventStore.add`."""
        if self._readonly:
            msg = "this store was opened read-only"
            raise RuntimeError(msg)
        future: asyncio.Future[CreateAiEventResponse] = self._new_future()
        self._handover.submit(future.get_loop(), _Write(record, future))
        return await future

    async def page(
        self, *, since: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> EventPage:
        """See `EventStore.page`."""
        if cursor:
            decode_cursor(cursor, 1)  # a bad cursor is the caller's mistake, not the database's
        page: EventPage = await self._submit(
            lambda conn: _page(conn, since=since, cursor=cursor, limit=limit)
        )
        return page

    async def summary(self, group_by: str, *, since: str | None = None) -> list[dict[str, Any]]:
        """See `EventStore.summary`."""
        if group_by not in GROUPS:
            raise KeyError(group_by)
        rows: list[dict[str, Any]] = await self._submit(
            lambda conn: summarise(conn, group_by, since=since)
        )
        return rows

    async def usage(self, window: UsageWindow) -> Usage:
        """See `EventStore.usage`.

        Read on a connection of its own, in a worker thread: WAL lets it read
        while the writer thread goes on committing.
        """
        if self._thread is None or self._closed:
            msg = "the event store is not open"
            raise RuntimeError(msg)
        return await asyncio.to_thread(self._read_usage, window)

    def _read_usage(self, window: UsageWindow) -> Usage:
        try:
            conn = connect_readonly(self.path)
        except (sqlite3.Error, OSError) as exc:
            msg = f"the database could not be read: {exc}"
            raise StoreUnavailableError(msg) from None
        try:
            return read_usage(conn, window)
        except sqlite3.Error as exc:
            msg = f"the database could not be read: {exc}"
            raise StoreUnavailableError(msg) from None
        finally:
            conn.close()

    async def check(self) -> None:
        """See `EventStore.check`: the file is still at its path, and writable."""
        if self._thread is None or self._closed:
            msg = "the database is not open"
            raise StoreUnavailableError(msg)
        # A stat and an access check: microseconds, fine on the event loop.
        self._check_file()

    def _check_file(self) -> None:
        try:
            current = _identity(self.path)
        except OSError:
            msg = f"the database file {str(self.path)!r} has disappeared"
            raise StoreUnavailableError(msg) from None
        if current != self._opened:
            msg = f"the database file {str(self.path)!r} was replaced while open"
            raise StoreUnavailableError(msg)
        if not os.access(self.path, os.W_OK):
            msg = f"the database file {str(self.path)!r} is not writable"
            raise StoreUnavailableError(msg)

    def _new_future(self) -> asyncio.Future[Any]:
        if self._thread is None or self._closed:
            msg = "the event store is not open"
            raise RuntimeError(msg)
        assert self._loop is not None
        return self._loop.create_future()

    async def _submit(self, run: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = self._new_future()
        self._handover.submit(future.get_loop(), _Read(run, future))
        return await future

    async def aclose(self) -> None:
        """Finish the queued work, then close the database; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._handover.hand_over()  # jobs submitted in this very turn of the loop
            self._jobs.put(STOP)
            await asyncio.to_thread(thread.join)

    def _settle(self, futures: list[asyncio.Future[Any]], outcomes: list[object]) -> None:
        # One wake-up of the loop per batch, not per event.
        assert self._loop is not None
        # A loop already closed has no one left waiting for the answer.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle, futures, outcomes)

    def _open_connection(self) -> sqlite3.Connection:
        if self._readonly:
            try:
                return connect_readonly(self.path)
            except FileNotFoundError as exc:
                raise StoreUnavailableError(str(exc)) from None
            except sqlite3.Error as exc:
                msg = f"cannot read {str(self.path)!r} as a collector database: {exc}"
                raise StoreUnavailableError(msg) from None
        try:
            conn = _connect(self.path)
            self._opened = _identity(self.path)
        except (sqlite3.Error, OSError) as exc:
            msg = f"cannot open database {str(self.path)!r}: {exc}"
            raise StoreUnavailableError(msg) from None
        return conn

    def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._open_connection()
        except StoreUnavailableError as exc:
            self._settle([ready], [exc])
            return
        self._settle([ready], [None])
        try:
            for batch in self._batches():
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _batches(self) -> Iterator[list[_Read | _Write]]:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is STOP:
                return
            assert isinstance(first, list)
            # Everything that queued up during the last commit joins this one.
            batch, stop = take_batch(first, self._jobs.get_nowait, queue.Empty)
            yield batch

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Read | _Write]) -> None:
        writes = [job for job in batch if isinstance(job, _Write)]
        reads = [job for job in batch if isinstance(job, _Read)]
        outcomes: list[object] = []
        if writes:
            try:
                self._check_file()
                conn.execute("BEGIN IMMEDIATE")
                outcomes.extend(_commit(conn, [job.record for job in writes]))
                conn.execute("COMMIT")
            except Exception as exc:  # the thread must survive, and every request get its answer
                log.error("collector: commit failed, %d events not stored: %s", len(writes), exc)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                error = (
                    exc
                    if isinstance(exc, StoreUnavailableError)
                    else StoreUnavailableError(f"the database refused the write: {exc}")
                )
                outcomes = [error] * len(writes)
        outcomes.extend(_read(conn, job) for job in reads)
        futures = [job.future for job in writes] + [job.future for job in reads]
        self._settle(futures, outcomes)


def _read(conn: sqlite3.Connection, job: _Read) -> object:
    try:
        return job.run(conn)
    except sqlite3.Error as exc:
        return StoreUnavailableError(f"the database could not be read: {exc}")
    except Exception as exc:  # the thread must survive and the request must get its answer
        return exc
