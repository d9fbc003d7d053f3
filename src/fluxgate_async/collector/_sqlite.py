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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from .._models import CreateAiEventResponse
from ._store import (
    GROUPS,
    EventPage,
    EventRecord,
    EventStore,
    StoreUnavailableError,
    decode_cursor,
    encode_cursor,
    listed_event,
    summary_rows,
)
from ._usage import Usage, UsageWindow, read_usage

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

_GROUP_SQL: Final = {
    "model": "model",
    "provider": "provider",
    "feature": "feature",
    "user": "user_id",
    "day": "substr(created_at, 1, 10)",
}

BATCH_LIMIT = 512
"""Writes committed in one transaction, at most, unless one turn of the event loop submitted
more (they are handed over together)."""
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


def _answer(row: Sequence[Any]) -> CreateAiEventResponse:
    return CreateAiEventResponse(id=row[0], created_at=row[1], cost=row[2], status=row[3])


def _insert(conn: sqlite3.Connection, record: EventRecord) -> CreateAiEventResponse:
    answer = record.answer()
    inserted = conn.execute(
        "INSERT INTO events (id, idempotency_key, created_at, provider, model, feature, user_id,"
        " status, input_tokens, output_tokens, cached_tokens, latency_ms, cost, price_status, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (idempotency_key) DO NOTHING",
        (
            answer.id,
            record.idempotency_key,
            answer.created_at,
            record.provider,
            record.model,
            record.feature,
            record.user_id,
            record.status,
            record.input_tokens,
            record.output_tokens,
            record.cached_tokens,
            record.latency_ms,
            record.cost,
            record.price_status,
            record.body,
        ),
    ).rowcount
    if inserted:
        return answer
    # A known key: the answer first given for it.
    row = conn.execute(
        "SELECT id, created_at, cost, price_status FROM events WHERE idempotency_key = ?",
        (record.idempotency_key,),
    ).fetchone()
    return _answer(row)


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
    expr = _GROUP_SQL[group_by]
    rows = conn.execute(
        f"SELECT {expr} AS grp, COUNT(*), SUM(input_tokens), SUM(output_tokens),"
        " SUM(cost), SUM(cost IS NULL), SUM(status != 'SUCCESS')"
        " FROM events WHERE created_at >= ? GROUP BY grp",
        (since or "",),
    ).fetchall()
    return summary_rows(group_by, rows)


_STOP: Final = object()


@attrs.frozen
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    write: bool


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
        self._jobs: queue.SimpleQueue[list[_Job] | object] = queue.SimpleQueue()
        # Jobs submitted during one turn of the event loop, handed over together: waking
        # the thread once per turn rather than once per request keeps it off the GIL.
        self._pending: list[_Job] = []
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
        answer: CreateAiEventResponse = await self._submit(
            lambda conn: _insert(conn, record), write=True
        )
        return answer

    async def page(
        self, *, since: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> EventPage:
        """See `EventStore.page`."""
        if cursor:
            decode_cursor(cursor, 1)  # a bad cursor is the caller's mistake, not the database's
        page: EventPage = await self._submit(
            lambda conn: _page(conn, since=since, cursor=cursor, limit=limit), write=False
        )
        return page

    async def summary(self, group_by: str, *, since: str | None = None) -> list[dict[str, Any]]:
        """See `EventStore.summary`."""
        if group_by not in GROUPS:
            raise KeyError(group_by)
        rows: list[dict[str, Any]] = await self._submit(
            lambda conn: summarise(conn, group_by, since=since), write=False
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

    async def _submit(self, run: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        if self._thread is None or self._closed:
            msg = "the event store is not open"
            raise RuntimeError(msg)
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._hand_over)
        self._pending.append(_Job(run, future, write))
        return await future

    def _hand_over(self) -> None:
        self._jobs.put(self._pending)
        self._pending = []

    async def aclose(self) -> None:
        """Finish the queued work, then close the database; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._hand_over()  # jobs submitted in this very turn of the loop
            self._jobs.put(_STOP)
            await asyncio.to_thread(thread.join)

    def _settle(
        self, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    ) -> None:
        # One wake-up of the loop per batch, not per event.
        def settle() -> None:
            for future, result, error in outcomes:
                if future.done():  # the awaiting request was cancelled
                    continue
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

        assert self._loop is not None
        # A loop already closed has no one left waiting for the answer.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle)

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
            self._settle([(ready, None, exc)])
            return
        self._settle([(ready, None, None)])
        try:
            for batch in self._batches():
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _batches(self) -> Iterator[list[_Job]]:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is _STOP:
                return
            assert isinstance(first, list)
            batch = list(first)
            # Everything that queued up during the last commit joins this one.
            while len(batch) < BATCH_LIMIT:
                try:
                    jobs = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if jobs is _STOP:
                    stop = True
                    break
                assert isinstance(jobs, list)
                batch.extend(jobs)
            yield batch

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        writes = [job for job in batch if job.write]
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        if writes:
            try:
                self._check_file()
                conn.execute("BEGIN IMMEDIATE")
                for job in writes:
                    outcomes.append((job.future, *_attempt(conn, job)))
                conn.execute("COMMIT")
            except (sqlite3.Error, StoreUnavailableError) as exc:
                log.error("collector: commit failed, %d events not stored: %s", len(writes), exc)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                error = (
                    exc
                    if isinstance(exc, StoreUnavailableError)
                    else StoreUnavailableError(f"the database refused the write: {exc}")
                )
                outcomes = [(job.future, None, error) for job in writes]
        outcomes.extend((job.future, *_read(conn, job)) for job in batch if not job.write)
        self._settle(outcomes)


def _attempt(conn: sqlite3.Connection, job: _Job) -> tuple[Any, BaseException | None]:
    try:
        return job.run(conn), None
    except sqlite3.Error:
        raise  # fails the whole batch, which is rolled back
    except Exception as exc:  # the thread must survive and the request must get its answer
        return None, exc


def _read(conn: sqlite3.Connection, job: _Job) -> tuple[Any, BaseException | None]:
    try:
        return job.run(conn), None
    except sqlite3.Error as exc:
        return None, StoreUnavailableError(f"the database could not be read: {exc}")
    except Exception as exc:  # the thread must survive and the request must get its answer
        return None, exc
