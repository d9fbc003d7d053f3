"""The routes over each database: cursor pages, 503 while the database is gone, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fluxgate_async import FluxGate
from fluxgate_async.collector import Collector

from .conftest import free_port
from .postgres import PostgresCluster


@pytest.fixture
async def collector(database: str) -> AsyncIterator[Collector]:
    """A collector on each backend in turn, no API key."""
    async with Collector(database) as running:
        yield running


async def _get(collector: Collector, path: str) -> tuple[int, Any, str | None]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{collector.base_url}{path}") as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def _post(collector: Collector, body: dict[str, Any]) -> tuple[int, Any, str | None]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(collector.url, json=body) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


def _usage(n: int) -> dict[str, Any]:
    return {"usage": {"inputTokens": n, "outputTokens": 1, "model": "gpt-4o"}}


async def test_pages_follow_the_cursor_to_the_end(collector: Collector) -> None:
    """`cursor` from each page leads to the next; the last says hasMore false; none repeats."""
    async with FluxGate("k", endpoint=collector.url) as fg:
        answers = await asyncio.gather(*(fg.record_event(_usage(n)) for n in range(25)))
    ids: list[str] = []
    status, page, _ = await _get(collector, "/api/events?limit=10")
    for _ in range(10):
        assert status == 200
        ids.extend(e["id"] for e in page["events"])
        if not page["hasMore"]:
            break
        status, page, _ = await _get(collector, f"/api/events?limit=10&cursor={page['cursor']}")
    assert sorted(ids) == sorted(a.id for a in answers if a is not None)
    assert len(ids) == 25
    _, after, _ = await _get(collector, f"/api/events?cursor={page['cursor']}")
    assert after == {"events": [], "cursor": page["cursor"], "hasMore": False}


async def test_a_foreign_cursor_gets_400(collector: Collector) -> None:
    """A cursor the collector did not give out is refused with 400 naming it."""
    status, answer, _ = await _get(collector, "/api/events?cursor=from-somewhere-else")
    assert status == 400
    assert "cursor is not one this collector gave out" in answer["error"]


async def test_healthz_reports_a_working_database(collector: Collector) -> None:
    """`/healthz` is 200 while the database can be written."""
    assert (await _get(collector, "/healthz"))[:2] == (200, {"status": "ok"})


async def test_a_deleted_sqlite_file_turns_unhealthy_and_refuses_events(tmp_path: Path) -> None:
    """With its file gone the collector answers 503, acknowledges nothing, and heals on return."""
    db = tmp_path / "events.sqlite"
    async with Collector(db) as collector:
        assert (await _post(collector, _usage(1)))[0] == 200
        db.rename(tmp_path / "aside.sqlite")
        status, answer, _ = await _get(collector, "/healthz")
        assert (status, answer["status"]) == (503, "unavailable")
        assert str(tmp_path) not in answer["error"]
        status, answer, retry_after = await _post(collector, _usage(2))
        assert (status, retry_after) == (503, "1")
        assert "could not be stored" in answer["error"]
        (tmp_path / "aside.sqlite").rename(db)
        async with FluxGate("k", endpoint=collector.url) as fg:
            assert await fg.record_event(_usage(3)) is not None
        assert (await _get(collector, "/healthz"))[0] == 200
        _, page, _ = await _get(collector, "/api/events")
    assert [e["event"]["usage"]["inputTokens"] for e in page["events"]] == [1, 3]


async def test_a_postgres_server_that_goes_away_gets_503_then_recovers() -> None:
    """Server stopped: health, writes and reads get 503; restarted: it all works again by itself."""
    cluster = PostgresCluster(free_port(), in_memory=True, autovacuum=False)
    cluster.start()
    try:
        async with Collector(cluster.url()) as collector:
            assert (await _post(collector, _usage(1)))[0] == 200
            await asyncio.to_thread(cluster.stop, "immediate")
            assert (await _get(collector, "/healthz"))[0] == 503
            assert (await _post(collector, _usage(2)))[:1] == (503,)
            assert (await _get(collector, "/api/events"))[0] == 503
            assert (await _get(collector, "/api/summary"))[0] == 503
            await asyncio.to_thread(cluster.restart)
            assert (await _get(collector, "/healthz"))[:2] == (200, {"status": "ok"})
            assert (await _post(collector, _usage(3)))[0] == 200
            _, page, _ = await _get(collector, "/api/events")
            assert [e["event"]["usage"]["inputTokens"] for e in page["events"]] == [1, 3]
    finally:
        cluster.stop("immediate")
        cluster.remove()
