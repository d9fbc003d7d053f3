"""Ingest rate of the collector (durable writes) beside a raw aiohttp server.

Every server runs in its own process, as in real use; the real client drives
them over loopback with `concurrency` events in flight. The raw server answers
the API's JSON and stores nothing, so the ratio is what durability and pricing
cost. On PostgreSQL (a throwaway cluster started for the run) one collector is
measured, then two sharing the database with the client's workers split
between them, as behind a load balancer.

    python -m benchmarks.collector_ingest [--events 5000] [--concurrency 64] [--postgres]

`run()` and `run_postgres()` return the numbers for the benchmark suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from fluxgate_async import FluxGate

TARGET_EVENTS_PER_S = 5000.0
TARGET_SCALING = 1.5
"""Two collectors on one PostgreSQL against one: the rate they reach together."""
_STARTUP_DEADLINE = 20.0
_WARM_UP = 200

# A server that answers like the API and stores nothing: the floor for HTTP + JSON.
_RAW_SERVER = """
import sys
from aiohttp import web

async def events(request):
    await request.read()
    answer = {"id": "evt_raw", "createdAt": "2026-01-01T00:00:00+00:00", "cost": 0.001}
    return web.json_response({**answer, "status": "SUCCESS"})

async def healthz(request):
    return web.json_response({"status": "ok"})

app = web.Application()
app.router.add_post("/api/events", events)
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-flash"),
]


def _events(count: int) -> list[dict[str, Any]]:
    # Varied models and token counts, as real traffic: no answer can be served from a cache.
    rng = random.Random(7)
    events = []
    for n in range(count):
        provider, model = rng.choice(_MODELS)
        prompt = rng.randint(100, 8000)
        events.append(
            {
                "usage": {
                    "inputTokens": prompt,
                    "outputTokens": rng.randint(10, 1500),
                    "cachedTokens": rng.randint(0, prompt),
                    "model": model,
                    "provider": provider,
                    "latencyInMs": round(rng.uniform(200, 3000), 1),
                },
                "metadata": {"feature": "chat", "user": f"user-{n % 50}", "sessionId": f"s-{n}"},
            }
        )
    return events


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + _STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start in time")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()  # else a ResourceWarning when the Popen is collected


async def _drive(
    endpoints: list[str], events: int, concurrency: int, on_start: Callable[[], object]
) -> tuple[float, int]:
    """Send `events` events with `concurrency` in flight, spread over `endpoints`.

    `on_start` is called once warmed up, just before the timed part. Returns (seconds, recorded).
    """
    warm_up, workload = _events(_WARM_UP), _events(events)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(FluxGate("bench-key", endpoint=url, timeout=30.0))
            for url in endpoints
        ]
        for n, event in enumerate(warm_up):  # open the connection pools, load the price tables
            await clients[n % len(clients)].record_event(event)
        remaining = iter(workload)
        recorded = 0

        async def worker(fg: FluxGate) -> None:
            nonlocal recorded
            for event in remaining:
                if await fg.record_event(event) is not None:
                    recorded += 1

        on_start()
        start = time.perf_counter()
        await asyncio.gather(*(worker(clients[n % len(clients)]) for n in range(concurrency)))
        return time.perf_counter() - start, recorded


def _serve(db: str) -> tuple[list[str], int]:
    port = _free_port()
    # No access log (the default), as the raw server keeps none.
    command = [sys.executable, "-m", "fluxgate_async", "serve"]
    return [*command, "--port", str(port), "--db", db], port


def _cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time (user + system, all threads) a process has used so far; Linux only, else 0.

    With `children`, also that of its children that have ended (PostgreSQL's backends).
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds(postmaster: int) -> float:
    """CPU time of a PostgreSQL server: the postmaster, its live processes, the ended ones."""
    total = _cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:  # its parent
            total += _cpu_seconds(int(entry.name))
    return total


@attrs.frozen
class _Run:
    """One timed run: its rate and the CPU each party spent on an event, in µs.

    CPU is counted over the timed part only (not start-up or warm-up), so it says
    what one more event costs each process whatever else the machine is doing.
    """

    seconds: float
    recorded: int
    servers_cpu: float
    client_cpu: float
    postgres_cpu: float

    @property
    def rate(self) -> float:
        return self.recorded / self.seconds


def _measure(
    servers: list[tuple[list[str], int]],
    events: int,
    concurrency: int,
    postmaster: int | None = None,
) -> _Run:
    """Run the servers, drive them; return the rate and CPU per event of each party."""
    processes = [_start(command, port) for command, port in servers]
    start: list[float] = []

    def cpu_now() -> list[float]:
        return [
            sum(_cpu_seconds(process.pid) for process in processes),
            time.process_time(),  # this process: the client driving the load
            _postgres_cpu_seconds(postmaster) if postmaster is not None else 0.0,
        ]

    try:
        endpoints = [f"http://127.0.0.1:{port}/api/events" for _, port in servers]
        seconds, recorded = asyncio.run(
            _drive(endpoints, events, concurrency, lambda: start.extend(cpu_now()))
        )
        spent = [end - begin for begin, end in zip(start, cpu_now(), strict=True)]
        per_event = [seconds_of_cpu / events * 1e6 for seconds_of_cpu in spent]
        return _Run(seconds, recorded, *per_event)
    finally:
        for process in processes:
            _stop(process)


def _raw(events: int, concurrency: int) -> _Run:
    port = _free_port()
    return _measure([([sys.executable, "-c", _RAW_SERVER, str(port)], port)], events, concurrency)


def run(events: int = 5000, concurrency: int = 64) -> dict[str, Any]:
    """Measure the raw server and the collector on SQLite; return events/s, ratio, target."""
    raw = _raw(events, concurrency)
    with tempfile.TemporaryDirectory(prefix="fluxgate-bench-") as tmp:
        db = Path(tmp) / "bench.sqlite"
        collector = _measure([_serve(str(db))], events, concurrency)
        conn = sqlite3.connect(db)
        try:
            stored = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            conn.close()
    return {
        "name": "collector_ingest",
        "events": events,
        "concurrency": concurrency,
        "collector_events_per_s": round(collector.rate, 1),
        "raw_aiohttp_events_per_s": round(raw.rate, 1),
        "ratio": round(collector.rate / raw.rate, 3),
        "collector_cpu_us_per_event": round(collector.servers_cpu, 1),
        "raw_aiohttp_cpu_us_per_event": round(raw.servers_cpu, 1),
        "client_cpu_us_per_event": round(collector.client_cpu, 1),
        "collector_stored": stored,
        "collector_recorded": collector.recorded,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": collector.rate >= TARGET_EVENTS_PER_S,
    }


def run_postgres(events: int = 5000, concurrency: int = 64) -> dict[str, Any]:
    """Measure one, then two collectors on one throwaway PostgreSQL, and the raw server."""
    from tests.collector.postgres import PostgresCluster

    raw = _raw(events, concurrency)
    cluster = PostgresCluster(_free_port())
    cluster.start()
    try:
        url = cluster.url()
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        one = _measure([_serve(url)], events, concurrency, postmaster)
        two = _measure([_serve(url), _serve(url)], events, concurrency, postmaster)
        stored = asyncio.run(_count_postgres(url))
    finally:
        cluster.stop("immediate")
        cluster.remove()
    return {
        "name": "collector_ingest_postgres",
        "events": events,
        "concurrency": concurrency,
        "one_instance_events_per_s": round(one.rate, 1),
        "two_instances_events_per_s": round(two.rate, 1),
        "raw_aiohttp_events_per_s": round(raw.rate, 1),
        "scaling": round(two.rate / one.rate, 3),
        # Per event, in µs of CPU: what each party spends, one collector then two.
        "one_instance_cpu_us_per_event": round(one.servers_cpu, 1),
        "two_instances_cpu_us_per_event": round(two.servers_cpu, 1),
        "one_instance_postgres_cpu_us_per_event": round(one.postgres_cpu, 1),
        "two_instances_postgres_cpu_us_per_event": round(two.postgres_cpu, 1),
        "one_instance_client_cpu_us_per_event": round(one.client_cpu, 1),
        "two_instances_client_cpu_us_per_event": round(two.client_cpu, 1),
        # All three together, against the two cores' worth of CPU time the run had.
        "two_instances_cpu_us_per_event_all": round(
            two.servers_cpu + two.postgres_cpu + two.client_cpu, 1
        ),
        "stored": stored,
        "recorded": one.recorded + two.recorded,
        "target_scaling": TARGET_SCALING,
        "meets_target": two.rate / one.rate >= TARGET_SCALING,
    }


async def _count_postgres(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM fluxgate_events")
    finally:
        await conn.close()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--postgres", action="store_true", help="one and two collectors on PG")
    args = parser.parse_args()
    if args.postgres:
        result = run_postgres(events=args.events, concurrency=args.concurrency)
        print(json.dumps(result, indent=2))
        print(
            f"PostgreSQL: one collector {result['one_instance_events_per_s']:,.0f} events/s, "
            f"two {result['two_instances_events_per_s']:,.0f} events/s "
            f"({result['scaling']:.2f}x; target {TARGET_SCALING}x), "
            f"raw aiohttp {result['raw_aiohttp_events_per_s']:,.0f} events/s"
        )
        return
    result = run(events=args.events, concurrency=args.concurrency)
    print(json.dumps(result, indent=2))
    print(
        f"collector {result['collector_events_per_s']:,.0f} events/s (durable), "
        f"raw aiohttp {result['raw_aiohttp_events_per_s']:,.0f} events/s, "
        f"ratio {result['ratio']:.2f}; target {TARGET_EVENTS_PER_S:,.0f}: "
        f"{'met' if result['meets_target'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
