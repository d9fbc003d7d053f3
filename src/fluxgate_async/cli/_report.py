"""`fluxgate-async report`: calls, tokens and cost from a collector's database, or its events."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..collector._pricing import require
from ..collector._store import (
    POSTGRES_SCHEMES,
    StoreUnavailableError,
    normalise_since,
    open_store,
)
from ._errors import CommandError

__all__ = ["EVENT_COLUMNS", "print_report", "run_report"]

_COLUMNS = ("calls", "inputTokens", "outputTokens", "tokens", "cost", "unpriced", "errors")
# The table leaves out `tokens` (input + output) to fit 80 columns; JSON and CSV have it.
_TABLE_COLUMNS = tuple(c for c in _COLUMNS if c != "tokens")
# `errors` counts failed calls (the events' status); `unpriced` counts events with no price.
_HEADERS = {"inputTokens": "input", "outputTokens": "output", "errors": "failed"}

EXPORT_PAGE_SIZE = 1000
"""Events read per page when exporting; each page follows the previous one's cursor."""

EVENT_COLUMNS = (
    "id",
    "createdAt",
    "cost",
    "status",
    "provider",
    "model",
    "inputTokens",
    "outputTokens",
    "cachedTokens",
    "latencyInMs",
    "streamed",
    "eventStatus",
    "feature",
    "user",
    "event",
)
"""The CSV export's columns: the answer, the usual fields, and the whole event as JSON."""


def run_report(*, db: str, by: str, since: str | None, fmt: str, events: bool = False) -> int:
    """Print the summary of `db` grouped `by` (table, JSON or CSV), or export its events.

    Raises:
        CommandError: The database is missing or unreadable, or `since` is not ISO 8601.
    """
    try:
        cutoff = normalise_since(since) if since else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except OverflowError:
        # A valid date whose offset moves it past year 1 or 9999 once in UTC.
        msg = f"--since is out of range once in UTC, got {since!r}"
        raise CommandError(msg) from None
    if not db.startswith(POSTGRES_SCHEMES) and not Path(db).is_file():
        msg = (
            f"no collector database at {db!r}: pass --db with the file a collector writes to, "
            f"or start one that writes there with `fluxgate-async serve --db {db}`"
        )
        raise CommandError(msg)
    if events:
        return asyncio.run(_export(db, cutoff, fmt))
    rows = asyncio.run(_summary(db, by, cutoff))
    print_report(rows, by=by, fmt=fmt)
    return 0


async def _summary(db: str, by: str, since: str | None) -> list[dict[str, Any]]:
    try:
        async with open_store(db, readonly=True) as store:
            return await store.summary(by, since=since)
    except StoreUnavailableError as exc:
        raise CommandError(str(exc)) from None


async def _pages(db: str, since: str | None) -> AsyncIterator[list[dict[str, Any]]]:
    try:
        async with open_store(db, readonly=True) as store:
            cursor = None
            while True:  # ends: each page moves the cursor past what it returned
                page = await store.page(since=since, cursor=cursor, limit=EXPORT_PAGE_SIZE)
                yield page.events
                if not page.has_more:
                    return
                cursor = page.cursor
    except StoreUnavailableError as exc:
        raise CommandError(str(exc)) from None


async def _export(db: str, since: str | None, fmt: str) -> int:
    """Write every event, oldest first: JSON lines or CSV."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(EVENT_COLUMNS)
    async for events in _pages(db, since):
        if fmt == "csv":
            writer.writerows([_csv_cell(cell) for cell in _event_row(event)] for event in events)
        else:
            sys.stdout.writelines(json.dumps(event, ensure_ascii=False) + "\n" for event in events)
    return 0


def _event_row(listed: dict[str, Any]) -> list[Any]:
    event = listed["event"]
    usage, metadata = event["usage"], event.get("metadata") or {}
    user, status = metadata.get("user"), event.get("status", "SUCCESS")
    return [
        listed["id"],
        listed["createdAt"],
        listed["cost"],
        listed["status"],
        usage.get("provider"),
        usage.get("model"),
        usage["inputTokens"],
        usage["outputTokens"],
        usage.get("cachedTokens"),
        usage.get("latencyInMs"),
        usage.get("streamed"),
        status["status"] if isinstance(status, dict) else status,
        metadata.get("feature"),
        user.get("id") if isinstance(user, dict) else user,
        json.dumps(event, ensure_ascii=False),
    ]


def print_report(rows: list[dict[str, Any]], *, by: str, fmt: str) -> None:
    """Write `rows` (from `summarise`) to stdout as `table`, `json` or `csv`."""
    if fmt == "json":
        print(json.dumps({"groupBy": by, "rows": rows}, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([by, *_COLUMNS])
        writer.writerows([[row[by], *(_csv_cell(row[c]) for c in _COLUMNS)] for row in rows])
    else:
        _print_table(rows, by)


def _csv_cell(value: object) -> object:
    # Costs as plain decimals (0.000009), never in exponent form (9e-06), for spreadsheets.
    return f"{value:.10f}".rstrip("0").rstrip(".") if isinstance(value, float) else value


def _cost(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.6f}"


def _print_table(rows: list[dict[str, Any]], by: str) -> None:
    table_mod = require("rich.table")
    text = require("rich.text").Text
    console = require("rich.console").Console(soft_wrap=True)
    table = table_mod.Table(
        title=f"LLM usage by {by}", show_footer=True, box=require("rich.box").SIMPLE_HEAD
    )
    totals = {c: sum(row[c] or 0 for row in rows) for c in _TABLE_COLUMNS}
    any_cost = any(row["cost"] is not None for row in rows)
    labels = ["(none)" if row[by] is None else str(row[by]) for row in rows]
    widest = max((len(label) for label in labels), default=5)
    table.add_column(by, footer="total", min_width=min(widest, 30))
    for column in _TABLE_COLUMNS:
        if column == "cost":
            footer = _cost(totals[column] if any_cost else None)
        else:
            footer = f"{totals[column]:,}"
        table.add_column(_HEADERS.get(column, column), justify="right", footer=footer)
    for label, row in zip(labels, rows, strict=True):
        cells = [_cost(row[c]) if c == "cost" else f"{row[c]:,}" for c in _TABLE_COLUMNS]
        # Text, not str: a label is user data and must not be read as rich markup.
        table.add_row(text(label), *cells)
    if not rows:
        console.print("no events recorded yet")
        return
    console.print(table)
