"""What every collector database does, whichever it is: the `EventStore` interface.

Two backends implement it, one module each: SQLite (`_sqlite.py`, the embedded
default, one file on one machine) and PostgreSQL (`_postgres.py`, shared by
several collector processes). Both promise the same: `add` returns only once
the event is committed, an `Idempotency-Key` is stored once however many
instances receive it, and listings and summaries answer the same, byte for byte.

What keeps those promises alike lives here, once: how writes reach a backend's
writer (`Handover`, `take_batch`), how a batch is committed and answered
(`Batch`, `settle`) and the summary query; the backends add their SQL dialect
and driver.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import json
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from .._models import CreateAiEventResponse
from .._wire import answer_to_json
from ._usage import MEASURES, Dialect, Query, Usage, UsageWindow

__all__ = [
    "BATCH_LIMIT",
    "COLUMNS",
    "GROUPS",
    "POSTGRES_SCHEMES",
    "STOP",
    "Batch",
    "EventPage",
    "EventRecord",
    "EventStore",
    "Handover",
    "StoreUnavailableError",
    "describe_db",
    "normalise_since",
    "open_store",
    "settle",
    "stored_answer",
    "summary_query",
    "take_batch",
]

GROUPS: Final = ("model", "provider", "feature", "user", "day")
"""The values `summary(group_by=...)` accepts."""

POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
"""A `db` starting with one of these is a PostgreSQL URL; anything else is a SQLite file."""


class StoreUnavailableError(Exception):
    """The database cannot be reached, read or written right now.

    The collector answers 503 (which clients retry) and `/healthz` turns
    unhealthy; it recovers by itself once the database is back.
    """


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

    def answer(self, created_at: str) -> CreateAiEventResponse:
        """A fresh answer for this record, stored at `created_at`: a new random id."""
        # 128 random bits, as a UUID4 has, without building a UUID: a few µs an event.
        return CreateAiEventResponse(
            id=f"evt_{os.urandom(16).hex()}",
            created_at=created_at,
            cost=self.cost,
            status=self.price_status,
        )


@attrs.frozen
class EventPage:
    """One page of `EventStore.page`: events oldest first, and where the next page starts.

    Attributes:
        events: Each is the answer given for the event plus the event as the client sent it.
        cursor: Pass it back as `cursor` to get the events after these; opaque.
        has_more: More events were already stored when this page was read.
    """

    events: list[dict[str, Any]]
    cursor: str
    has_more: bool


def now() -> str:
    """The store's timestamp text: fixed-width UTC, so text order is time order."""
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


_CURSOR_PREFIX = "c1."


def encode_cursor(position: Sequence[int]) -> str:
    """The opaque text of a position in a store's listing order."""
    text = ",".join(str(n) for n in position)
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> tuple[int, ...]:
    """The position `encode_cursor` made `cursor` from.

    Raises:
        ValueError: `cursor` was not given out by a store of this kind.
    """
    invalid = ValueError("cursor is not one this collector gave out; start again without it")
    if not cursor.startswith(_CURSOR_PREFIX) or len(cursor) > 200:
        raise invalid
    body = cursor[len(_CURSOR_PREFIX) :]
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
        position = tuple(int(part) for part in text.split(","))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid from None
    if len(position) != size or any(n < 0 or n >= 2**63 for n in position):
        raise invalid
    return position


def stored_answer(row: Sequence[Any]) -> CreateAiEventResponse:
    """The answer a store gave for an event, from its `(id, created_at, cost, price_status)`."""
    return CreateAiEventResponse(id=row[0], created_at=row[1], cost=row[2], status=row[3])


def listed_event(
    event_id: str, created_at: str, cost: float | None, price_status: str, body: str
) -> dict[str, Any]:
    """One event as listings show it: the answer given for it, plus the event."""
    answer = stored_answer((event_id, created_at, cost, price_status))
    return {**answer_to_json(answer), "event": json.loads(body)}


def summary_rows(group_by: str, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Shape `(group, calls, input, output, cost, unpriced, errors)` rows, costliest first.

    The order is set here rather than in SQL so that every backend (and every
    collation a PostgreSQL database may have) gives the same: cost descending,
    then no group first, then the group's text by code point.
    """
    shaped = [
        {
            group_by: group,
            "calls": int(calls),
            "inputTokens": int(input_tokens),
            "outputTokens": int(output_tokens),
            "tokens": int(input_tokens) + int(output_tokens),
            "cost": None if cost is None else round(cost, 9),
            "unpriced": int(unpriced),
            "errors": int(errors),
        }
        for group, calls, input_tokens, output_tokens, cost, unpriced, errors in rows
    ]
    shaped.sort(key=lambda r: (-(r["cost"] or 0.0), r[group_by] is not None, r[group_by] or ""))
    return shaped


_GROUP_SQL: Final = {
    "model": "model",
    "provider": "provider",
    "feature": "feature",
    "user": "user_id",
    "day": "substr(created_at, 1, 10)",
}


def summary_query(group_by: str, dialect: Dialect, *, since: str | None) -> Query:
    """The query behind `EventStore.summary`, in `dialect`: one row a group, in no order.

    Its rows go to `summary_rows` once their group is read back with `dialect.from_column`
    (except `day`, which is not a stored dimension).

    Raises:
        KeyError: `group_by` is not one of `GROUPS`.
    """
    expr = _GROUP_SQL[group_by]
    return dialect.query(
        f"SELECT {expr} AS grp, {MEASURES} FROM events WHERE created_at >= ? GROUP BY grp",
        (since or "",),
    )


def describe_db(db: str | Path) -> str:
    """`db` as it may be shown in a log line: a URL's password, given either way, as `***`."""
    text = str(db)
    if not text.startswith(POSTGRES_SCHEMES):
        return text
    parts = urlsplit(text)
    if parts.password is not None:
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        parts = parts._replace(netloc=f"{user}:***@{netloc[2]}")
    # asyncpg also takes the password (or a file holding it) as a query parameter.
    query = [
        (name, "***" if name in _SECRET_PARAMETERS else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


_SECRET_PARAMETERS = frozenset({"password", "passfile"})


BATCH_LIMIT = 512
"""Most writes a store commits in one transaction, unless one turn of the event loop
submitted more (they are handed over together)."""

COLUMNS: Final = (
    "id",
    "idempotency_key",
    "created_at",
    "provider",
    "model",
    "feature",
    "user_id",
    "status",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "latency_ms",
    "cost",
    "price_status",
    "body",
)
"""The events table's columns that an insert fills, in the order `Batch.rows` gives them."""


class Batch:
    """Events committed in one transaction, and the answer each request gets.

    Every backend commits a batch the same way: insert `rows()`, skipping keys
    already stored; read back the answers first given for `taken()` keys, which
    another writer committed first; then `answers()` says what each request gets.
    A key given twice within the batch is inserted once, its twins get its answer.

    Args:
        records: The events, in the order their requests wait.
    """

    def __init__(self, records: Sequence[EventRecord]) -> None:
        self.records = records
        # One commit stores them all: one time for all of them.
        created_at = now()
        self._fresh = [record.answer(created_at) for record in records]
        self._first_with_key: dict[str, int] = {}
        self._inserted: list[int] = []
        for index, record in enumerate(records):
            key = record.idempotency_key
            if key is None:
                self._inserted.append(index)
            elif key not in self._first_with_key:
                self._first_with_key[key] = index
                self._inserted.append(index)

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows to insert, one per key (and per event without one), in `COLUMNS` order."""
        return [self._row(index) for index in self._inserted]

    def _row(self, index: int) -> tuple[Any, ...]:
        answer, record = self._fresh[index], self.records[index]
        return (
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
        )

    def taken(self, stored_ids: Collection[str]) -> list[str]:
        """The keys whose row is not among `stored_ids`: another writer stored them first."""
        return [
            key
            for key, index in self._first_with_key.items()
            if self._fresh[index].id not in stored_ids
        ]

    def answers(self, existing: Mapping[str, CreateAiEventResponse]) -> list[CreateAiEventResponse]:
        """Each request's answer, given `existing`: the answers stored for `taken()` keys."""
        answers = list(self._fresh)
        for index, record in enumerate(self.records):
            key = record.idempotency_key
            if key is not None:
                answers[index] = existing.get(key, self._fresh[self._first_with_key[key]])
        return answers


T = TypeVar("T")

STOP: Final = object()
"""Put on a writer's queue behind the last write: the writer ends once it is done with those."""


class Handover(Generic[T]):
    """Writes submitted during one turn of the event loop, handed to a writer's queue together.

    Waking the writer once a turn rather than once a request keeps the
    hand-over's cost off each event.

    Args:
        put: Puts a list of writes on the writer's queue, without waiting.
    """

    def __init__(self, put: Callable[[list[T]], object]) -> None:
        self._put = put
        self._pending: list[T] = []

    def submit(self, loop: asyncio.AbstractEventLoop, item: T) -> None:
        """Queue `item`; it is handed over at the end of this turn of `loop`."""
        if not self._pending:
            loop.call_soon(self.hand_over)
        self._pending.append(item)

    def hand_over(self) -> None:
        """Hand over what was submitted, now; also what a store does as it closes."""
        if self._pending:
            self._put(self._pending)
            self._pending = []


def take_batch(
    first: list[T], get_nowait: Callable[[], object], empty: type[Exception]
) -> tuple[list[T], bool]:
    """`first`, with what a writer's queue holds already added, up to `BATCH_LIMIT`.

    Args:
        first: What the writer was waiting for: one hand-over.
        get_nowait: Takes the next hand-over (a list) or `STOP` from the queue.
        empty: What `get_nowait` raises when the queue is empty.

    Returns:
        The batch, and whether `STOP` was taken: the writer ends after this batch.
    """
    batch = list(first)
    while len(batch) < BATCH_LIMIT:
        try:
            more = get_nowait()
        except empty:
            break
        if more is STOP:
            return batch, True
        assert isinstance(more, list)
        batch.extend(more)
    return batch, False


def settle(futures: Iterable[asyncio.Future[Any]], outcomes: Iterable[object]) -> None:
    """Give each waiting request its outcome: a result, or an exception to raise.

    A request cancelled meanwhile is passed over: no one is left to tell.
    """
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class EventStore(abc.ABC):
    """The collector's database: events in, pages and summaries out.

    Use one with `async with open_store(db) as store:`. Every method may raise
    `StoreUnavailableError` when the database cannot be used right now.
    """

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema unless opened read-only.

        Raises:
            StoreUnavailableError: The database cannot be opened.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Finish the queued writes, then disconnect; calling it again does nothing."""

    @abc.abstractmethod
    async def add(self, record: EventRecord) -> CreateAiEventResponse:
        """Store `record` unless its idempotency key is known; return the answer for it.

        Returns once the batch holding it is committed. A known key gets the
        answer first given for it, whichever collector process stored it.
        """

    @abc.abstractmethod
    async def page(
        self, *, since: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> EventPage:
        """Up to `limit` events created at or after `since` (normalised), after `cursor`.

        Paging with the returned cursors visits every event exactly once, even
        while events are being added.

        Raises:
            ValueError: `cursor` was not given out by this kind of store.
        """

    async def events(self, *, since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The first `limit` events created at or after `since`, oldest first."""
        return (await self.page(since=since, limit=limit)).events

    @abc.abstractmethod
    async def summary(self, group_by: str, *, since: str | None = None) -> list[dict[str, Any]]:
        """Calls, tokens and cost per value of `group_by` (one of `GROUPS`), costliest first.

        `cost` sums the priced events (`None` when none is); `unpriced` counts
        those whose model is unknown, `errors` those whose status is not `SUCCESS`.

        Raises:
            KeyError: `group_by` is not one of `GROUPS`.
        """

    @abc.abstractmethod
    async def usage(self, window: UsageWindow) -> Usage:
        """The aggregates the dashboard shows for `window`: `plan_usage`, run in one snapshot.

        A long read never holds up `add`.
        """

    @abc.abstractmethod
    async def check(self) -> None:
        """Return if the database can be written now.

        Raises:
            StoreUnavailableError: It cannot; the message says why.
        """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def open_store(db: str | Path, *, readonly: bool = False) -> EventStore:
    """The store for `db`: a `postgresql://` URL, or a SQLite file path. Not yet opened.

    Args:
        db: `postgresql://user@host:port/dbname` (needs the `postgres` extra), or a file.
        readonly: Never create or migrate anything, refuse writes: what reports use.
    """
    if str(db).startswith(POSTGRES_SCHEMES):
        from ._postgres import PostgresEventStore  # noqa: PLC0415 - it imports this module

        return PostgresEventStore(str(db), readonly=readonly)
    from ._sqlite import SQLiteEventStore  # noqa: PLC0415 - it imports this module

    return SQLiteEventStore(db, readonly=readonly)
