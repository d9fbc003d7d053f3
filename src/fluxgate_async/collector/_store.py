"""Durable storage of events in SQLite, written by one thread with group commit.

Every database call runs on the store's own thread, so the event loop never
waits on SQLite. Writes queue up while the thread commits the previous batch,
and the next batch commits them together: one fsync covers many requests, and
each request is answered only after its batch is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from .._models import CreateAiEventResponse
from .._wire import answer_to_json

__all__ = [
    "GROUPS",
    "EventRecord",
    "EventStore",
    "connect_readonly",
    "list_events",
    "normalise_since",
    "summarise",
]

log = logging.getLogger("fluxgate_async.collector")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
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
);
CREATE INDEX IF NOT EXISTS events_created_at ON events (created_at, seq);
"""

GROUPS: Final = {
    "model": "model",
    "provider": "provider",
    "feature": "feature",
    "user": "user_id",
    "day": "substr(created_at, 1, 10)",
}
"""`group_by` values and the SQL expression each groups on (never user input)."""

BATCH_LIMIT = 512
"""Most writes committed in one transaction."""
BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another process's lock on the file before it fails."""


@attrs.frozen
class EventRecord:
    """One accepted event, ready to store: its columns and its wire JSON."""

    idempotency_key: str | None
    provider: str | None
    model: str | None
    feature: str | None
    user_id: str | None
    status: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int | None
    latency_ms: float | None
    cost: float | None
    price_status: str
    body: str


def _now() -> str:
    # Fixed width UTC, so text order is time order in SQL.
    return datetime.now(UTC).isoformat(timespec="microseconds")


def normalise_since(value: str) -> str:
    """Return an ISO 8601 date or datetime as the store's UTC timestamp text.

    A value without a time zone is read as UTC.

    Raises:
        ValueError: `value` is not ISO 8601.
    """
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        msg = f"since must be an ISO 8601 date or datetime, got {value!r}"
        raise ValueError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the request is answered, even across power loss.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Open an existing store for reading, as `fluxgate-async report` does.

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
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("SELECT 1 FROM events LIMIT 1")
    except BaseException:
        conn.close()
        raise
    return conn


def _answer(row: Sequence[Any]) -> CreateAiEventResponse:
    return CreateAiEventResponse(id=row[0], created_at=row[1], cost=row[2], status=row[3])


def _insert(conn: sqlite3.Connection, record: EventRecord) -> CreateAiEventResponse:
    if record.idempotency_key is not None:
        row = conn.execute(
            "SELECT id, created_at, cost, price_status FROM events WHERE idempotency_key = ?",
            (record.idempotency_key,),
        ).fetchone()
        if row is not None:
            return _answer(row)
    answer = CreateAiEventResponse(
        id=f"evt_{uuid.uuid4().hex}",
        created_at=_now(),
        cost=record.cost,
        status=record.price_status,
    )
    conn.execute(
        "INSERT INTO events (id, idempotency_key, created_at, provider, model, feature, user_id,"
        " status, input_tokens, output_tokens, cached_tokens, latency_ms, cost, price_status, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    )
    return answer


def list_events(
    conn: sqlite3.Connection, *, since: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Stored events created at or after `since` (normalised), oldest first, at most `limit`.

    Each is the answer given for it plus the event itself, as the client sent it.
    """
    rows = conn.execute(
        "SELECT id, created_at, cost, price_status, body FROM events"
        " WHERE created_at >= ? ORDER BY created_at, seq LIMIT ?",
        (since or "", limit),
    ).fetchall()
    return [{**answer_to_json(_answer(row)), "event": json.loads(row[4])} for row in rows]


def summarise(
    conn: sqlite3.Connection, group_by: str, *, since: str | None = None
) -> list[dict[str, Any]]:
    """Calls, tokens and cost per value of `group_by` (a key of `GROUPS`), costliest first.

    `cost` sums the priced events (`None` when none is); `unpriced` counts
    those whose model is unknown, `errors` those whose status is not `SUCCESS`.

    Raises:
        KeyError: `group_by` is not a key of `GROUPS`.
    """
    expr = GROUPS[group_by]
    rows = conn.execute(
        f"SELECT {expr} AS grp, COUNT(*), SUM(input_tokens), SUM(output_tokens),"
        " SUM(cost), SUM(cost IS NULL), SUM(status != 'SUCCESS')"
        " FROM events WHERE created_at >= ? GROUP BY grp ORDER BY TOTAL(cost) DESC, grp",
        (since or "",),
    ).fetchall()
    return [
        {
            group_by: row[0],
            "calls": row[1],
            "inputTokens": row[2],
            "outputTokens": row[3],
            "tokens": row[2] + row[3],
            "cost": None if row[4] is None else round(row[4], 9),
            "unpriced": row[5],
            "errors": row[6],
        }
        for row in rows
    ]


_STOP: Final = object()


@attrs.frozen
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    write: bool


class EventStore:
    """The collector's database: a SQLite file in WAL mode and the one thread that uses it.

    Use it with `async with EventStore(path) as store:`; `add` returns only once
    the event is committed to disk.

    Args:
        path: The SQLite file; created with its table when missing.
    """

    def __init__(self, path: str | Path) -> None:
        self._thread: threading.Thread | None = None
        self.path = Path(path)
        """The database file."""
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<EventStore {str(self.path)!r}>"

    async def open(self) -> None:
        """Start the writer thread and create the table if needed.

        Raises:
            sqlite3.Error, OSError: The database cannot be opened.
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
        """Store `record` unless its idempotency key is known; return the answer for it.

        Returns once the batch holding it is committed.
        """
        answer: CreateAiEventResponse = await self._submit(
            lambda conn: _insert(conn, record), write=True
        )
        return answer

    async def events(self, *, since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """See `list_events`."""
        rows: list[dict[str, Any]] = await self._submit(
            lambda conn: list_events(conn, since=since, limit=limit), write=False
        )
        return rows

    async def summary(self, group_by: str, *, since: str | None = None) -> list[dict[str, Any]]:
        """See `summarise`."""
        rows: list[dict[str, Any]] = await self._submit(
            lambda conn: summarise(conn, group_by, since=since), write=False
        )
        return rows

    async def _submit(self, run: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        if self._thread is None or self._closed:
            msg = "the event store is not open"
            raise RuntimeError(msg)
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(run, future, write))
        return await future

    async def aclose(self) -> None:
        """Finish the queued work, then close the database; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(_STOP)
            await asyncio.to_thread(thread.join)

    async def __aenter__(self) -> EventStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

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

    def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = _connect(self.path)
        except (sqlite3.Error, OSError) as exc:
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
            batch = [first]
            # Everything that queued up during the last commit joins this one.
            while len(batch) < BATCH_LIMIT:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                batch.append(job)
            yield [job for job in batch if isinstance(job, _Job)]

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        writes = [job for job in batch if job.write]
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        if writes:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for job in writes:
                    outcomes.append((job.future, *_attempt(conn, job)))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                log.error("collector: commit failed, %d events not stored: %s", len(writes), exc)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                outcomes = [(job.future, None, exc) for job in writes]
        outcomes.extend((job.future, *_attempt(conn, job)) for job in batch if not job.write)
        self._settle(outcomes)


def _attempt(conn: sqlite3.Connection, job: _Job) -> tuple[Any, BaseException | None]:
    try:
        return job.run(conn), None
    except Exception as exc:  # the thread must survive and the request must get its answer
        return None, exc
