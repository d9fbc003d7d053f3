"""Background delivery: the cost of `record_event_nowait`, and delivered events per second.

These rows measure the API of background delivery (`record_event_nowait`,
`flush`, the `max_queue_size` and `concurrency` options); in a build without it
they print n/a.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from fluxgate_async._config import DEFAULT_CONCURRENCY
from fluxgate_async._wire import encode_event, to_wire

from ._common import EVENT, REFERENCE_HEADERS, Settings, background_client
from ._table import Row, median

NOWAIT_TARGET_US = 0.5
MAPPING_TARGET_US = 5.0
BACKGROUND_TARGET = 1.0
CPU_TARGET_US = 10.0
_BLOCK = 10_000


async def _nowait(settings: Settings, event: object, total: int) -> tuple[float, float]:
    """Median µs per `record_event_nowait(event)` and per `asyncio.Queue.put_nowait`."""
    block = min(_BLOCK, total)
    client_ns: list[int] = []
    queue_ns: list[int] = []
    refused = 0
    async with background_client(settings.events_url, max_queue_size=total + 1) as fg:
        fg.record_event_nowait(EVENT)  # starts the workers before timing
        await fg.flush(timeout=30)
        floor: asyncio.Queue[object] = asyncio.Queue()
        clock = time.perf_counter_ns
        for _ in range(total // block):
            # Blocks alternate with the reference, so that both see the same machine.
            for _ in range(block):
                start = clock()
                accepted = fg.record_event_nowait(event)
                client_ns.append(clock() - start)
                refused += not accepted
            for _ in range(block):
                start = clock()
                floor.put_nowait(event)
                queue_ns.append(clock() - start)
            await fg.flush(timeout=120)
    if refused:
        msg = f"record_event_nowait refused {refused} of {total} events"
        raise RuntimeError(msg)
    return median(client_ns) / 1000, median(queue_ns) / 1000


async def nowait(settings: Settings) -> Row:
    """Microseconds per `record_event_nowait` call with an `LLMEvent`, median of 100,000.

    Each call is timed one by one. The reference is `asyncio.Queue.put_nowait`
    of the same event, timed the same way: the floor of any hand-off to a
    background task.
    """
    client_us, queue_us = await _nowait(settings, EVENT, settings.count(100_000, 2_000))
    return Row(
        "record_event_nowait, median of 100,000 calls",
        f"{client_us:.2f} µs/call",
        f"{queue_us:.2f} µs/call (asyncio.Queue.put_nowait)",
        client_us / queue_us,
        f"<= {NOWAIT_TARGET_US} µs",
        client_us <= NOWAIT_TARGET_US,
    )


async def nowait_mapping(settings: Settings) -> Row:
    """The same with the event as a camelCase mapping, validated into an `LLMEvent` first."""
    mapping = to_wire(EVENT)
    client_us, queue_us = await _nowait(settings, mapping, settings.count(20_000, 2_000))
    return Row(
        "record_event_nowait with a mapping, median of 20,000 calls",
        f"{client_us:.2f} µs/call",
        f"{queue_us:.2f} µs/call (asyncio.Queue.put_nowait)",
        client_us / queue_us,
        f"<= {MAPPING_TARGET_US:.0f} µs",
        client_us <= MAPPING_TARGET_US,
    )


async def _delivery(settings: Settings, concurrency: int) -> tuple[float, float, float, float]:
    """Median events/s and CPU µs per event, client then bare loop, `concurrency` POSTs at once.

    The client's events/s run from the first `record_event_nowait` to `flush()`
    returning. The reference is a bare aiohttp loop with as many POSTs in flight,
    draining a queue of prebuilt bodies. CPU is this process's
    (`time.process_time`): the server runs in its own.
    """
    count = settings.count(5_000, 100)
    body = encode_event(EVENT)
    headers = REFERENCE_HEADERS
    timeout = aiohttp.ClientTimeout(total=None)
    options = {} if concurrency == DEFAULT_CONCURRENCY else {"concurrency": concurrency}
    async with (
        background_client(settings.events_url, max_queue_size=count + 1, **options) as fg,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):

        async def client_run(n: int) -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                fg.record_event_nowait(EVENT)
            if not await fg.flush(timeout=120):
                msg = "flush() did not finish: the benchmark server did not keep up"
                raise RuntimeError(msg)
            return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1e6 / n

        async def bare_run(n: int) -> tuple[float, float]:
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for _ in range(n):
                queue.put_nowait(body)

            async def worker() -> None:
                while not queue.empty():
                    data = queue.get_nowait()
                    async with session.post(
                        settings.events_url, data=data, headers=headers
                    ) as resp:
                        resp.raise_for_status()
                        json.loads(await resp.read())

            start, cpu = time.perf_counter(), time.process_time()
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(worker())
            return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1e6 / n

        await client_run(max(1, count // 10))
        await bare_run(max(1, count // 10))
        client: list[tuple[float, float]] = []
        bare: list[tuple[float, float]] = []
        for round_ in range(settings.rounds):
            if round_ % 2:
                bare.append(await bare_run(count))
                client.append(await client_run(count))
            else:
                client.append(await client_run(count))
                bare.append(await bare_run(count))
    return (
        median([rate for rate, _ in client]),
        median([rate for rate, _ in bare]),
        median([cpu for _, cpu in client]),
        median([cpu for _, cpu in bare]),
    )


def _delivery_row(concurrency: int, figures: tuple[float, float, float, float]) -> Row:
    client, bare, client_cpu, bare_cpu = figures
    ratio = client / bare
    return Row(
        f"background delivery, {concurrency} POSTs in flight",
        f"{client:,.0f} events/s",
        f"{bare:,.0f} events/s (bare aiohttp, {concurrency} in flight)",
        ratio,
        f">= {BACKGROUND_TARGET}x",
        ratio >= BACKGROUND_TARGET,
        note=f"CPU per event: client {client_cpu:.0f} µs, bare loop {bare_cpu:.0f} µs",
    )


async def delivery(settings: Settings) -> Row:
    """Background delivery with the default settings, against the bare loop."""
    return _delivery_row(DEFAULT_CONCURRENCY, await _delivery(settings, DEFAULT_CONCURRENCY))


async def delivery_16(settings: Settings) -> Row:
    """Background delivery with `concurrency=16`, one of the choices for the default."""
    return _delivery_row(16, await _delivery(settings, 16))


async def delivery_32(settings: Settings) -> Row:
    """Background delivery with `concurrency=32`."""
    return _delivery_row(32, await _delivery(settings, 32))


async def host_cpu(settings: Settings) -> Row:
    """CPU µs the host process spends per background-delivered event, beside the bare loop's."""
    _, _, client_cpu, bare_cpu = await _delivery(settings, DEFAULT_CONCURRENCY)
    added = client_cpu - bare_cpu
    return Row(
        "host CPU per background event",
        f"{client_cpu:.0f} µs/event (+{added:.0f} µs)",
        f"{bare_cpu:.0f} µs/event (bare aiohttp)",
        client_cpu / bare_cpu,
        f"<= bare + {CPU_TARGET_US:.0f} µs",
        added <= CPU_TARGET_US,
    )
