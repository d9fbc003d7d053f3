"""`python -m benchmarks [--quick] [--rounds N] [--only TEXT]`: measure and print the table."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import platform
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from . import awaited, background, hooks, memory, outbox, wrapped
from ._common import Settings, UnavailableError, optional_import
from ._server import ServerProcess
from ._table import Row, median, render

RowFunction = Callable[[Settings], Coroutine[Any, Any, Row]]


async def collector_ingest(settings: Settings) -> Row:
    """The collector's durable ingest rate, from `benchmarks/collector_ingest.py`.

    Its `run(events=..., concurrency=...)` starts a raw aiohttp server and the
    collector, each in its own process, drives both with the real client and
    returns a dict of figures. It runs its own event loop, hence the thread; the
    rounds alternate within each call (raw first, then the collector).
    """
    module = optional_import("benchmarks.collector_ingest")
    events = settings.count(5_000, 200)
    results = [await asyncio.to_thread(module.run, events=events) for _ in range(settings.rounds)]
    collector = median([r["collector_events_per_s"] for r in results])
    raw = median([r["raw_aiohttp_events_per_s"] for r in results])
    target = float(module.TARGET_EVENTS_PER_S)
    cpu = median([r["collector_cpu_us_per_event"] for r in results])
    raw_cpu = median([r["raw_aiohttp_cpu_us_per_event"] for r in results])
    return Row(
        "collector ingest, durable writes",
        f"{collector:,.0f} events/s (stored in SQLite)",
        f"{raw:,.0f} events/s (raw aiohttp, stores nothing)",
        collector / raw,
        f">= {target:,.0f} events/s",
        collector >= target,
        note=f"server CPU per event: collector {cpu:,.0f} µs, raw aiohttp {raw_cpu:,.0f} µs",
    )


async def collector_postgres(settings: Settings) -> Row:
    """Two collectors sharing one PostgreSQL against one, from `run_postgres()`.

    Each round starts a throwaway PostgreSQL cluster (the tests' own), measures
    the raw aiohttp server, one collector, then two with the client's workers
    split between them.
    """
    module = optional_import("benchmarks.collector_ingest")
    events = settings.count(5_000, 200)
    results = [
        await asyncio.to_thread(module.run_postgres, events=events) for _ in range(settings.rounds)
    ]
    two = median([r["two_instances_events_per_s"] for r in results])
    one = median([r["one_instance_events_per_s"] for r in results])
    raw = median([r["raw_aiohttp_events_per_s"] for r in results])
    target = float(module.TARGET_SCALING)
    one_cpu = median([r["one_instance_cpu_us_per_event"] for r in results])
    two_cpu = median([r["two_instances_cpu_us_per_event"] for r in results])
    return Row(
        "collector ingest, PostgreSQL, 2 instances",
        f"{two:,.0f} events/s (2 collectors, one database)",
        f"{one:,.0f} events/s (1 collector); raw aiohttp {raw:,.0f} events/s",
        two / one,
        f">= {target:.1f}x",
        two / one >= target,
        note=f"collectors' CPU per event: one {one_cpu:,.0f} µs, two {two_cpu:,.0f} µs",
    )


ROWS: list[tuple[str, str, RowFunction]] = [
    ("awaited record_event, sequential", ">= 0.95x", awaited.sequential),
    ("awaited record_event, 32 concurrent", ">= 0.9x", awaited.concurrent),
    ("record_event_nowait, median of 100,000 calls", "<= 0.5 µs", background.nowait),
    (
        "record_event_nowait with a mapping, median of 20,000 calls",
        "<= 5 µs",
        background.nowait_mapping,
    ),
    ("background delivery, default settings", ">= 1.0x", background.delivery),
    ("background delivery, 16 POSTs in flight", ">= 1.0x", background.delivery_16),
    ("background delivery, 32 POSTs in flight", ">= 1.0x", background.delivery_32),
    ("record_event_nowait with an outbox, median of 100,000 calls", "<= 5 µs", outbox.nowait),
    ("background delivery with an outbox, 8 POSTs in flight", ">= 0.8x", outbox.delivery),
    ("host CPU per background event", "<= bare + 10 µs", background.host_cpu),
    ("memory, 100,000 events queued, server down", "<= 700 B/event", memory.queued),
    ("wrapped OpenAI chat call, background mode", "<= 50 µs added", wrapped.overhead),
    ("hook: OpenTelemetry bridge, per model request", "<= 50 µs added", hooks.otel_overhead),
    ("hook: OpenAI Agents SDK, per model request", "<= 50 µs added", hooks.openai_agents_overhead),
    ("hook: LangChain, per model request", "<= 50 µs added", hooks.langchain_overhead),
    ("hook: LiteLLM, per model request", "<= 50 µs added", hooks.litellm_overhead),
    ("collector ingest, durable writes", ">= 5,000 events/s", collector_ingest),
    ("collector ingest, PostgreSQL, 2 instances", ">= 1.5x", collector_postgres),
]
"""(name, target, function): the row's name in the table, and its target when it is n/a."""


def machine() -> str:
    """Date, cores, Python and CPU: the line to record beside the figures."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    return (
        f"{today}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def run_row(name: str, target: str, function: RowFunction, settings: Settings) -> Row:
    """Measure one row in a fresh event loop; n/a if its API is not in this build."""
    try:
        return dataclasses.replace(asyncio.run(function(settings)), name=name)
    except UnavailableError as exc:
        return Row.unavailable(name, target, str(exc))


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmarks, print the table, and return it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per row")
    parser.add_argument("--only", default="", help="run the rows whose name contains this")
    args = parser.parse_args(argv)
    rows = []
    with ServerProcess() as server:
        settings = Settings(server.base_url, quick=args.quick, rounds=args.rounds)
        print(f"Machine: {machine()}", flush=True)
        for name, target, function in ROWS:
            if args.only not in name:
                continue
            row = run_row(name, target, function, settings)
            note = f" - {row.note}" if row.note else ""
            print(f"  {row.name}: {row.client}{note}", flush=True)
            rows.append(row)
    table = render(rows)
    print()
    print(table)
    return table


if __name__ == "__main__":
    main()
