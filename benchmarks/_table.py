"""One row of the benchmark table, and the table as text."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One measured line: the client's figure beside the reference measured in the same run.

    `ratio` is client / reference, so its sense follows the unit: above 1 is better
    for a rate, worse for a duration or a size. `met` says whether the target holds.
    """

    name: str
    client: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    """Printed while the benchmarks run, not in the table."""

    @classmethod
    def unavailable(cls, name: str, target: str, why: str) -> Row:
        """A row whose API is not in this build: shown as n/a, never an error."""
        return cls(name, "n/a (not available)", target=target, note=why)


def median(values: Sequence[float]) -> float:
    """The median; the benchmark's answer to a noisy 2-core machine."""
    return statistics.median(values)


def render(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table, ready to paste into docs/performance.md."""
    header = ("benchmark", "fluxgate-async", "reference (same run)", "ratio", "target", "met")
    lines = [
        (
            row.name,
            row.client,
            row.reference,
            "" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target,
            "" if row.met is None else ("yes" if row.met else "NO"),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in (header, *lines)) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([fmt(header), rule, *(fmt(cells) for cells in lines)])
