"""`fluxgate-async demo`: the whole loop on this machine, with a simulated workload.

A collector starts on a free port with a new database in a temporary folder; the
real client records a day's worth of LLM calls to it, one step at a time;
everything shuts down; the report is printed from the database, which is kept so
that `fluxgate-async report --db ...` can slice it further.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs

from .._client import FluxGate
from .._models import AiEventMetadata, AiEventUsage, CreateAiEventResponse, LLMEvent, TrackedUser
from .._tracking_context import tracking_context
from ..collector import Collector
from ..collector._store import connect_readonly, summarise
from ._report import print_report

__all__ = ["DEMO_STEPS", "Step", "StepOutcome", "run_demo"]

_KEY = "demo-key"
_MODELS = (
    ("openai", "gpt-4o", 1.0),
    ("openai", "gpt-4o-mini", 0.6),
    ("anthropic", "claude-sonnet-4-5", 1.4),
    ("google", "gemini-2.5-flash", 0.5),
)
_FEATURES = ("chat", "summarise", "search", "autocomplete")
_USERS = (
    TrackedUser("user-ada", name="Ada", email="ada@example.com", monthly_revenue=49.0),
    TrackedUser("user-grace", name="Grace", monthly_revenue=99.0),
    "user-linus",
)


@attrs.frozen
class StepOutcome:
    """What one step of the demo did: a line for the user, and how many events were lost."""

    summary: str
    lost: int = 0


Step = Callable[[FluxGate, random.Random], Awaitable[StepOutcome]]
"""One part of the workload: records events through the client and says how it went."""


def _money(cost: float | None) -> str:
    return "n/a" if cost is None else f"${cost:.6f}"


def _cost(answers: list[CreateAiEventResponse | None]) -> str:
    return _money(sum(a.cost or 0.0 for a in answers if a is not None))


def _outcome(
    label: str,
    answer: CreateAiEventResponse | None,
    describe: Callable[[CreateAiEventResponse], str],
) -> StepOutcome:
    if answer is None:
        return StepOutcome(f"{label} not recorded", lost=1)
    return StepOutcome(f"{label} {describe(answer)}")


def _call(rng: random.Random, session: int) -> LLMEvent:
    provider, model, speed = rng.choice(_MODELS)
    prompt = rng.randint(200, 4000)
    return LLMEvent(
        AiEventUsage(
            input_tokens=prompt,
            output_tokens=rng.randint(20, 800),
            cached_tokens=rng.choice((None, prompt // 2)),
            model=model,
            provider=provider,
            latency_in_ms=round(rng.uniform(300, 2500) * speed, 1),
        ),
        metadata=AiEventMetadata(
            feature=rng.choice(_FEATURES),
            user=rng.choice(_USERS),
            session_id=f"session-{session}",
        ),
    )


async def awaited_calls(fg: FluxGate, rng: random.Random) -> StepOutcome:
    """Forty successful calls, each awaited as a request handler would."""
    answers = [await fg.record_event(_call(rng, n // 8)) for n in range(40)]
    recorded = sum(a is not None for a in answers)
    return StepOutcome(
        f"awaited calls:    {recorded}/40 recorded, cost {_cost(answers)}", lost=40 - recorded
    )


async def background_calls(fg: FluxGate, rng: random.Random) -> StepOutcome:
    """Sixty calls queued without waiting, as a busy endpoint would, then flushed."""
    before = fg.stats
    queued = sum(fg.record_event_nowait(_call(rng, 5 + n // 10)) for n in range(60))
    settled = await fg.flush(timeout=10.0)
    after = fg.stats
    sent = after.sent - before.sent
    failed = after.failed - before.failed
    detail = f"{queued}/60 queued, {sent} delivered in the background, {failed} failed"
    if not settled:
        detail += ", flush timed out"
    return StepOutcome(f"background calls: {detail}", lost=60 - sent)


async def unknown_model(fg: FluxGate, rng: random.Random) -> StepOutcome:
    """A call to an in-house model the price tables do not know."""
    answer = await fg.record_event(
        LLMEvent(
            AiEventUsage(1200, 300, model="acme-llm-7b", provider="self-hosted"),
            metadata=AiEventMetadata(feature="search", user="user-linus"),
        )
    )
    return _outcome(
        "unknown model:   ",
        answer,
        lambda a: f"recorded as {a.id}, cost {_money(a.cost)} (no price for acme-llm-7b)",
    )


async def failed_call(fg: FluxGate, rng: random.Random) -> StepOutcome:
    """A call the provider failed: recorded with status ERROR and its message."""
    answer = await fg.record_event(
        LLMEvent(
            AiEventUsage(850, 0, model="gpt-4o", provider="openai", latency_in_ms=30000.0),
            status="ERROR",
            error_message="provider timed out after 30s",
            metadata=AiEventMetadata(feature="chat", user="user-ada"),
        )
    )
    return _outcome(
        "failed call:     ",
        answer,
        lambda a: f"recorded as {a.id}, status ERROR, cost {_money(a.cost)}",
    )


async def _fake_stream(rng: random.Random, words: int) -> AsyncIterator[str]:
    """A stand-in for a provider's streamed answer: words arriving a few ms apart."""
    for n in range(words):
        await asyncio.sleep(rng.uniform(0.001, 0.004))
        yield f"word{n} "


async def streamed_call(fg: FluxGate, rng: random.Random) -> StepOutcome:
    """A streamed answer from a provider without a wrapper, tracked with `fg.track`."""
    with tracking_context(feature="chat", user="user-grace", session_id="session-stream"):
        async with fg.track(model="gpt-4o", provider="openai", mode="inline") as call:
            started = time.monotonic()
            chunks = [chunk async for chunk in _fake_stream(rng, 40)]
            call.is_streamed = True
            call.streaming_duration_in_ms = round((time.monotonic() - started) * 1000, 1)
            call.set_usage(input_tokens=640, output_tokens=len(chunks))
    tracking = call.tracking
    if tracking is None or tracking.tracking_id is None:
        return StepOutcome("streamed call:    not recorded", lost=1)
    return StepOutcome(
        f"streamed call:    {len(chunks)} chunks in {call.streaming_duration_in_ms} ms, "
        f"cost {_money(tracking.cost)}"
    )


DEMO_STEPS: tuple[Step, ...] = (
    awaited_calls,
    background_calls,
    streamed_call,
    unknown_model,
    failed_call,
)
"""The workload, in order; each step is one kind of tracked call."""


async def run_demo(steps: tuple[Step, ...] = DEMO_STEPS) -> int:
    """Run the demo and print its report; return the exit status (1 if an event was lost).

    Raises:
        MissingExtraError: The `collector` extra is not installed.
    """
    rng = random.Random(2026)  # the same workload every run
    # Kept after the demo, so that the user can report on it; a new folder each run.
    db = Path(tempfile.mkdtemp(prefix="fluxgate-demo-")) / "demo.sqlite"
    lost = 0
    async with Collector(db, api_keys=[_KEY]) as collector:
        print(f"collector listening on {collector.base_url} (database {db})", flush=True)
        async with FluxGate(_KEY, endpoint=collector.url) as fg:
            for step in steps:
                outcome = await step(fg, rng)
                lost += outcome.lost
                print(outcome.summary, flush=True)
    print("collector stopped; database closed\n", flush=True)
    conn = connect_readonly(db)
    try:
        by_model = summarise(conn, "model")
        by_feature = summarise(conn, "feature")
    finally:
        conn.close()
    print_report(by_model, by="model", fmt="table")
    print_report(by_feature, by="feature", fmt="table")
    print(_next_steps(db))
    if lost:
        print(f"{lost} event(s) were not recorded: see the warnings above", file=sys.stderr)
    return 1 if lost else 0


def _next_steps(db: Path) -> str:
    return (
        f"\nThe events are kept in {db}. Next:\n"
        f"  1. Slice them another way:  fluxgate-async report --db {db} --by user\n"
        "  2. Record your own app's calls: run `fluxgate-async serve`, then\n"
        "     export FLUXGATE_API_KEY=local FLUXGATE_ENDPOINT=http://127.0.0.1:8787/api/events\n"
        "  3. Read the tutorial: https://fluxgate.app/docs/python/tutorial/"
    )
