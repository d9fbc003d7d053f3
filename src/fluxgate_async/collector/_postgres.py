r"""Events in PostgreSQL through asyncpg, shared by several collector processes.

Writes queue up and a few writer tasks commit them in batches, one
statement each: a request is answered only once its batch has committed.
Idempotency holds across processes because the database enforces it: a unique
key with `ON CONFLICT DO NOTHING`, then the stored answer is read back, so every
instance answers a repeated key with the same id.

PostgreSQL `text` cannot hold the NUL character, which events may carry. The
grouped columns are therefore stored as JSON text (`"gpt-4o"`, NUL escaped as
`\\u0000`) and decoded when read; the event itself is stored as the JSON the
client sent, which escapes it already.

Listings page in `(txid, seq)` order, and only over transactions that have
ended (below the reader's snapshot `xmin`): concurrent writers commit out of
`seq` order, but a transaction older than every running one can add no more
rows, so a cursor never skips an event committed late nor repeats one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .._extras import require_extra
from .._models import CreateAiEventResponse
from ._store import (
    COLUMNS,
    STOP,
    Batch,
    EventPage,
    EventRecord,
    EventStore,
    Handover,
    StoreUnavailableError,
    decode_cursor,
    describe_db,
    encode_cursor,
    listed_event,
    settle,
    stored_answer,
    summary_query,
    summary_rows,
    take_batch,
)
from ._usage import Dialect, Usage, UsageWindow, plan_usage

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "POOL_MAX_SIZE",
    "WRITERS",
    "PostgresEventStore",
]

log = logging.getLogger("fluxgate_async.collector")

POOL_MIN_SIZE = 1
"""Connections kept open when idle."""
POOL_MAX_SIZE = 10
"""Most connections one collector process opens."""
WRITERS = 4
"""Batches committing at once: while some commit, the next one fills up."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection, or to wait for a free one in the pool."""
COMMAND_TIMEOUT = 10.0
"""Seconds one statement may take before the request gets 503."""
HEALTH_TIMEOUT = 2.0
"""Seconds `/healthz` waits for `SELECT 1`."""
CLOSE_TIMEOUT = 10.0
"""Seconds `aclose` waits for connections to finish before cutting them."""

SCHEMA_LOCK: Final = 0x666C7578_6761_7465 & (2**63 - 1)
"""The advisory lock key held while the schema is created or migrated."""

MIGRATIONS: Final = (
    (
        """CREATE TABLE fluxgate_events (
            seq BIGSERIAL PRIMARY KEY,
            txid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
            id TEXT NOT NULL UNIQUE,
            idempotency_key TEXT UNIQUE,
            created_at TEXT NOT NULL,
            provider TEXT,
            model TEXT,
            feature TEXT,
            user_id TEXT,
            status TEXT NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cached_tokens BIGINT,
            latency_ms DOUBLE PRECISION,
            cost DOUBLE PRECISION,
            price_status TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX fluxgate_events_position ON fluxgate_events (txid, seq)",
        "CREATE INDEX fluxgate_events_created_at ON fluxgate_events (created_at)",
    ),
)
"""The schema, one tuple of statements per version; `fluxgate_schema` records which ran."""

_INSERT: Final = f"""
INSERT INTO fluxgate_events ({", ".join(COLUMNS)})
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::float8[], $13::float8[],
    $14::text[], $15::text[])
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""

_Write = tuple[EventRecord, "asyncio.Future[CreateAiEventResponse]"]
"""An event waiting to be committed, and the future its request awaits."""

_JSON_COLUMNS: Final = frozenset({"idempotency_key", "provider", "model", "feature", "user_id"})
"""The columns stored as JSON text: those that may hold NUL."""

_PAGE: Final = """
SELECT txid, seq, id, created_at, cost, price_status, body FROM fluxgate_events
WHERE (txid, seq) > ($1, $2) AND created_at >= $3
    AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY txid, seq LIMIT $4
"""


def _json_text(value: str | None) -> str | None:
    return None if value is None else json.dumps(value)


def _from_json_text(value: str | None) -> str | None:
    return None if value is None else str(json.loads(value))


_DIALECT: Final = Dialect(
    table="fluxgate_events",
    placeholder=lambda n: f"${n}",
    to_column=json.dumps,
    from_column=_from_json_text,
)
"""How the usage queries read this schema: `$n` parameters, dimensions as JSON text."""


def _import_asyncpg() -> Any:
    return require_extra("asyncpg", extra="postgres", needed_by="a postgresql:// database")


class PostgresEventStore(EventStore):
    """Events in a PostgreSQL database, through a pool of asyncpg connections.

    Several collector processes may share one database: each creates or
    migrates the schema under an advisory lock, and the database keeps each
    idempotency key once.

    Args:
        dsn: `postgresql://user[:password]@host[:port]/dbname[?options]`.
        readonly: Never create or migrate anything, refuse writes: what reports use.

    Raises:
        MissingExtraError: asyncpg is not installed.
    """

    def __init__(self, dsn: str, *, readonly: bool = False) -> None:
        self._writers: list[asyncio.Task[None]] = []
        self._asyncpg = _import_asyncpg()
        self._errors: tuple[type[BaseException], ...] = (
            self._asyncpg.PostgresError,
            self._asyncpg.InterfaceError,
            OSError,
            TimeoutError,
        )
        self._dsn = dsn
        self._readonly = readonly
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[list[_Write] | object] = asyncio.Queue()
        self._handover: Handover[_Write] = Handover(self._queue.put_nowait)
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresEventStore {describe_db(self._dsn)!r}>"

    async def open(self) -> None:
        """Connect the pool, create or migrate the schema, start the writers.

        Raises:
            StoreUnavailableError: The database cannot be reached or its schema is unknown.
        """
        try:
            self._pool = await self._asyncpg.create_pool(
                self._dsn,
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                reset=_no_session_state,
            )
            async with self._connection() as conn:
                if self._readonly:
                    await self._check_schema(conn)
                else:
                    await self._migrate(conn)
        except self._errors as exc:
            await self._close_pool()
            msg = f"cannot open database {describe_db(self._dsn)!r}: {exc}"
            raise StoreUnavailableError(msg) from None
        except BaseException:
            await self._close_pool()
            raise
        if not self._readonly:
            self._writers = [
                asyncio.create_task(self._write_batches(), name=f"fluxgate-collector-writer-{n}")
                for n in range(WRITERS)
            ]

    @contextlib.asynccontextmanager
    async def _connection(self) -> Any:
        # Not `_closed`: while closing, the writers still commit what was queued.
        if self._pool is None:
            msg = "the event store is not open"
            raise RuntimeError(msg)
        async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
            yield conn

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            # Held until commit: a second collector starting now waits, then finds it done.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS fluxgate_schema (version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            version = await self._version(conn)
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO fluxgate_schema (version) VALUES ($1)", number)
                log.info("collector: database schema migrated to version %d", number)

    async def _check_schema(self, conn: asyncpg.Connection) -> None:
        if await conn.fetchval("SELECT to_regclass('fluxgate_schema')") is None:
            msg = f"no collector tables in {describe_db(self._dsn)!r}"
            raise StoreUnavailableError(msg)
        await self._version(conn)

    async def _version(self, conn: asyncpg.Connection) -> int:
        version: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM fluxgate_schema")
        if version > len(MIGRATIONS):
            msg = (
                f"the database has schema version {version}, newer than this collector's "
                f"{len(MIGRATIONS)}: upgrade fluxgate-async"
            )
            raise StoreUnavailableError(msg)
        return version

    async def add(self, record: EventRecord) -> CreateAiEventResponse:
        """See `EventStore.add`."""
        if self._readonly:
            msg = "this store was opened read-only"
            raise RuntimeError(msg)
        if self._pool is None or self._closed:
            msg = "the event store is not open"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CreateAiEventResponse] = loop.create_future()
        self._handover.submit(loop, (record, future))
        return await future

    async def page(
        self, *, since: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> EventPage:
        """See `EventStore.page`."""
        after = decode_cursor(cursor, 2) if cursor else (0, 0)
        async with self._failures("read"), self._connection() as conn:
            rows = await conn.fetch(_PAGE, after[0], after[1], since or "", limit + 1)
        shown = rows[:limit]
        last = (shown[-1][0], shown[-1][1]) if shown else after
        return EventPage(
            [listed_event(*row[2:]) for row in shown], encode_cursor(last), len(rows) > limit
        )

    async def summary(self, group_by: str, *, since: str | None = None) -> list[dict[str, Any]]:
        """See `EventStore.summary`."""
        query = summary_query(group_by, _DIALECT, since=since)
        async with self._failures("read"), self._connection() as conn:
            rows = await conn.fetch(query[0], *query[1])
        decode = _from_json_text if group_by != "day" else (lambda value: value)
        return summary_rows(group_by, [(decode(row[0]), *row[1:]) for row in rows])

    async def usage(self, window: UsageWindow) -> Usage:
        """See `EventStore.usage`: the plan's queries in one read-only snapshot."""
        plan = plan_usage(window, _DIALECT)
        async with (
            self._failures("read"),
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            query = next(plan)
            while True:
                rows = await conn.fetch(query[0], *query[1])
                try:
                    query = plan.send(rows)
                except StopIteration as done:
                    usage: Usage = done.value
                    return usage

    async def check(self) -> None:
        """See `EventStore.check`: a connection answers `SELECT 1`."""
        if self._pool is None or self._closed:
            msg = "the database is not open"
            raise StoreUnavailableError(msg)
        async with (
            self._failures("reached"),
            asyncio.timeout(HEALTH_TIMEOUT),
            self._connection() as conn,
        ):
            await conn.fetchval("SELECT 1", timeout=HEALTH_TIMEOUT)

    @contextlib.asynccontextmanager
    async def _failures(self, what: str) -> Any:
        try:
            yield
        except self._errors as exc:
            msg = f"the database could not be {what}: {type(exc).__name__}: {exc}"
            raise StoreUnavailableError(msg) from None

    async def _write_batches(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is STOP:  # `aclose`: everything queued before it is done
                return
            assert isinstance(first, list)
            batch, stop = take_batch(first, self._queue.get_nowait, asyncio.QueueEmpty)
            try:
                outcomes: Sequence[object] = await self._commit([record for record, _ in batch])
            except StoreUnavailableError as exc:
                log.error("collector: commit failed, %d events not stored: %s", len(batch), exc)
                outcomes = [exc] * len(batch)
            except Exception as exc:  # the writer must survive, and every request get its answer
                log.exception("collector: commit failed, %d events not stored", len(batch))
                outcomes = [
                    StoreUnavailableError(f"the events could not be stored: {exc!r}")
                ] * len(batch)
            settle([future for _, future in batch], outcomes)

    async def _commit(self, records: list[EventRecord]) -> list[CreateAiEventResponse]:
        batch = Batch(records)
        columns = [
            [_json_text(value) for value in values] if name in _JSON_COLUMNS else list(values)
            for name, values in zip(COLUMNS, zip(*batch.rows(), strict=True), strict=True)
        ]
        async with self._failures("written"), self._connection() as conn:
            # One statement outside a transaction block commits before its rows come back
            # (asyncpg answers at ReadyForQuery, after the implicit commit): one round trip.
            stored = {row[0] for row in await conn.fetch(_INSERT, *columns)}
            # Another instance stored these keys first: answer what it answered.
            taken = batch.taken(stored)
            rows = []
            if taken:
                rows = await conn.fetch(
                    "SELECT idempotency_key, id, created_at, cost, price_status"
                    " FROM fluxgate_events WHERE idempotency_key = ANY($1::text[])",
                    [_json_text(key) for key in taken],
                )
        return batch.answers({json.loads(row[0]): stored_answer(row[1:]) for row in rows})

    async def aclose(self) -> None:
        """Commit the queued events, then close the pool; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        # One stop mark per writer, behind every queued event: each writer ends once
        # what was queued before it is committed or failed, within the timeouts.
        self._handover.hand_over()  # events submitted in this very turn of the loop
        for _ in self._writers:
            self._queue.put_nowait(STOP)
        await asyncio.gather(*self._writers)
        await self._close_pool()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            pool.terminate()


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing to undo, so no reset query (a round trip) per batch.

    The store keeps no state in a session: no LISTEN, no session advisory lock,
    no prepared statement by name; asyncpg still rolls back an open transaction.
    """
