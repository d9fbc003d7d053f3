"""How the collector's public API type-checks in user code: mypy --strict only, never pytest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from fluxgate_async import AiEventUsage, FluxGate
from fluxgate_async.cli import main
from fluxgate_async.collector import (
    Collector,
    Price,
    connect_readonly,
    create_app,
    price_usage,
    summarise,
)


async def run_locally(db: Path) -> None:
    """A test suite's collector, the client pointed at it, and the report read back."""
    async with Collector(db, port=0, api_keys=["k"]) as collector:
        url: str = collector.url
        async with FluxGate("k", endpoint=url) as fg:
            await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 2}})
    conn = connect_readonly(db)
    rows: list[dict[str, Any]] = summarise(conn, "model", since=None)
    conn.close()
    price: Price = price_usage(AiEventUsage(10, 5, model="gpt-4o"))
    cost: float | None = price.cost
    print(rows, cost)


def embed() -> web.Application:
    """The bare app, to mount or run with aiohttp's own runner."""
    return create_app("events.sqlite", api_keys=("k",), max_body_size=64 * 1024)


def report() -> int:
    """The command line, called from Python."""
    exit_status: int = main(["report", "--format", "json"])
    return exit_status
