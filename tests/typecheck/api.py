"""How the public API type-checks in user code: mypy --strict runs over this, pytest never does."""

from __future__ import annotations

from pathlib import Path

import attrs

import fluxgate_async
from fluxgate_async import (
    AiEventMetadata,
    AiEventStatus,
    AiEventUsage,
    CreateAiEventResponse,
    DeliveryStats,
    FluxGate,
    LLMEvent,
    TrackedUser,
)


def redact(event: LLMEvent) -> LLMEvent | None:
    """A before_send hook as users write it."""
    if event.metadata is None:
        return event
    return attrs.evolve(event, metadata=attrs.evolve(event.metadata, user=None))


def report(event: object, reason: str) -> None:
    """An on_error hook as users write it."""


async def record() -> None:
    """Every recording path with the types a user sees."""
    fg = FluxGate(
        "key",
        endpoint="https://fluxgate.app/api/events",
        timeout=2.5,
        max_retries=3,
        before_send=redact,
        on_error=report,
        max_queue_size=1_000,
        concurrency=4,
        enabled=True,
    )
    async with fg:
        event = LLMEvent(
            AiEventUsage(100, 50, cached_tokens=10, model="gpt-4o", latency_in_ms=12.5),
            status=AiEventStatus.MAX_TOKENS,
            metadata=AiEventMetadata(
                feature="chat", user=TrackedUser("u-1", monthly_revenue=9.5), extra={"k": [1]}
            ),
        )
        answer: CreateAiEventResponse | None = await fg.record_event(event)
        if answer is not None:
            cost: float | None = answer.cost
            print(answer.id, answer.created_at, cost)
        await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 2}, "status": "ERROR"})
        queued: bool = fg.record_event_nowait(LLMEvent(AiEventUsage(1, 1), status="ERROR"))
        settled: bool = await fg.flush(timeout=1.0)
        stats: DeliveryStats = fg.stats
        print(queued, settled, stats.dropped_total, fluxgate_async.__version__)
        print(stats.persisted, stats.recovered, stats.kept, stats.memory_only)
    durable = FluxGate(
        "key",
        outbox=Path("/var/lib/myapp/fluxgate-outbox"),
        outbox_max_events=100_000,
        outbox_max_bytes=64 * 1024 * 1024,
        outbox_max_age=86_400.0,
    )
    await durable.aclose()
    await fg.aclose(timeout=1.0)
