"""The benchmarks still run: every row, with tiny counts (they measure nothing here)."""

from __future__ import annotations

import re

import pytest
from benchmarks import memory
from benchmarks.__main__ import ROWS, main, run_row
from benchmarks._common import Settings, require
from benchmarks._table import Row, render


def test_quick_run_prints_one_table_with_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m benchmarks --quick` measures the awaited rows and prints every row."""
    table = main(["--quick", "--rounds", "1"])
    assert table in capsys.readouterr().out
    lines = table.splitlines()
    assert len(lines) == 2 + len(ROWS)
    for name, _, _ in ROWS:
        assert any(line.startswith(f"| {name}") for line in lines), name
    awaited = [line for line in lines if line.startswith("| awaited record_event")]
    assert len(awaited) == 2
    for line in awaited:
        assert re.search(r"\| \d+\.\d\dx ", line), line


async def _needs_a_missing_api(settings: Settings) -> Row:
    require(settings, "record_event_nowait")
    raise AssertionError("unreachable: require() refuses first")


def test_a_row_whose_api_is_missing_prints_not_available() -> None:
    """A row whose API is not in the build is shown as n/a, and says what is missing."""
    row = run_row("some row", ">= 1.0x", _needs_a_missing_api, Settings("http://127.0.0.1:9"))
    assert row.client == "n/a (not available)"
    assert row.note == "record_event_nowait"
    assert "| some row | n/a (not available) |" in render([row]).replace("  ", " ")


def test_render_aligns_columns_and_marks_targets() -> None:
    """The table is Markdown with a ratio column and a yes/NO verdict per target."""
    table = render(
        [
            Row("fast", "10 events/s", "9 events/s", 10 / 9, ">= 0.9x", True),
            Row("slow", "1 events/s", "9 events/s", 1 / 9, ">= 0.9x", False),
        ]
    )
    header, rule, fast, slow = table.splitlines()
    assert len({len(header), len(rule), len(fast), len(slow)}) == 1
    assert "1.11x" in fast
    assert fast.rstrip(" |").endswith("yes")
    assert slow.rstrip(" |").endswith("NO")


def test_the_memory_rows_child_reports_its_own_peak_not_its_parents() -> None:
    """A large benchmark process does not inflate the peak its memory child reports.

    On Linux, `getrusage`'s peak survives exec: a child started from a process
    of hundreds of MiB reported that as its own, and both sides of the row
    came out as the parent's size over the event count.
    """
    ballast = b"x" * (192 * 2**20)  # written, so resident in this process
    figures = memory._child("list", 2000)
    del ballast  # held until the child has run
    # A fresh interpreter holding 2,000 events peaks at a few tens of MiB.
    assert 0 < figures["baseline_kb"] <= figures["peak_kb"] < 128 * 1024
    assert figures["accepted"] == 2000
