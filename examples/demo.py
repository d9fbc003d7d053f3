"""Record a few events against an in-process FakeCollector and print each answer."""

import asyncio

from fluxgate_async import AiEventMetadata, AiEventUsage, FluxGate, LLMEvent
from fluxgate_async.testing import FakeCollector


async def main() -> None:
    """Run the demo: two successful calls and one failed call, awaited."""
    async with FakeCollector() as collector, FluxGate("demo-key", endpoint=collector.url) as fg:
        print(f"FakeCollector listening at {collector.url}")
        answer = await fg.record_event(
            LLMEvent(
                AiEventUsage(input_tokens=120, output_tokens=48, model="gpt-4o", provider="openai"),
                metadata=AiEventMetadata(feature="chat", user="user-123"),
            )
        )
        print("model event  ->", answer)
        answer = await fg.record_event(
            {  # the TypeScript SDK's shape works too
                "usage": {"inputTokens": 900, "outputTokens": 310, "model": "claude-sonnet-4-5"},
                "metadata": {"feature": "summarise", "sessionId": "s-1"},
            }
        )
        print("mapping event ->", answer)
        answer = await fg.record_event(
            LLMEvent(AiEventUsage(0, 0), status="ERROR", error_message="provider timed out")
        )
        print("error event  ->", answer)
        print(f"the collector received {len(collector.events)} events")


if __name__ == "__main__":
    asyncio.run(main())
