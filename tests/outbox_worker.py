"""An application process for the crash tests: `python -m tests.outbox_worker MODE ...`.

It records events whose input token count is their number, through a client with
an outbox, and says on stdout how far it got, so that the test can kill it at
that point:

- `record PATH ENDPOINT FIRST COUNT [EXPECT]`: record events FIRST..FIRST+COUNT-1,
  print `persisted` once all are on disk, then keep delivering until killed, or
  until EXPECT events (its own, and those it adopted) are delivered: then print
  the stats as JSON and exit.
- `spill PATH ENDPOINT COUNT`: as `record`, through a queue of 100 events, so
  that most spill to the outbox; print `persisted`, then `spilled N`, then
  wait to be killed.
- `resume PATH ENDPOINT`: record nothing; deliver what the outbox holds for
  clients that ended, print the stats as JSON, exit.
- `fill PATH ENDPOINT COUNT`: record COUNT events with files limited to a few
  hundred KiB (a full disk, as the kernel reports it), deliver, print the stats.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time

from fluxgate_async import AiEventMetadata, AiEventUsage, DeliveryStats, FluxGate, LLMEvent

API_KEY = "sk-test-0123456789-secret"
_DEADLINE_SECONDS = 120.0


def event(number: int, padding: int = 0) -> LLMEvent:
    """The event numbered `number`: its input token count."""
    return LLMEvent(
        AiEventUsage(number, 1), metadata=AiEventMetadata(feature="x" * padding or None)
    )


def say(line: str) -> None:
    """One line to the test, at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def stats_json(stats: DeliveryStats) -> str:
    """The stats as one JSON line."""
    return json.dumps(
        {
            "enqueued": stats.enqueued,
            "sent": stats.sent,
            "failed": stats.failed,
            "persisted": stats.persisted,
            "recovered": stats.recovered,
            "kept": stats.kept,
            "memory_only": stats.memory_only,
            "dropped": dict(stats.dropped),
        }
    )


async def _until(check: object, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE_SECONDS
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            say(f"timed out waiting for {what}")
            sys.exit(3)
        await asyncio.sleep(0.01)


async def record(
    path: str, endpoint: str, first: int, count: int, expect: int, queue: int = 0
) -> None:
    """Record COUNT events, say `persisted` once on disk, deliver EXPECT (or be killed)."""
    fg = FluxGate(
        API_KEY,
        endpoint=endpoint,
        outbox=path,
        max_retries=1_000,
        max_queue_size=queue or count + 10,
    )
    for number in range(first, first + count):
        if not fg.record_event_nowait(event(number)):
            say(f"refused {number}")
    await _until(lambda: fg.stats.persisted + fg.stats.sent >= count, "the events on disk")
    say("persisted")
    if queue:
        say(f"spilled {fg.stats.spilled}")
    await _until(lambda: fg.stats.sent >= expect, "delivery")
    await fg.aclose()
    say(stats_json(fg.stats))


async def resume(path: str, endpoint: str) -> None:
    """Deliver what ended clients left in the outbox."""
    async with FluxGate(API_KEY, endpoint=endpoint, outbox=path, max_retries=20) as fg:
        await fg.flush(timeout=_DEADLINE_SECONDS)
    say(stats_json(fg.stats))


async def fill(path: str, endpoint: str, count: int) -> None:
    """Record events while no file may grow past 256 KiB: the outbox fails, delivery goes on."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        async with FluxGate(
            API_KEY, endpoint=endpoint, outbox=path, max_queue_size=count + 10
        ) as fg:
            for number in range(count):
                fg.record_event_nowait(event(number, padding=1_000))
                if number % 100 == 0:
                    await asyncio.sleep(0)  # let the senders and the writer work meanwhile
            await fg.flush(timeout=_DEADLINE_SECONDS)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    say(stats_json(fg.stats))


def main(argv: list[str]) -> None:
    """Run the MODE named first in `argv`."""
    mode, path, endpoint, *numbers = argv
    if mode == "record":
        first, count, *expect = map(int, numbers)
        asyncio.run(record(path, endpoint, first, count, expect[0] if expect else count))
    elif mode == "spill":
        count = int(numbers[0])
        asyncio.run(record(path, endpoint, 0, count, count, queue=100))
    elif mode == "resume":
        asyncio.run(resume(path, endpoint))
    else:
        asyncio.run(fill(path, endpoint, int(numbers[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
