"""Ingest rate of the local collector (durable SQLite writes) beside a raw aiohttp server.

Both servers run in their own process, as in real use; the real client drives
them over loopback with `concurrency` events in flight. The raw server answers
the API's JSON and stores nothing, so the ratio is what durability and pricing
cost.

    python -m benchmarks.collector_ingest [--events 5000] [--concurrency 64]

`run()` returns the numbers for the benchmark suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fluxgate_async import FluxGate

TARGET_EVENTS_PER_S = 2000.0
_STARTUP_DEADLINE = 20.0

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


async def _drive(endpoint: str, events: int, concurrency: int) -> tuple[float, int]:
    """Send `events` events with `concurrency` in flight; return (seconds, recorded)."""
    warm_up, workload = _events(200), _events(events)
    async with FluxGate("bench-key", endpoint=endpoint, timeout=30.0) as fg:
        for event in warm_up:  # open the connection pool, load the price tables
            await fg.record_event(event)
        remaining = iter(workload)
        recorded = 0

        async def worker() -> None:
            nonlocal recorded
            for event in remaining:
                if await fg.record_event(event) is not None:
                    recorded += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, recorded


def _measure(command: list[str], port: int, events: int, concurrency: int) -> tuple[float, int]:
    process = _start(command, port)
    try:
        return asyncio.run(_drive(f"http://127.0.0.1:{port}/api/events", events, concurrency))
    finally:
        _stop(process)


def run(events: int = 5000, concurrency: int = 64) -> dict[str, Any]:
    """Measure both servers in this run and return events/s, their ratio and the target."""
    raw_port = _free_port()
    raw_s, raw_ok = _measure(
        [sys.executable, "-c", _RAW_SERVER, str(raw_port)], raw_port, events, concurrency
    )
    with tempfile.TemporaryDirectory(prefix="fluxgate-bench-") as tmp:
        db = Path(tmp) / "bench.sqlite"
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "fluxgate_async",
            "serve",
            "--port",
            str(port),
            "--db",
            str(db),
        ]
        collector_s, collector_ok = _measure(command, port, events, concurrency)
        conn = sqlite3.connect(db)
        try:
            stored = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            conn.close()
    collector_rate = collector_ok / collector_s
    raw_rate = raw_ok / raw_s
    return {
        "name": "collector_ingest",
        "events": events,
        "concurrency": concurrency,
        "collector_events_per_s": round(collector_rate, 1),
        "raw_aiohttp_events_per_s": round(raw_rate, 1),
        "ratio": round(collector_rate / raw_rate, 3),
        "collector_stored": stored,
        "collector_recorded": collector_ok,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": collector_rate >= TARGET_EVENTS_PER_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
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
