"""The reasons `on_error` gets and `stats` counts: a public vocabulary, each produced by its path.

Users branch on these strings, so each is spelled out here as a literal, and
driven through the path that produces it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fluxgate_async import (
    AiEventMetadata,
    AiEventUsage,
    DeliveryStats,
    DropReason,
    FailureReason,
    FluxGate,
    LLMEvent,
)
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY

DOWN = "http://127.0.0.1:9/api/events"  # nothing listens on the discard port
EVENT = {"usage": {"inputTokens": 1, "outputTokens": 1}}

# What one scenario saw: the reasons on_error was given, and the final stats.
Seen = tuple[list[str], DeliveryStats]
Scenario = Callable[[FakeCollector, pytest.MonkeyPatch], Awaitable[Seen]]


def _client(url: str, seen: list[str], **options: Any) -> FluxGate:
    return FluxGate(
        API_KEY, endpoint=url, on_error=lambda _event, reason: seen.append(reason), **options
    )


async def _refused(collector: FakeCollector, event: Any = EVENT, **options: Any) -> Seen:
    """One event refused by record_event_nowait."""
    seen: list[str] = []
    async with _client(collector.url, seen, **options) as fg:
        assert fg.record_event_nowait(event) is False
    return seen, fg.stats


async def _given_up(url: str, **options: Any) -> Seen:
    """One event queued, then given up on by the sender."""
    seen: list[str] = []
    async with _client(url, seen, **options) as fg:
        assert fg.record_event_nowait(EVENT)
        assert await fg.flush(5)
    return seen, fg.stats


async def queue_full(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """A second event while the only queue slot is taken."""
    seen: list[str] = []
    async with _client(collector.url, seen, max_queue_size=1) as fg:
        assert fg.record_event_nowait(EVENT)
        assert fg.record_event_nowait(EVENT) is False
    return seen, fg.stats


async def closed(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """An event recorded after aclose()."""
    seen: list[str] = []
    fg = _client(collector.url, seen)
    await fg.aclose()
    assert fg.record_event_nowait(EVENT) is False
    return seen, fg.stats


async def invalid_event(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """A negative token count."""
    return await _refused(collector, {"usage": {"inputTokens": -1, "outputTokens": 1}})


async def too_large(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """An event over max_event_bytes."""
    big = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(feature="f" * 2000))
    return await _refused(collector, big, max_event_bytes=1000)


async def before_send(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """before_send returns None: dropped on purpose."""
    return await _refused(collector, before_send=lambda _event: None)


def _raise(_event: LLMEvent) -> LLMEvent:
    raise RuntimeError("redaction bug")


async def before_send_error(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """before_send raises."""
    return await _refused(collector, before_send=_raise)


async def disabled(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """enabled=False."""
    return await _refused(collector, enabled=False)


async def shutdown(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """aclose() runs out of time with the event in flight."""
    collector.responder = lambda _: Reply(delay=30)
    seen: list[str] = []
    fg = _client(collector.url, seen, timeout=20)
    assert fg.record_event_nowait(EVENT)
    async with asyncio.timeout(3):
        while fg.stats.in_flight == 0:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
    await fg.aclose(timeout=0.1)
    return seen, fg.stats


async def internal_error_at_enqueue(
    collector: FakeCollector, monkeypatch: pytest.MonkeyPatch
) -> Seen:
    """A bug below record_event_nowait."""

    def bug(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("fluxgate_async._delivery.Pipeline.submit", bug)
    return await _refused(collector)


async def outbox_full(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """A second event while the outbox's only slot is taken."""
    collector.responder = lambda _: Reply(delay=30)
    seen: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        fg = _client(collector.url, seen, outbox=directory, outbox_max_events=1, timeout=20)
        assert fg.record_event_nowait(EVENT)
        assert fg.record_event_nowait(EVENT) is False
        await fg.aclose(timeout=0.1)  # the first is kept on disk, not dropped
    return seen, fg.stats


async def expired(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """An event left in the outbox for longer than outbox_max_age."""
    collector.responder = lambda _: Reply(delay=30)
    with tempfile.TemporaryDirectory() as directory:
        first = _client(collector.url, [], outbox=directory, timeout=20)
        assert first.record_event_nowait(EVENT)
        await first.aclose(timeout=0.1)
        collector.responder = None
        await asyncio.sleep(0.05)
        seen: list[str] = []
        async with _client(collector.url, seen, outbox=directory, outbox_max_age=0.01) as fg:
            assert await fg.flush(5)
    return seen, fg.stats


async def connection(_collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """Nothing listens at the endpoint."""
    return await _given_up(DOWN, max_retries=0)


async def timeout(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """The server does not answer within `timeout`."""
    collector.responder = lambda _: Reply(delay=30)
    return await _given_up(collector.url, timeout=0.2, max_retries=0)


async def invalid_response(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """A 200 whose body is not JSON."""
    collector.responder = lambda _: Reply(body="recorded!")
    return await _given_up(collector.url)


async def http_422(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """A 4xx the client does not retry."""
    collector.responder = lambda _: Reply(status=422)
    return await _given_up(collector.url)


async def http_503(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """A 5xx on every attempt."""
    collector.responder = lambda _: Reply(status=503, retry_after=0)
    return await _given_up(collector.url, max_retries=1)


async def invalid_event_in_the_sender(collector: FakeCollector, _mp: pytest.MonkeyPatch) -> Seen:
    """A list filled with bytes after the event was queued."""
    items: list[object] = []
    seen: list[str] = []
    async with _client(collector.url, seen) as fg:
        late = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra={"items": items}))
        assert fg.record_event_nowait(late)
        items.append(b"late")
        assert await fg.flush(5)
    return seen, fg.stats


async def internal_error_in_the_sender(
    collector: FakeCollector, monkeypatch: pytest.MonkeyPatch
) -> Seen:
    """A bug below the sender."""

    async def bug(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("fluxgate_async._transport.Transport.post", bug)
    return await _given_up(collector.url)


# (the exact string, its constant, the path that produces it, how it is counted)
DROPS: list[tuple[str, str, Scenario, bool]] = [
    ("queue_full", DropReason.QUEUE_FULL, queue_full, True),
    ("closed", DropReason.CLOSED, closed, True),
    ("invalid_event", DropReason.INVALID_EVENT, invalid_event, True),
    ("too_large", DropReason.TOO_LARGE, too_large, True),
    ("before_send", DropReason.BEFORE_SEND, before_send, False),
    ("before_send_error", DropReason.BEFORE_SEND_ERROR, before_send_error, True),
    ("disabled", DropReason.DISABLED, disabled, False),
    ("shutdown", DropReason.SHUTDOWN, shutdown, True),
    ("internal_error", DropReason.INTERNAL_ERROR, internal_error_at_enqueue, True),
    ("outbox_full", DropReason.OUTBOX_FULL, outbox_full, True),
    ("expired", DropReason.EXPIRED, expired, True),
]
FAILURES: list[tuple[str, str, Scenario]] = [
    ("connection", FailureReason.CONNECTION, connection),
    ("timeout", FailureReason.TIMEOUT, timeout),
    ("invalid_response", FailureReason.INVALID_RESPONSE, invalid_response),
    ("http_422", FailureReason.http(422), http_422),
    ("http_503", FailureReason.http(503), http_503),
    ("invalid_event", FailureReason.INVALID_EVENT, invalid_event_in_the_sender),
    ("internal_error", FailureReason.INTERNAL_ERROR, internal_error_in_the_sender),
]


@pytest.mark.parametrize(
    ("reason", "constant", "scenario", "reported"), DROPS, ids=[d[0] for d in DROPS]
)
async def test_each_drop_reason_is_counted_and_reported_exactly_so(
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
    reason: str,
    constant: str,
    scenario: Scenario,
    reported: bool,
) -> None:
    """The path behind each DropReason counts the event under that exact key and tells on_error."""
    assert constant == reason
    seen, stats = await scenario(collector, monkeypatch)
    assert stats.dropped == {reason: 1}
    assert seen == ([reason] if reported else [])


@pytest.mark.parametrize(("reason", "constant", "scenario"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_each_failure_reason_reaches_on_error_exactly_so(
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
    reason: str,
    constant: str,
    scenario: Scenario,
) -> None:
    """The path behind each FailureReason fails the event and gives on_error that exact string."""
    assert constant == reason
    seen, stats = await scenario(collector, monkeypatch)
    assert seen == [reason]
    assert (stats.failed, stats.sent, stats.dropped_total) == (1, 0, 0)


def _constants(cls: type) -> set[str]:
    return {value for name, value in vars(cls).items() if name.isupper()}


def test_every_documented_reason_has_its_path_tested() -> None:
    """A reason added to DropReason or FailureReason without a test here fails this test."""
    assert _constants(DropReason) == {reason for reason, *_ in DROPS}
    tested = {reason for reason, *_ in FAILURES}
    assert _constants(FailureReason) - {FailureReason.HTTP_PREFIX} == {
        reason for reason in tested if not reason.startswith("http_")
    }
    assert FailureReason.HTTP_PREFIX == "http_"
