"""Usage over a time window, read from a real store: totals, buckets, rankings, percentiles."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest

from fluxgate_async.collector._sqlite import SQLiteEventStore
from fluxgate_async.collector._store import EventRecord, EventStore, open_store
from fluxgate_async.collector._usage import (
    PERCENTILES,
    Dialect,
    Totals,
    UsageWindow,
    plan_usage,
)

DAY = "2026-03-02"


def _record(
    *,
    model: str | None = "gpt-4o",
    feature: str | None = "chat",
    user: str | None = "ana",
    status: str = "SUCCESS",
    cost: float | None = 0.01,
    latency: float | None = 100.0,
    tokens: tuple[int, int] = (100, 10),
) -> EventRecord:
    return EventRecord(
        idempotency_key=None,
        provider="openai",
        model=model,
        feature=feature,
        user_id=user,
        status=status,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cached_tokens=None,
        latency_ms=latency,
        cost=cost,
        price_status="SUCCESS" if cost is not None else "UNKNOWN_MODEL",
        body="{}",
    )


@pytest.fixture
async def store(database: str) -> AsyncIterator[EventStore]:
    """An open store on a fresh database, of each backend in turn."""
    async with open_store(database) as opened:
        yield opened


AddAt = Callable[[str, EventRecord], Awaitable[None]]


@pytest.fixture
def add_at(store: EventStore, database: str) -> AddAt:
    """Store an event, then place it at a chosen time, as if it had arrived then."""

    async def add(when: str, record: EventRecord) -> None:
        answer = await store.add(record)
        if isinstance(store, SQLiteEventStore):
            await _move_sqlite(store, when, answer.id)
            return
        conn = await asyncpg.connect(database)
        try:
            await conn.execute(
                "UPDATE fluxgate_events SET created_at = $1 WHERE id = $2", when, answer.id
            )
        finally:
            await conn.close()

    return add


async def _move_sqlite(store: SQLiteEventStore, when: str, event_id: str) -> None:
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("UPDATE events SET created_at = ? WHERE id = ?", (when, event_id))


def _window(**fields: object) -> UsageWindow:
    defaults: dict[str, object] = {
        "since": f"{DAY}T00:00:00.000000+00:00",
        "until": "2026-03-03T00:00:00.000000+00:00",
        "bucket": "hour",
    }
    return UsageWindow(**(defaults | fields))  # type: ignore[arg-type]


async def test_an_empty_window_has_zero_totals_and_no_percentiles(store: EventStore) -> None:
    """No events: zero calls, no cost, no buckets, and every percentile unknown."""
    usage = await store.usage(_window())
    assert usage.totals == Totals()
    assert usage.totals.error_rate is None
    assert usage.buckets == {}
    assert usage.latency == dict.fromkeys(PERCENTILES)
    assert usage.top == {"model": [], "feature": [], "user": []}
    assert usage.stacked_cost == {}


async def test_totals_count_only_the_window_with_its_end_excluded(
    store: EventStore, add_at: AddAt
) -> None:
    """Events before `since` or at `until` are left out; errors and unpriced are counted."""
    await add_at("2026-03-01T23:59:59.999999+00:00", _record())
    await add_at(f"{DAY}T00:00:00.000000+00:00", _record(tokens=(5, 7)))
    await add_at(f"{DAY}T10:30:00.000000+00:00", _record(status="ERROR", cost=0.02))
    await add_at(f"{DAY}T10:45:00.000000+00:00", _record(cost=None, model="mystery"))
    await add_at("2026-03-03T00:00:00.000000+00:00", _record())
    usage = await store.usage(_window())
    assert usage.totals == Totals(
        calls=3, input_tokens=205, output_tokens=27, cost=0.03, unpriced=1, errors=1
    )
    assert usage.totals.tokens == 232
    assert usage.totals.error_rate == pytest.approx(1 / 3)
    assert set(usage.buckets) == {f"{DAY}T00", f"{DAY}T10"}
    assert usage.buckets[f"{DAY}T10"].calls == 2


async def test_daily_buckets_group_by_the_utc_day(store: EventStore, add_at: AddAt) -> None:
    """With day buckets, events of one UTC day add up in one bucket."""
    await add_at(f"{DAY}T01:00:00.000000+00:00", _record(cost=0.5))
    await add_at(f"{DAY}T23:00:00.000000+00:00", _record(cost=0.25))
    await add_at("2026-03-03T01:00:00.000000+00:00", _record(cost=1.0))
    usage = await store.usage(_window(bucket="day", until="2026-03-04T00:00:00.000000+00:00"))
    assert {k: v.cost for k, v in usage.buckets.items()} == {DAY: 0.75, "2026-03-03": 1.0}


async def test_rankings_put_the_costliest_first_and_keep_missing_values(
    store: EventStore, add_at: AddAt
) -> None:
    """Top values are ordered by cost, then calls; events without a user rank as `None`."""
    when = f"{DAY}T09:00:00.000000+00:00"
    await add_at(when, _record(user="ana", cost=0.01))
    await add_at(when, _record(user="ben", cost=0.05))
    await add_at(when, _record(user=None, cost=0.02))
    await add_at(when, _record(user=None, cost=0.02))
    await add_at(when, _record(user="cleo", cost=None))
    usage = await store.usage(_window(stack_by="user", top=3))
    assert [(v.value, v.totals.cost, v.totals.calls) for v in usage.top["user"]] == [
        ("ben", 0.05, 1),
        (None, 0.04, 2),
        ("ana", 0.01, 1),
    ]
    assert usage.stacked_cost == {
        "ben": {f"{DAY}T09": 0.05},
        None: {f"{DAY}T09": 0.04},
        "ana": {f"{DAY}T09": 0.01},
    }


async def test_stacked_cost_splits_each_bucket_by_the_chosen_dimension(
    store: EventStore, add_at: AddAt
) -> None:
    """Spend per hour and feature, for the top features only."""
    await add_at(f"{DAY}T08:10:00.000000+00:00", _record(feature="chat", cost=0.1))
    await add_at(f"{DAY}T08:20:00.000000+00:00", _record(feature="search", cost=0.2))
    await add_at(f"{DAY}T09:00:00.000000+00:00", _record(feature="chat", cost=0.3))
    await add_at(f"{DAY}T09:00:00.000000+00:00", _record(feature="rare", cost=0.001))
    usage = await store.usage(_window(stack_by="feature", top=2))
    assert usage.stacked_cost == {
        "chat": {f"{DAY}T08": 0.1, f"{DAY}T09": 0.3},
        "search": {f"{DAY}T08": 0.2},
    }
    assert usage.buckets[f"{DAY}T09"].cost == pytest.approx(0.301)


@pytest.mark.parametrize("count", [1, 2, 7, 20, 101])
async def test_latency_percentiles_are_nearest_rank(
    store: EventStore, count: int, add_at: AddAt
) -> None:
    """p50, p95 and p99 are the values at rank ceil(p * n / 100), overall and per bucket."""
    latencies = [float((i * 37) % 211 + 1) for i in range(count)]
    for i, latency in enumerate(latencies):
        await add_at(f"{DAY}T{i % 2:02d}:00:00.000000+00:00", _record(latency=latency))
    await add_at(f"{DAY}T05:00:00.000000+00:00", _record(latency=None))
    usage = await store.usage(_window())
    ordered = sorted(latencies)
    assert usage.latency == {p: ordered[math.ceil(p * count / 100) - 1] for p in PERCENTILES}
    even = sorted(latencies[0::2])
    assert usage.bucket_latency[f"{DAY}T00"] == {
        p: even[math.ceil(p * len(even) / 100) - 1] for p in PERCENTILES
    }
    assert f"{DAY}T05" not in usage.bucket_latency


async def test_an_unknown_bucket_or_dimension_is_refused(store: EventStore) -> None:
    """The SQL is built only from known names."""
    with pytest.raises(KeyError):
        await store.usage(_window(bucket="minute"))
    with pytest.raises(KeyError):
        await store.usage(_window(stack_by="team"))


async def test_usage_needs_an_open_store(db: Path) -> None:
    """Reading from a store never opened, or closed, says so."""
    store = SQLiteEventStore(db)
    with pytest.raises(RuntimeError, match="not open"):
        await store.usage(_window())
    async with store:
        assert (await store.usage(_window())).totals.calls == 0
    with pytest.raises(RuntimeError, match="not open"):
        await store.usage(_window())


async def test_another_spelling_of_the_same_data_gives_the_same_usage(
    db: Path, add_at: AddAt
) -> None:
    """A backend with its own table, numbered parameters and JSON-text columns reads the same."""
    async with SQLiteEventStore(db) as store:
        await _spell_differently(store)


async def _spell_differently(store: SQLiteEventStore) -> None:
    records = [
        _record(user="ana", feature=None, cost=0.5, latency=10.0),
        _record(user='quote " and \\ slash', cost=0.25, latency=20.0, status="ERROR"),
        _record(user=None, model="mystery", cost=None, latency=None),
    ]
    for hour, record in enumerate(records):
        answer = await store.add(record)
        await _move_sqlite(store, f"{DAY}T{hour:02d}:00:00.000000+00:00", answer.id)
    expected = await store.usage(_window(stack_by="user"))

    dialect = Dialect(
        table="fluxgate_events",
        placeholder=lambda n: f":p{n}",
        to_column=json.dumps,
        from_column=lambda v: None if v is None else json.loads(v),
    )
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("CREATE TABLE fluxgate_events AS SELECT * FROM events")
        for column in ("model", "feature", "user_id"):
            conn.execute(
                f"UPDATE fluxgate_events SET {column} = json_quote({column})"
                f" WHERE {column} IS NOT NULL"
            )
        plan = plan_usage(_window(stack_by="user"), dialect)
        sent: list[str] = []
        usage = None
        query = next(plan)
        while usage is None:
            sent.append(query[0])
            try:
                named = {f"p{n}": value for n, value in enumerate(query[1], start=1)}
                query = plan.send(conn.execute(query[0], named).fetchall())
            except StopIteration as done:
                usage = done.value
    assert usage == expected
    assert all(":p1" in sql and " events " not in sql for sql in sent)
