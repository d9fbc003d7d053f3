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

from fluxgate_async._wire import encode_event

from ._common import EVENT, REFERENCE_HEADERS, Settings, background_client
from ._table import Row, median

NOWAIT_TARGET_US = 5.0
BACKGROUND_TARGET = 1.0
CONCURRENCY = 8
_BLOCK = 10_000


async def nowait(settings: Settings) -> Row:
    """Microseconds per `record_event_nowait` call, median of 100,000 timed one by one.

    The reference is `asyncio.Queue.put_nowait` of the same event, timed the same
    way: the floor of any hand-off to a background task.
    """
    total = settings.count(100_000, 2_000)
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
                accepted = fg.record_event_nowait(EVENT)
                client_ns.append(clock() - start)
                refused += not accepted
            for _ in range(block):
                start = clock()
                floor.put_nowait(EVENT)
                queue_ns.append(clock() - start)
            await fg.flush(timeout=120)
    if refused:
        msg = f"record_event_nowait refused {refused} of {total} events"
        raise RuntimeError(msg)
    client_us = median(client_ns) / 1000
    queue_us = median(queue_ns) / 1000
    return Row(
        "record_event_nowait, median of 100,000 calls",
        f"{client_us:.2f} µs/call",
        f"{queue_us:.2f} µs/call (asyncio.Queue.put_nowait)",
        client_us / queue_us,
        f"<= {NOWAIT_TARGET_US:.0f} µs",
        client_us <= NOWAIT_TARGET_US,
    )


async def delivery(settings: Settings) -> Row:
    """Events per second from the first `record_event_nowait` to `flush()` returning.

    The reference is a bare aiohttp loop with as many POSTs in flight as the
    client's workers (`concurrency`), draining a queue of prebuilt bodies.
    """
    count = settings.count(5_000, 100)
    body = encode_event(EVENT)
    headers = REFERENCE_HEADERS
    timeout = aiohttp.ClientTimeout(total=None)
    async with (
        background_client(
            settings.events_url, max_queue_size=count + 1, concurrency=CONCURRENCY
        ) as fg,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):

        async def client_run(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                fg.record_event_nowait(EVENT)
            if not await fg.flush(timeout=120):
                msg = "flush() did not finish: the benchmark server did not keep up"
                raise RuntimeError(msg)
            return n / (time.perf_counter() - start)

        async def bare_run(n: int) -> float:
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

            start = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                for _ in range(CONCURRENCY):
                    group.create_task(worker())
            return n / (time.perf_counter() - start)

        await client_run(max(1, count // 10))
        await bare_run(max(1, count // 10))
        client: list[float] = []
        bare: list[float] = []
        for round_ in range(settings.rounds):
            if round_ % 2:
                bare.append(await bare_run(count))
                client.append(await client_run(count))
            else:
                client.append(await client_run(count))
                bare.append(await bare_run(count))
    ratio = median(client) / median(bare)
    return Row(
        f"background delivery, {CONCURRENCY} POSTs in flight",
        f"{median(client):,.0f} events/s",
        f"{median(bare):,.0f} events/s (bare aiohttp)",
        ratio,
        f">= {BACKGROUND_TARGET}x",
        ratio >= BACKGROUND_TARGET,
    )
