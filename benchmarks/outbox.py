"""Background delivery with a durable outbox, against the same client without one.

Both rows alternate a client with `outbox=` and one without, in the same run:
`record_event_nowait` per call (the outbox adds a hand-off to its writer thread),
and delivered events per second (the writer thread competes with the senders
for the interpreter). The nowait row also notes the durability window: how long
after the last call of a burst everything it recorded was written.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from ._common import EVENT, Settings, background_client
from ._table import Row, median

NOWAIT_TARGET_US = 5.0
DELIVERY_TARGET = 0.8
CONCURRENCY = 8
_BLOCK = 10_000


async def _written(fg: Any) -> float:
    """Seconds until the outbox has written everything recorded so far."""
    start = time.perf_counter()
    await asyncio.wrap_future(fg._pipeline._outbox.sync())
    return time.perf_counter() - start


async def nowait(settings: Settings) -> Row:
    """Microseconds per `record_event_nowait`, with an outbox and without, blocks alternating."""
    total = settings.count(100_000, 2_000)
    block = min(_BLOCK, total)
    with_ns: list[int] = []
    without_ns: list[int] = []
    windows: list[float] = []
    alone: list[float] = []
    clock = time.perf_counter_ns
    with tempfile.TemporaryDirectory() as directory:
        async with (
            background_client(
                settings.events_url, max_queue_size=total + 1, outbox=directory
            ) as fg,
            background_client(settings.events_url, max_queue_size=total + 1) as bare,
        ):
            for client in (fg, bare):
                client.record_event_nowait(EVENT)  # starts the workers before timing
                await client.flush(timeout=30)
            for _ in range(total // block):
                for client, out in ((fg, with_ns), (bare, without_ns)):
                    refused = 0
                    for _ in range(block):
                        start = clock()
                        accepted = client.record_event_nowait(EVENT)
                        out.append(clock() - start)
                        refused += not accepted
                    if refused:
                        msg = f"record_event_nowait refused {refused} of {block} events"
                        raise RuntimeError(msg)
                    if client is fg:
                        windows.append(await _written(fg))
                    await client.flush(timeout=120)
            # Events one at a time, as a service records them: each on disk how soon?
            for _ in range(settings.count(200, 10)):
                fg.record_event_nowait(EVENT)
                alone.append(await _written(fg))
                await asyncio.sleep(0.002)
    client_us = median(with_ns) / 1000
    bare_us = median(without_ns) / 1000
    return Row(
        "record_event_nowait with an outbox, median of 100,000 calls",
        f"{client_us:.2f} µs/call",
        f"{bare_us:.2f} µs/call (no outbox)",
        client_us / bare_us,
        f"<= {NOWAIT_TARGET_US:.0f} µs",
        client_us <= NOWAIT_TARGET_US,
        note=(
            f"one event alone on disk after {median(alone) * 1000:.1f} ms (median; worst "
            f"{max(alone) * 1000:.1f} ms); a burst of {block:,} on disk "
            f"{median(windows) * 1000:.0f} ms after its last call (median; worst "
            f"{max(windows) * 1000:.0f} ms)"
        ),
    )


async def delivery(settings: Settings) -> Row:
    """Events per second from the first `record_event_nowait` to `flush()`, with and without."""
    count = settings.count(5_000, 100)
    with tempfile.TemporaryDirectory() as directory:
        async with (
            background_client(
                settings.events_url,
                max_queue_size=count + 1,
                concurrency=CONCURRENCY,
                outbox=directory,
            ) as fg,
            background_client(
                settings.events_url, max_queue_size=count + 1, concurrency=CONCURRENCY
            ) as bare,
        ):

            async def run(client: Any, n: int) -> float:
                start = time.perf_counter()
                for _ in range(n):
                    client.record_event_nowait(EVENT)
                if not await client.flush(timeout=120):
                    msg = "flush() did not finish: the benchmark server did not keep up"
                    raise RuntimeError(msg)
                return n / (time.perf_counter() - start)

            await run(fg, max(1, count // 10))
            await run(bare, max(1, count // 10))
            with_outbox: list[float] = []
            without: list[float] = []
            for round_ in range(settings.rounds):
                order = ((bare, without), (fg, with_outbox))
                for client, out in order if round_ % 2 else reversed(order):
                    out.append(await run(client, count))
            persisted = fg.stats.persisted
    ratio = median(with_outbox) / median(without)
    return Row(
        f"background delivery with an outbox, {CONCURRENCY} POSTs in flight",
        f"{median(with_outbox):,.0f} events/s",
        f"{median(without):,.0f} events/s (no outbox)",
        ratio,
        f">= {DELIVERY_TARGET}x",
        ratio >= DELIVERY_TARGET,
        note=f"{persisted:,} events written to disk (the others were acknowledged first)",
    )
