"""FakeCollector behaves like the API and can be scripted, as users' own tests need."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fluxgate_async import FluxGate
from fluxgate_async.testing import FakeCollector, Reply

SIMPLE = {"usage": {"inputTokens": 1, "outputTokens": 2}}


async def test_url_needs_a_started_collector() -> None:
    """Asking for the URL before start says how to start it."""
    with pytest.raises(RuntimeError, match="async with FakeCollector"):
        _ = FakeCollector().url


async def test_api_key_is_enforced_when_given() -> None:
    """With api_key set, a wrong bearer gets 401 and is not recorded as an event."""
    async with FakeCollector(api_key="right") as c:
        async with FluxGate("wrong", endpoint=c.url) as fg:
            assert await fg.record_event(SIMPLE) is None
        async with FluxGate("right", endpoint=c.url) as fg:
            assert await fg.record_event(SIMPLE) is not None
        assert len(c.requests) == 2
        assert len(c.events) == 1


async def test_repeated_idempotency_key_gets_the_first_answer(collector: FakeCollector) -> None:
    """A retried event is answered with its original id and recorded once."""
    headers = {"Idempotency-Key": "k-1"}
    async with aiohttp.ClientSession() as session:
        async with session.post(collector.url, json=SIMPLE, headers=headers) as first:
            first_body = await first.json()
        async with session.post(collector.url, json=SIMPLE, headers=headers) as second:
            second_body = await second.json()
    assert first_body == second_body
    assert len(collector.requests) == 2
    assert collector.events == [SIMPLE]


async def test_scripted_replies_then_the_default(collector: FakeCollector) -> None:
    """Queued replies are used in order, then answers go back to success."""
    collector.reply_with(Reply(status=418, body="teapot", headers={"X-Why": "scripted"}))
    async with aiohttp.ClientSession() as session:
        async with session.post(collector.url, data=b"not json") as resp:
            assert resp.status == 418
            assert resp.headers["X-Why"] == "scripted"
            assert await resp.text() == "teapot"
        async with session.post(collector.url, json=SIMPLE) as resp:
            body = await resp.json()
            assert resp.status == 200
    assert collector.requests[0].json is None
    assert set(body) == {"id", "createdAt", "cost", "status"}
    assert collector.events == [SIMPLE]


async def test_cost_can_be_null() -> None:
    """FakeCollector(cost=None) answers an unpriced event, which the client reads as None."""
    async with FakeCollector(cost=None) as c, FluxGate("k", endpoint=c.url) as client:
        answer = await client.record_event(SIMPLE)
    assert answer is not None
    assert answer.cost is None


async def test_wait_for_events_has_a_deadline(collector: FakeCollector) -> None:
    """Waiting for events that never come raises TimeoutError on time."""
    with pytest.raises(TimeoutError):
        await collector.wait_for_events(1, timeout=0.1)


async def test_closing_abandons_delayed_answers() -> None:
    """Closing the collector does not wait out a scripted delay."""
    c = FakeCollector(responder=lambda _: Reply(delay=60))
    await c.start()
    async with FluxGate("k", endpoint=c.url, timeout=5, max_retries=0) as fg:
        pending = asyncio.create_task(fg.record_event(SIMPLE))
        await asyncio.sleep(0.2)
        await c.aclose()
        assert await asyncio.wait_for(pending, 3) is None
    assert c.events == []  # cut off before answering: not accepted
