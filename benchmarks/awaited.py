"""Awaited `record_event` against a bare aiohttp loop posting the same bytes.

The reference is the physical limit of the machine: one keep-alive session,
a prebuilt body, fixed headers, and the answer read and parsed as JSON, with
nothing else. Both sides run as many callers at once, in the same loop and
against the same server, alternating round by round.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp

from fluxgate_async import FluxGate
from fluxgate_async._wire import encode_event

from ._common import API_KEY, EVENT, REFERENCE_HEADERS, Settings
from ._table import Row, median

SEQUENTIAL_TARGET = 0.95
CONCURRENT_TARGET = 0.9


async def _rate(
    callers: int, per_caller: int, call: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """Events/s, and this process's CPU µs per event (the server runs in its own)."""

    async def caller() -> None:
        for _ in range(per_caller):
            await call()

    start, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(callers):
            group.create_task(caller())
    events = callers * per_caller
    return events / (time.perf_counter() - start), (time.process_time() - cpu) * 1e6 / events


async def measure(settings: Settings, callers: int) -> tuple[float, float, float, float]:
    """Median events/s and CPU µs per event of the client and of the bare loop."""
    per_caller = max(1, settings.count(3000, 20) // callers)
    body = encode_event(EVENT)
    headers = REFERENCE_HEADERS
    timeout = aiohttp.ClientTimeout(total=None)
    async with (
        FluxGate(API_KEY, endpoint=settings.events_url) as fg,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):

        async def client_call() -> None:
            if await fg.record_event(EVENT) is None:
                msg = "record_event returned None: the benchmark server did not answer"
                raise RuntimeError(msg)

        async def bare_call() -> None:
            async with session.post(settings.events_url, data=body, headers=headers) as resp:
                resp.raise_for_status()
                json.loads(await resp.read())

        # Warm-up: open the connections and fill the caches on both sides.
        await _rate(callers, max(1, per_caller // 10), client_call)
        await _rate(callers, max(1, per_caller // 10), bare_call)
        client: list[tuple[float, float]] = []
        bare: list[tuple[float, float]] = []
        for round_ in range(settings.rounds):
            # Alternate who goes first, so that a slow spell of the machine hits both.
            if round_ % 2:
                bare.append(await _rate(callers, per_caller, bare_call))
                client.append(await _rate(callers, per_caller, client_call))
            else:
                client.append(await _rate(callers, per_caller, client_call))
                bare.append(await _rate(callers, per_caller, bare_call))
    return (
        median([rate for rate, _ in client]),
        median([rate for rate, _ in bare]),
        median([cpu for _, cpu in client]),
        median([cpu for _, cpu in bare]),
    )


def _row(name: str, target: float, figures: tuple[float, float, float, float]) -> Row:
    client, bare, client_cpu, bare_cpu = figures
    ratio = client / bare
    return Row(
        name,
        f"{client:,.0f} events/s",
        f"{bare:,.0f} events/s (bare aiohttp)",
        ratio,
        f">= {target}x",
        ratio >= target,
        note=f"CPU per event: client {client_cpu:.0f} µs, bare loop {bare_cpu:.0f} µs",
    )


async def sequential(settings: Settings) -> Row:
    """One caller awaiting `record_event` after `record_event`."""
    figures = await measure(settings, callers=1)
    return _row("awaited record_event, sequential", SEQUENTIAL_TARGET, figures)


async def concurrent(settings: Settings) -> Row:
    """32 callers awaiting `record_event` at once."""
    figures = await measure(settings, callers=32)
    return _row("awaited record_event, 32 concurrent", CONCURRENT_TARGET, figures)
