"""What tracking adds to a provider call: a wrapped `AsyncOpenAI` against the bare one.

Both clients call the same loopback fake of OpenAI's chat completions endpoint
(see `_server`); the wrapped one records in background mode to the benchmark's
events endpoint. Calls alternate one by one, and the row reports the difference
of the medians: the latency tracking adds to the call itself (proxying,
building the event, queueing it). The event's delivery is flushed between
calls, outside the timing, and measured by the background delivery row.
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
    bare_ns: list[int] = []
    wrapped_ns: list[int] = []
    clock = time.perf_counter_ns
    async with background_client(settings.events_url) as fg:
        wrapped_client: Any = integration.track_openai(bare_client, fg)

        async def timed(client: Any, into: list[int]) -> None:
            start = clock()
            await client.chat.completions.create(model="gpt-4o-mini", messages=_MESSAGES)
            into.append(clock() - start)
            # Deliver the event before the next call, untimed: otherwise the sender's POST
            # runs during whichever call comes next, bare or wrapped, and blurs both. What
            # delivery costs is the background row's business; this row is the call's own.
            await fg.flush(timeout=10)

        warm: list[int] = []
        for _ in range(max(1, calls // 10)):
            await timed(bare_client, warm)
            await timed(wrapped_client, warm)
        for i in range(calls):
            # Alternate who goes first, call by call, so that noise hits both alike.
            first, second = (
                (bare_client, wrapped_client) if i % 2 else (wrapped_client, bare_client)
            )
            await timed(first, bare_ns if first is bare_client else wrapped_ns)
            await timed(second, bare_ns if second is bare_client else wrapped_ns)
        await fg.flush(timeout=60)
    await bare_client.close()
    bare_us = median(bare_ns) / 1000
    wrapped_us = median(wrapped_ns) / 1000
    added = wrapped_us - bare_us
    return Row(
        "wrapped OpenAI chat call, background mode",
        f"{added:+,.0f} µs (median {wrapped_us:,.0f} µs/call)",
        f"{bare_us:,.0f} µs/call (bare AsyncOpenAI)",
        wrapped_us / bare_us,
        f"<= {TARGET_US:.0f} µs added",
        added <= TARGET_US,
    )
