"""The event stores, SQLite and PostgreSQL alike: durable, batched, idempotent, paged."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fluxgate_async.collector import (
    EventStore,
    SQLiteEventStore,
    StoreUnavailableError,
    connect_readonly,
    open_store,
    summarise,
)
from fluxgate_async.collector._store import (
    EventRecord,
    decode_cursor,
    describe_db,
    encode_cursor,
    normalise_since,
)

from .conftest import free_port
from .postgres import PostgresCluster


def _record(key: str | None = None, model: str | None = "gpt-4o", **fields: Any) -> EventRecord:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "provider": "openai",
        "model": model,
        "feature": "chat",
        "user_id": "u",
        "status": "SUCCESS",
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": None,
        "latency_ms": 12.5,
        "cost": 0.01,
        "price_status": "SUCCESS",
        "body": '{"usage":{"inputTokens":10,"outputTokens":5}}',
    }
    return EventRecord(**(values | fields))


async def test_added_events_are_readable_by_another_store(database: str) -> None:
    """Once `add` returns, a second store on the same database sees the event: it is committed."""
    async with open_store(database) as store:
        answer = await store.add(_record())
        async with open_store(database, readonly=True) as reader:
            rows = await reader.events()
    assert [row["id"] for row in rows] == [answer.id]
    assert rows[0] == {
        "id": answer.id,
        "createdAt": answer.created_at,
        "cost": 0.01,
        "status": "SUCCESS",
        "event": {"usage": {"inputTokens": 10, "outputTokens": 5}},
    }


async def test_same_idempotency_key_in_one_batch_is_stored_once(database: str) -> None:
    """Concurrent adds with one key, committed together, store one event and get one answer."""
    async with open_store(database) as store:
        first, second, other, third = await asyncio.gather(
            store.add(_record("k")),
            store.add(_record("k")),
            store.add(_record("j")),
            store.add(_record("k")),
        )
        assert first == second == third
        assert other != first
        assert len(await store.events()) == 2


async def test_two_stores_on_one_database_answer_a_key_with_one_id(database: str) -> None:
    """Two collector stores sharing a database, sent the same keys at once, store each key once."""
    keys = [f"key-{n}" for n in range(200)]
    async with open_store(database) as one, open_store(database) as two:
        answers = await asyncio.gather(
            *(one.add(_record(key)) for key in keys), *(two.add(_record(key)) for key in keys)
        )
        stored = await one.page(limit=1000)
    assert answers[:200] == answers[200:]
    assert len({a.id for a in answers}) == 200
    assert sorted(e["id"] for e in stored.events) == sorted(a.id for a in answers[:200])


async def test_a_cancelled_request_still_gets_its_event_stored(database: str) -> None:
    """Cancelling the waiting request does not undo or break the write in flight."""
    async with open_store(database) as store:
        task = asyncio.create_task(store.add(_record("cancelled")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await store.add(_record("after"))
        again = await store.add(_record("cancelled"))
        assert {e["id"] for e in await store.events()} == {after.id, again.id}


async def test_a_failing_read_raises_to_its_caller_only(database: str) -> None:
    """An unknown group raises KeyError to its caller; the store keeps working."""
    async with open_store(database) as store:
        with pytest.raises(KeyError):
            await store.summary("colour")
        assert await store.summary("model") == []


async def test_open_failure_is_one_clear_error(tmp_path: Path) -> None:
    """A database that cannot be created or reached makes `open` raise StoreUnavailableError."""
    with pytest.raises(StoreUnavailableError, match="cannot open database"):
        await open_store(tmp_path / "missing-dir" / "x.sqlite").open()
    nowhere = f"postgresql://someone:hunter2@127.0.0.1:{free_port()}/db"
    with pytest.raises(StoreUnavailableError, match="cannot open database") as raised:
        await open_store(nowhere).open()
    assert "hunter2" not in str(raised.value)
    assert "someone:***@127.0.0.1" in str(raised.value)


async def test_use_after_close_is_a_clear_error(database: str) -> None:
    """`aclose` is idempotent; using a closed store raises RuntimeError."""
    store = open_store(database)
    assert repr(store).startswith(("<SQLiteEventStore ", "<PostgresEventStore "))
    await store.open()
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="not open"):
        await store.add(_record())
    with pytest.raises(StoreUnavailableError, match="not open"):
        await store.check()


async def test_a_read_only_store_refuses_writes(database: str) -> None:
    """A store opened read-only (as reports open it) reads, and refuses to write."""
    async with open_store(database):
        pass
    async with open_store(database, readonly=True) as reader:
        assert await reader.events() == []
        with pytest.raises(RuntimeError, match="read-only"):
            await reader.add(_record())


async def test_a_read_only_store_needs_an_existing_database(tmp_path: Path, pg_url: str) -> None:
    """Reading a missing file, a foreign file or a database with no collector tables fails."""
    with pytest.raises(StoreUnavailableError, match="no collector database"):
        await open_store(tmp_path / "nope.sqlite", readonly=True).open()
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).close()
    with pytest.raises(StoreUnavailableError, match="cannot read"):
        await open_store(other, readonly=True).open()
    with pytest.raises(StoreUnavailableError, match="no collector tables"):
        await open_store(pg_url, readonly=True).open()


async def test_summary_by_every_group(database: str) -> None:
    """Each group_by value groups on its own column; `since` filters by creation time."""
    async with open_store(database) as store:
        await store.add(_record(model="b"))
        await store.add(_record(model="a", cost=0.5))
        await store.add(_record(model=None, cost=None, price_status="UNKNOWN_MODEL"))
        await store.add(_record(model="c", status="ERROR"))
        by_model = await store.summary("model")
        assert [(r["model"], r["calls"], r["cost"]) for r in by_model] == [
            ("a", 1, 0.5),
            ("b", 1, 0.01),
            ("c", 1, 0.01),
            (None, 1, None),
        ]
        assert (by_model[2]["errors"], by_model[3]["unpriced"]) == (1, 1)
        assert [r["provider"] for r in await store.summary("provider")] == ["openai"]
        assert [r["feature"] for r in await store.summary("feature")] == ["chat"]
        assert [r["user"] for r in await store.summary("user")] == ["u"]
        (day,) = await store.summary("day")
        assert (len(day["day"]), day["calls"], day["tokens"]) == (10, 4, 60)
        assert await store.summary("model", since="2999-01-01") == []


async def test_awkward_text_is_stored_and_answered_the_same_by_both_backends(
    tmp_path: Path, pg_url: str
) -> None:
    """SQL-looking strings and NUL characters come back verbatim, the same from both backends."""
    evil = "x'); DROP TABLE events; --\x00after NUL"
    quote = "Robert\"'); DELETE FROM fluxgate_events WHERE ('1'='1"
    body = json.dumps({"usage": {"model": evil}, "metadata": {"note": "\x00\\0 ' OR 1=1 --"}})
    records = [
        _record("k\x00ey", model=evil, provider=quote, feature="\x00", user_id=evil, body=body),
        _record(model="\\u0000", feature="\\", user_id='"'),
        _record(model="é", cost=None, price_status="UNKNOWN_MODEL"),
    ]
    answers: dict[str, list[str]] = {}
    for name, db in [("sqlite", str(tmp_path / "events.sqlite")), ("postgresql", pg_url)]:
        async with open_store(db) as store:
            for record in records:
                await store.add(record)
            listed = await store.events()
            texts = [
                json.dumps(await store.summary(group)) for group in ("model", "provider", "feature")
            ]
            texts.append(json.dumps(await store.summary("user")))
            texts.append(json.dumps([{**e, "id": "", "createdAt": ""} for e in listed]))
            answers[name] = texts
    assert answers["sqlite"] == answers["postgresql"]
    assert evil in {row["model"] for row in json.loads(answers["sqlite"][0])}
    assert json.loads(answers["sqlite"][-1])[0]["event"] == json.loads(body)


async def test_paging_25000_events_while_they_are_added_returns_each_once(
    database: str,
) -> None:
    """Following cursors while two stores add 25,000 events visits every event exactly once."""
    total, chunk = 25_000, 500
    seen: list[str] = []
    async with open_store(database) as one, open_store(database) as two:
        added: list[str] = []

        async def add_all() -> None:
            for start in range(0, total, chunk):
                answers = await asyncio.gather(
                    *(
                        (one if n % 2 else two).add(_record(f"e{n}"))
                        for n in range(start, start + chunk)
                    )
                )
                added.extend(a.id for a in answers)

        adding = asyncio.create_task(add_all())
        cursor = None
        async with asyncio.timeout(300):
            for _ in range(10_000):  # bounded: far more pages than 25,000 events need
                page = await one.page(cursor=cursor, limit=700)
                seen.extend(e["id"] for e in page.events)
                cursor = page.cursor
                if adding.done() and not page.has_more and len(seen) >= total:
                    break
                if not page.events:
                    await asyncio.sleep(0.01)
            await adding
    assert len(seen) == total
    assert set(seen) == set(added)


async def test_a_page_continues_after_its_cursor(database: str) -> None:
    """Each page starts after the previous one's cursor; an empty page keeps its cursor."""
    async with open_store(database) as store:
        ids = [(await store.add(_record())).id for _ in range(5)]
        first = await store.page(limit=2)
        second = await store.page(cursor=first.cursor, limit=2)
        third = await store.page(cursor=second.cursor, limit=2)
        empty = await store.page(cursor=third.cursor, limit=2)
        assert [e["id"] for e in first.events + second.events + third.events] == ids
        assert (first.has_more, second.has_more, third.has_more) == (True, True, False)
        assert (empty.events, empty.cursor, empty.has_more) == ([], third.cursor, False)
        late = await store.add(_record())
        assert [e["id"] for e in (await store.page(cursor=empty.cursor)).events] == [late.id]
        with pytest.raises(ValueError, match="cursor is not one"):
            await store.page(cursor="c1.garbage!")


@pytest.mark.parametrize(
    "cursor", ["", "abc", "c1.", "c1.@@@", "c1.LTE", "c1.MSwy", "c1." + "A" * 300, "c1.eA"]
)
def test_a_cursor_not_given_out_is_refused(cursor: str) -> None:
    """Anything but a cursor the store gave out, for its own kind, is a ValueError."""
    with pytest.raises(ValueError, match="cursor is not one this collector gave out"):
        decode_cursor(cursor, 1)


def test_cursors_round_trip() -> None:
    """A position survives its opaque text."""
    assert decode_cursor(encode_cursor((12, 2**62)), 2) == (12, 2**62)


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


@pytest.mark.parametrize(
    ("db", "shown"),
    [
        ("events.sqlite", "events.sqlite"),
        ("postgresql://u@h:5432/d", "postgresql://u@h:5432/d"),
        (
            "postgresql://u:secret@h:5432/d?sslmode=require",
            "postgresql://u:***@h:5432/d?sslmode=require",
        ),
        ("postgres://u:p%40ss@h/d", "postgres://u:***@h/d"),
    ],
)
def test_database_urls_are_shown_without_their_password(db: str, shown: str) -> None:
    """A URL's password never reaches a log line or an error."""
    assert describe_db(db) == shown


async def test_close_finishes_the_queued_writes(database: str) -> None:
    """`aclose` right after many adds were queued still commits and answers every one."""
    store = open_store(database)
    await store.open()
    adds = [asyncio.create_task(store.add(_record())) for _ in range(200)]
    await asyncio.sleep(0)
    await store.aclose()
    answers = await asyncio.gather(*adds)
    assert len({a.id for a in answers}) == 200
    async with open_store(database, readonly=True) as reader:
        assert len(await reader.events(limit=1000)) == 200


async def test_closing_a_store_never_opened_does_nothing(database: str) -> None:
    """`aclose` before `open` is harmless, and the store stays unusable."""
    store = open_store(database)
    await store.aclose()
    with pytest.raises(RuntimeError, match="not open"):
        await store.add(_record())


async def test_two_stores_starting_at_once_create_the_schema_once(database: str) -> None:
    """Collectors starting together on a new database both start; the schema is made once."""
    stores = [open_store(database) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        await asyncio.gather(*(store.add(_record()) for store in stores))
        assert len(await stores[0].events()) == 4
    finally:
        await asyncio.gather(*(store.aclose() for store in stores))


async def test_a_newer_schema_is_refused(tmp_path: Path, pg_url: str) -> None:
    """A database migrated by a newer collector is refused, naming the versions."""
    db = tmp_path / "events.sqlite"
    async with open_store(db):
        pass
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreUnavailableError, match="schema version 99, newer"):
        await open_store(db).open()
    async with open_store(pg_url):
        pass
    pg = await asyncpg.connect(pg_url)
    try:
        await pg.execute("INSERT INTO fluxgate_schema (version) VALUES (99)")
    finally:
        await pg.close()
    with pytest.raises(StoreUnavailableError, match="schema version 99, newer"):
        await open_store(pg_url).open()


async def test_a_file_from_before_schema_versions_is_adopted(tmp_path: Path) -> None:
    """A database made by the first release (no schema version) opens and keeps its events."""
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " idempotency_key TEXT UNIQUE, created_at TEXT NOT NULL, provider TEXT, model TEXT,"
        " feature TEXT, user_id TEXT, status TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
        " output_tokens INTEGER NOT NULL, cached_tokens INTEGER, latency_ms REAL, cost REAL,"
        " price_status TEXT NOT NULL, body TEXT NOT NULL);"
        "INSERT INTO events VALUES (1, 'evt_old', NULL, '2026-01-01T00:00:00.000000+00:00',"
        " NULL, 'm', NULL, NULL, 'SUCCESS', 1, 2, NULL, NULL, NULL, 'UNKNOWN_MODEL', '{}');"
    )
    conn.close()
    async with open_store(db) as store:
        assert [e["id"] for e in await store.events()] == ["evt_old"]
        await store.add(_record())
    conn = connect_readonly(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert [r["model"] for r in summarise(conn, "model")] == ["gpt-4o", "m"]
    finally:
        conn.close()


async def test_a_locked_sqlite_database_fails_the_batch_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the write lock, adds fail as unavailable; then they work."""
    db = tmp_path / "events.sqlite"
    monkeypatch.setattr("fluxgate_async.collector._sqlite.BUSY_TIMEOUT_MS", 50)
    async with SQLiteEventStore(db) as store:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.add(_record("while-locked"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        await store.add(_record("after"))
        assert len(await store.events()) == 1


async def test_a_deleted_sqlite_file_is_unavailable_until_it_is_back(tmp_path: Path) -> None:
    """A file deleted while open: unhealthy, adds refused (not lost); restoring it heals."""
    db = tmp_path / "events.sqlite"
    aside = tmp_path / "aside.sqlite"
    async with open_store(db) as store:
        kept = await store.add(_record("kept"))
        await store.check()
        db.rename(aside)
        with pytest.raises(StoreUnavailableError, match="disappeared"):
            await store.check()
        with pytest.raises(StoreUnavailableError, match="disappeared"):
            await store.add(_record("refused"))
        aside.rename(db)
        await store.check()
        again = await store.add(_record("after"))
    async with open_store(db, readonly=True) as reader:
        assert [e["id"] for e in await reader.events()] == [kept.id, again.id]


async def test_a_replaced_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    """A different file put at the database's path is not written behind the operator's back."""
    db = tmp_path / "events.sqlite"
    async with open_store(db) as store:
        await store.add(_record())
        db.unlink()
        db.write_bytes(b"")
        with pytest.raises(StoreUnavailableError, match="replaced"):
            await store.add(_record())


async def test_an_unwritable_sqlite_file_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the collector may no longer write makes it refuse events instead of storing them."""
    db = tmp_path / "events.sqlite"
    # Root may write any file: ask the kernel as if the collector ran as an ordinary user.
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(path) == db and mode == os.W_OK:
            return bool(db.stat().st_mode & 0o200)
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    async with open_store(db) as store:
        db.chmod(0o444)
        with pytest.raises(StoreUnavailableError, match="not writable"):
            await store.add(_record())
        db.chmod(0o644)
        await store.add(_record())


@pytest.fixture
def own_postgres() -> Any:
    """A PostgreSQL server of the test's own, which the test may stop and start."""
    cluster = PostgresCluster(free_port(), in_memory=True, autovacuum=False)
    cluster.start()
    yield cluster
    cluster.stop("immediate")
    cluster.remove()


async def test_a_postgres_server_that_goes_away_is_unavailable_then_recovers(
    own_postgres: PostgresCluster,
) -> None:
    """A stopped server makes health and adds fail with StoreUnavailableError; back, all works."""
    async with open_store(own_postgres.url()) as store:
        before = await store.add(_record("before"))
        await asyncio.to_thread(own_postgres.stop, "immediate")
        with pytest.raises(StoreUnavailableError):
            await store.check()
        with pytest.raises(StoreUnavailableError, match="could not be written"):
            await store.add(_record("during"))
        with pytest.raises(StoreUnavailableError, match="could not be read"):
            await store.summary("model")
        await asyncio.to_thread(own_postgres.restart)
        await store.check()
        after = await store.add(_record("after"))
        assert await store.add(_record("before")) == before
        assert [e["id"] for e in await store.events()] == [before.id, after.id]


def test_every_store_is_an_event_store(tmp_path: Path) -> None:
    """`open_store` picks the backend from the database's form."""
    assert isinstance(open_store(tmp_path / "x.sqlite"), SQLiteEventStore)
    assert isinstance(open_store("postgres://u@h/d"), EventStore)
    assert type(open_store("postgresql://u@h/d")).__name__ == "PostgresEventStore"


async def test_an_unexpected_writer_failure_fails_its_batch_only(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one PostgreSQL batch answers its requests with an error; the writers go on."""
    from fluxgate_async.collector._postgres import PostgresEventStore

    real_commit = PostgresEventStore._commit
    failures = [ZeroDivisionError("bug")]

    async def commit_once_failing(self: PostgresEventStore, records: list[EventRecord]) -> Any:
        if failures:
            raise failures.pop()
        return await real_commit(self, records)

    monkeypatch.setattr(PostgresEventStore, "_commit", commit_once_failing)
    async with open_store(pg_url) as store:
        with pytest.raises(StoreUnavailableError, match="ZeroDivisionError"):
            await store.add(_record("first"))
        assert (await store.add(_record("second"))).id
        assert len(await store.events()) == 1
