"""Usage over a time window: the aggregates the dashboard draws, read in a few bounded queries.

The SQL is plain (window functions, CASE, COALESCE: nothing SQLite-only), and
`plan_usage` only yields it and reads the rows it is sent back, so any backend
runs the same queries with its own driver and spelling (`Dialect`). Every answer
is bounded whatever the number of events: one row per time bucket, per top
value, or per percentile.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final, Literal

import attrs

__all__ = [
    "BUCKETS",
    "MEASURES",
    "PERCENTILES",
    "SQLITE",
    "STACKS",
    "Dialect",
    "Query",
    "Totals",
    "Usage",
    "UsagePlan",
    "UsageWindow",
    "ValueUsage",
    "plan_usage",
    "read_usage",
]

BUCKETS: Final = {
    "hour": "substr(created_at, 1, 13)",
    "day": "substr(created_at, 1, 10)",
}
"""Time bucket sizes and the SQL expression each groups on: a prefix of the UTC timestamp."""

STACKS: Final = {"model": "model", "feature": "feature", "user": "user_id"}
"""What spend can be split by, and the column each reads (never user input)."""

PERCENTILES: Final = (50, 95, 99)
"""The latency percentiles reported, by the nearest-rank method."""

MEASURES: Final = (
    "COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), SUM(cost),"
    " COALESCE(SUM(CASE WHEN cost IS NULL THEN 1 ELSE 0 END), 0),"
    " COALESCE(SUM(CASE WHEN status <> 'SUCCESS' THEN 1 ELSE 0 END), 0)"
)
"""Calls, input and output tokens, cost, unpriced calls and errors: what every total counts."""
_WINDOW = "created_at >= ? AND created_at < ?"

Query = tuple[str, tuple[Any, ...]]
"""One statement with `?` placeholders, and its parameters."""
Rows = list[Sequence[Any]]
UsagePlan = Generator[Query, Rows, "Usage"]
"""`plan_usage`'s protocol: it yields queries, is sent their rows, returns the `Usage`."""


@attrs.frozen
class Dialect:
    """How one database spells what the usage queries need.

    Args:
        table: The events table.
        placeholder: The text of the n-th parameter (from 1): `?` or `$n`.
        to_column: How a dimension's value is stored in its column (identity, or JSON text).
        from_column: The way back.
    """

    table: str
    placeholder: Callable[[int], str]
    to_column: Callable[[str], Any]
    from_column: Callable[[Any], str | None]

    def query(self, sql: str, params: tuple[Any, ...]) -> Query:
        """`sql` with this database's table name and placeholders."""
        parts = sql.replace(" events ", f" {self.table} ").split("?")
        text = parts[0] + "".join(
            self.placeholder(n) + part for n, part in enumerate(parts[1:], start=1)
        )
        return text, params


SQLITE: Final = Dialect(
    table="events", placeholder=lambda _: "?", to_column=str, from_column=lambda v: v
)
"""The embedded SQLite store's spelling."""


@attrs.frozen
class UsageWindow:
    """Which events to aggregate and how to cut them.

    Args:
        since: Start, inclusive, as the store's UTC timestamp text.
        until: End, exclusive, same form.
        bucket: A key of `BUCKETS`.
        stack_by: A key of `STACKS`: what the spend over time is split by.
        top: How many values of each dimension are named; the rest are summed as "other".
    """

    since: str
    until: str
    bucket: Literal["hour", "day"] = "day"
    stack_by: str = "model"
    top: int = 8


@attrs.frozen
class Totals:
    """Calls, tokens, cost and failures of a set of events."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    """Sum of the priced events' costs; `None` when none is priced."""
    unpriced: int = 0
    """Events whose model has no known price."""
    errors: int = 0
    """Events whose status is not `SUCCESS`."""

    @property
    def tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens

    @property
    def error_rate(self) -> float | None:
        """Errors per call, from 0 to 1; `None` without calls."""
        return self.errors / self.calls if self.calls else None


@attrs.frozen
class ValueUsage:
    """The totals of one value of a dimension, such as one user or one model."""

    value: str | None
    """`None` for events that did not say (no user, no feature)."""
    totals: Totals


@attrs.frozen
class Usage:
    """Everything the dashboard shows for one window."""

    window: UsageWindow
    totals: Totals
    latency: dict[int, float | None]
    """Milliseconds at each of `PERCENTILES`, over events that report a latency."""
    buckets: dict[str, Totals]
    """Totals per time bucket that has events, keyed by the bucket's timestamp prefix."""
    bucket_latency: dict[str, dict[int, float | None]]
    """Latency percentiles per bucket."""
    top: dict[str, list[ValueUsage]]
    """Per key of `STACKS`, its costliest values, at most `window.top` of them."""
    stacked_cost: dict[str | None, dict[str, float]]
    """Cost per value of `window.stack_by` (its top values) per bucket."""


def _totals(row: Sequence[Any]) -> Totals:
    # int(): PostgreSQL sums integers as numeric.
    cost = None if row[3] is None else round(float(row[3]), 9)
    return Totals(int(row[0]), int(row[1]), int(row[2]), cost, int(row[4]), int(row[5]))


def _percentiles(
    window: UsageWindow, dialect: Dialect, partition: str | None
) -> Generator[Query, Rows, dict[str, dict[int, float | None]]]:
    # Nearest rank: the value at rank ceil(p * n / 100), in integer arithmetic.
    group, over = (partition, f"PARTITION BY {partition} ") if partition else ("''", "")
    ranks = " OR ".join(f"rn = ({p} * n + 99) / 100" for p in PERCENTILES)
    rows = yield dialect.query(
        f"SELECT grp, n, rn, latency_ms FROM ("
        f" SELECT {group} AS grp, latency_ms,"
        f" ROW_NUMBER() OVER ({over}ORDER BY latency_ms) AS rn,"
        f" COUNT(*) OVER ({over.strip()}) AS n"
        f" FROM events WHERE {_WINDOW} AND latency_ms IS NOT NULL"
        f") ranked WHERE {ranks}",
        (window.since, window.until),
    )
    found: dict[str, dict[int, float | None]] = {}
    for grp, n, rn, latency in rows:
        values = found.setdefault(grp, dict.fromkeys(PERCENTILES))
        for p in PERCENTILES:
            if rn == (p * n + 99) // 100:
                values[p] = latency
    return found


def _top(
    window: UsageWindow, dialect: Dialect, column: str
) -> Generator[Query, Rows, list[ValueUsage]]:
    rows = yield dialect.query(
        f"SELECT {column}, {MEASURES} FROM events WHERE {_WINDOW} GROUP BY {column}"
        f" ORDER BY COALESCE(SUM(cost), 0) DESC, COUNT(*) DESC, {column} IS NULL, {column}"
        " LIMIT ?",
        (window.since, window.until, window.top),
    )
    return [ValueUsage(dialect.from_column(row[0]), _totals(row[1:])) for row in rows]


def _stacked_cost(
    window: UsageWindow, dialect: Dialect, column: str, values: list[str | None]
) -> Generator[Query, Rows, dict[str | None, dict[str, float]]]:
    named = [dialect.to_column(v) for v in values if v is not None]
    conditions = []
    if named:
        conditions.append(f"{column} IN ({', '.join('?' * len(named))})")
    if None in values:
        conditions.append(f"{column} IS NULL")
    if not conditions:
        return {}
    rows = yield dialect.query(
        f"SELECT {BUCKETS[window.bucket]} AS bucket, {column}, SUM(cost) FROM events"
        f" WHERE {_WINDOW} AND ({' OR '.join(conditions)}) AND cost IS NOT NULL"
        f" GROUP BY bucket, {column}",
        (window.since, window.until, *named),
    )
    stacked: dict[str | None, dict[str, float]] = {}
    for bucket, value, cost in rows:
        stacked.setdefault(dialect.from_column(value), {})[bucket] = round(float(cost), 9)
    return stacked


def plan_usage(window: UsageWindow, dialect: Dialect = SQLITE) -> UsagePlan:
    """The queries that aggregate the events of `window` as the dashboard shows them.

    A generator, so that every backend runs the same SQL its own way: it yields
    each query, is sent that query's rows, and returns the `Usage`. Run it in
    one read transaction, so the numbers agree with each other while events
    arrive; `read_usage` does so on a SQLite connection.

    Raises:
        KeyError: `window.bucket` is not a key of `BUCKETS`, or `window.stack_by` of `STACKS`.
    """
    bucket_expr = BUCKETS[window.bucket]
    stack_column = STACKS[window.stack_by]
    total = yield dialect.query(
        f"SELECT {MEASURES} FROM events WHERE {_WINDOW}", (window.since, window.until)
    )
    rows = yield dialect.query(
        f"SELECT {bucket_expr} AS bucket, {MEASURES} FROM events WHERE {_WINDOW}"
        " GROUP BY bucket ORDER BY bucket",
        (window.since, window.until),
    )
    top = {}
    for name, column in STACKS.items():
        top[name] = yield from _top(window, dialect, column)
    stacked = yield from _stacked_cost(
        window, dialect, stack_column, [v.value for v in top[window.stack_by]]
    )
    latency = yield from _percentiles(window, dialect, None)
    bucket_latency = yield from _percentiles(window, dialect, bucket_expr)
    return Usage(
        window=window,
        totals=_totals(total[0]),
        latency=latency.get("", dict.fromkeys(PERCENTILES)),
        buckets={row[0]: _totals(row[1:]) for row in rows},
        bucket_latency=bucket_latency,
        top=top,
        stacked_cost=stacked,
    )


def read_usage(conn: sqlite3.Connection, window: UsageWindow) -> Usage:
    """Run `plan_usage` on a SQLite connection, in one read transaction.

    `conn` must not be in a transaction already.

    Raises:
        KeyError: `window.bucket` is not a key of `BUCKETS`, or `window.stack_by` of `STACKS`.
    """
    plan = plan_usage(window)
    conn.execute("BEGIN")
    try:
        query = next(plan)
        while True:
            query = plan.send(conn.execute(*query).fetchall())
    except StopIteration as done:
        usage: Usage = done.value
        return usage
    finally:
        conn.execute("COMMIT")
