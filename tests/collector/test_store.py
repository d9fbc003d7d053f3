"""`EventStore` and the queries: durable, batched, and readable from another connection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from fluxgate_async.collector import EventStore, connect_readonly, summarise
from fluxgate_async.collector._store import EventRecord, list_events, normalise_since


def _record(key: str | None = None, model: str = "gpt-4o") -> EventRecord:
    return EventRecord(
        idempotency_key=key,
        provider="openai",
        model=model,
        feature="chat",
        user_id="u",
        status="SUCCESS",
        input_tokens=10,
        output_tokens=5,
        cached_tokens=None,
        latency_ms=12.5,
        cost=0.01,
        price_status="SUCCESS",
        body='{"usage":{"inputTokens":10,"outputTokens":5}}',
    )


async def test_added_events_are_readable_by_another_connection(db: Path) -> None:
    """Once `add` returns, a separate reader sees the event: it is committed."""
    async with EventStore(db) as store:
        answer = await store.add(_record())
        conn = connect_readonly(db)
        try:
            rows = list_events(conn)
        finally:
            conn.close()
    assert [row["id"] for row in rows] == [answer.id]
    assert rows[0]["event"] == {"usage": {"inputTokens": 10, "outputTokens": 5}}


async def test_same_idempotency_key_in_one_batch_is_stored_once(db: Path) -> None:
    """Two concurrent adds with one key, committed together, store one event, same answer."""
    async with EventStore(db) as store:
        first, second, other = await asyncio.gather(
            store.add(_record("k")), store.add(_record("k")), store.add(_record("j"))
        )
        assert first == second
        assert other != first
        assert len(await store.events()) == 2


async def test_a_cancelled_request_still_gets_its_event_stored(db: Path) -> None:
    """Cancelling the waiting request does not undo or break the write in flight."""
    async with EventStore(db) as store:
        task = asyncio.create_task(store.add(_record("cancelled")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await store.add(_record("after"))).id
    conn = connect_readonly(db)
    try:
        keys = {row[0] for row in conn.execute("SELECT idempotency_key FROM events")}
    finally:
        conn.close()
    assert keys == {"cancelled", "after"}


async def test_a_failing_read_raises_to_its_caller_only(db: Path) -> None:
    """A query error reaches the awaiting caller; the store keeps working."""
    async with EventStore(db) as store:
        with pytest.raises(KeyError):
            await store.summary("colour")
        assert await store.summary("model") == []


async def test_open_failure_is_raised(tmp_path: Path) -> None:
    """A database that cannot be created makes `open` raise sqlite3.Error."""
    store = EventStore(tmp_path / "missing-dir" / "x.sqlite")
    with pytest.raises(sqlite3.OperationalError):
        await store.open()


async def test_use_after_close_is_a_clear_error(db: Path) -> None:
    """`aclose` is idempotent; using a closed store raises RuntimeError."""
    store = EventStore(db)
    assert repr(store) == f"<EventStore {str(db)!r}>"
    await store.open()
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="not open"):
        await store.add(_record())


def test_connect_readonly_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    """A missing file or a non-collector file gives a clear error."""
    with pytest.raises(FileNotFoundError, match="no collector database"):
        connect_readonly(tmp_path / "nope.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).close()
    with pytest.raises(sqlite3.OperationalError):
        connect_readonly(other)


async def test_summarise_by_every_group(db: Path) -> None:
    """Each group_by value groups on its own column."""
    async with EventStore(db) as store:
        await store.add(_record(model="a"))
        await store.add(_record(model="b"))
    conn = connect_readonly(db)
    try:
        assert [r["model"] for r in summarise(conn, "model")] == ["a", "b"]
        assert [r["provider"] for r in summarise(conn, "provider")] == ["openai"]
        assert [r["feature"] for r in summarise(conn, "feature")] == ["chat"]
        assert [r["user"] for r in summarise(conn, "user")] == ["u"]
        assert summarise(conn, "model", since="2999-01-01") == []
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-05-05", "2026-05-05T00:00:00.000000+00:00"),
        ("2026-05-05T10:00:00+02:00", "2026-05-05T08:00:00.000000+00:00"),
    ],
)
def test_normalise_since(value: str, expected: str) -> None:
    """Dates and datetimes in any zone become the store's UTC text."""
    assert normalise_since(value) == expected


async def test_close_finishes_the_queued_writes(db: Path) -> None:
    """`aclose` right after many adds were queued still commits and answers every one."""
    store = EventStore(db)
    await store.open()
    adds = [asyncio.create_task(store.add(_record())) for _ in range(200)]
    await asyncio.sleep(0)
    await store.aclose()
    answers = await asyncio.gather(*adds)
    assert len({a.id for a in answers}) == 200


async def test_closing_a_store_never_opened_does_nothing(db: Path) -> None:
    """`aclose` before `open` is harmless, and the store stays unusable."""
    store = EventStore(db)
    await store.aclose()
    with pytest.raises(RuntimeError, match="not open"):
        await store.events()


async def test_a_locked_database_fails_the_batch_then_recovers(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the write lock, adds fail with an error; then they work."""
    monkeypatch.setattr("fluxgate_async.collector._store.BUSY_TIMEOUT_MS", 50)
    async with EventStore(db) as store:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await store.add(_record("while-locked"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        await store.add(_record("after"))
        assert [e["id"] for e in await store.events()] != []
        assert len(await store.events()) == 1
