"""What tracking adds to a provider call: a wrapped `AsyncOpenAI` against the bare one.

Both clients call the same loopback fake of OpenAI's chat completions endpoint
(see `_server`); the wrapped one records in background mode to the benchmark's
events endpoint. Calls alternate one by one, and the row reports the difference
of the medians: the latency tracking adds to the call itself (routing the
request, timing it, handing the answer over). Reading the answer and building
and queueing the event happen once the caller yields, after the call returned:
the row also reports the CPU time of the call with that work, against the bare
call's. The event's delivery is flushed between calls, outside the timing, and
measured by the background delivery row.
"""

from __future__ import annotations

import time
from typing import Any

from ._common import Settings, background_client, optional_import, require
from ._table import Row, median

TARGET_US = 30.0  # added per call; the older 50 µs target is met first
_MESSAGES = [{"role": "user", "content": "Say hello."}]


async def overhead(settings: Settings) -> Row:
    """Median wrapped call minus median bare call, in microseconds."""
    integration = optional_import("fluxgate_async.integrations.openai")
    require(integration, "track_openai")
    openai = optional_import("openai")
    calls = settings.count(2_000, 20)
    bare_client = openai.AsyncOpenAI(
        api_key="sk-bench", base_url=f"{settings.base_url}/v1", max_retries=0
    )
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    # Per client: wall-clock nanoseconds of each call, CPU nanoseconds of each
    # call with the work its event takes once it has returned.
    wall: dict[bool, list[int]] = {False: [], True: []}
    work: dict[bool, list[int]] = {False: [], True: []}
    async with background_client(settings.events_url) as fg:
        wrapped_client: Any = integration.track_openai(bare_client, fg)

        async def timed(wrapped: bool, keep: bool = True) -> None:
            client = wrapped_client if wrapped else bare_client
            start, start_cpu = clock(), cpu()
            await client.chat.completions.create(model="gpt-4o-mini", messages=_MESSAGES)
            end = clock()
            fg.stats  # noqa: B018 - builds and queues the event waiting, as the next await would
            end_cpu = cpu()
            if keep:
                wall[wrapped].append(end - start)
                work[wrapped].append(end_cpu - start_cpu)
            # Deliver the event before the next call, untimed: otherwise the sender's POST
            # runs during whichever call comes next, bare or wrapped, and blurs both. What
            # delivery costs is the background row's business; this row is the call's own.
            await fg.flush(timeout=10)

        for _ in range(max(1, calls // 10)):
            await timed(wrapped=False, keep=False)
            await timed(wrapped=True, keep=False)
        for i in range(calls):
            # Alternate who goes first, call by call, so that noise hits both alike.
            await timed(wrapped=i % 2 == 0)
            await timed(wrapped=i % 2 == 1)
        await fg.flush(timeout=60)
    await bare_client.close()
    bare_us = median(wall[False]) / 1000
    wrapped_us = median(wall[True]) / 1000
    added = wrapped_us - bare_us
    cpu_added = (median(work[True]) - median(work[False])) / 1000
    return Row(
        "wrapped OpenAI chat call, background mode",
        f"{added:+,.0f} µs (median {wrapped_us:,.0f} µs/call; "
        f"CPU with the event {cpu_added:+,.0f} µs)",
        f"{bare_us:,.0f} µs/call (bare AsyncOpenAI)",
        wrapped_us / bare_us,
        f"<= {TARGET_US:.0f} µs added",
        added <= TARGET_US,
    )
