"""An outbox file that cannot be used: moved aside whole when damaged, left alone when locked."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fluxgate_async import _outbox
from fluxgate_async._outbox import DATABASE_NAME, Outbox, open_database

from .test_outbox import BODY, Client


async def _synced(outbox: Outbox) -> None:
    await asyncio.wait_for(asyncio.wrap_future(outbox.sync()), 10)


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
