"""`fluxgate-async report`: calls, tokens and cost from a collector's database."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

from ..collector._pricing import require
from ..collector._store import connect_readonly, normalise_since, summarise
from ._errors import CommandError

__all__ = ["print_report", "run_report"]

_COLUMNS = ("calls", "inputTokens", "outputTokens", "tokens", "cost", "unpriced", "errors")
# The table leaves out `tokens` (input + output) to fit 80 columns; JSON and CSV have it.
_TABLE_COLUMNS = tuple(c for c in _COLUMNS if c != "tokens")
# `errors` counts failed calls (the events' status); `unpriced` counts events with no price.
_HEADERS = {"inputTokens": "input", "outputTokens": "output", "errors": "failed"}


def run_report(*, db: str, by: str, since: str | None, fmt: str) -> int:
    """Print the summary of `db` grouped `by`, as a table, JSON or CSV.

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
    try:
        conn = connect_readonly(db)
    except FileNotFoundError as exc:
        msg = (
            f"{exc}: pass --db with the file a collector writes to, or start one that "
            f"writes there with `fluxgate-async serve --db {db}`"
        )
        raise CommandError(msg) from None
    except Exception as exc:  # sqlite3 says "file is not a database" in many ways
        msg = f"cannot read {db!r} as a collector database: {exc}"
        raise CommandError(msg) from None
    try:
        rows = summarise(conn, by, since=cutoff)
    finally:
        conn.close()
    print_report(rows, by=by, fmt=fmt)
    return 0


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
