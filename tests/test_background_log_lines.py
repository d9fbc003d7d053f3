"""What background delivery logs, line by line: the event's key, the attempts, the reason, whole."""

from __future__ import annotations

import logging
import re

import pytest

from fluxgate_async import AiEventMetadata, AiEventUsage, FluxGate, LLMEvent
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_an_event_given_up_on_is_one_warning_with_its_key_attempts_and_answer(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Two 503s with max_retries=1: one WARNING naming the key, '2 attempt(s)' and the answer."""
    collector.reply_with(Reply(status=503, body="busy"), Reply(status=503, body="still busy"))
    async with FluxGate(API_KEY, endpoint=collector.url, max_retries=1) as fg:
        assert fg.record_event_nowait(LLMEvent(AiEventUsage(1, 1)))
        assert await fg.flush(10)
    key = collector.requests[0].idempotency_key
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded after 2 attempt(s): HTTP 503: 'still busy'"
    ]


async def test_a_background_timeout_is_logged_with_the_deadline(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """No answer within `timeout`: the WARNING says so, in seconds, after the one attempt."""
    collector.reply_with(Reply(delay=30))
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=0.2, max_retries=0) as fg:
        assert fg.record_event_nowait(LLMEvent(AiEventUsage(1, 1)))
        assert await fg.flush(10)
    key = collector.requests[0].idempotency_key
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded after 1 attempt(s): no answer within 0.2s"
    ]


async def test_debug_logs_each_retry_with_its_delay_and_the_answer_recorded(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG: the failed attempt with its reason and delay, then the answer, under one key."""
    collector.reply_with(Reply(status=503, body="busy", retry_after=0.01))
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url, max_retries=1) as fg:
            assert fg.record_event_nowait(LLMEvent(AiEventUsage(1, 1)))
            assert await fg.flush(10)
    key = collector.requests[0].idempotency_key
    debug = _messages(caplog, logging.DEBUG)
    assert f"FluxGate: event {key}: HTTP 503: 'busy'; retrying in 0.01s" in debug
    [recorded] = [m for m in debug if m.startswith(f"FluxGate: event {key} recorded: ")]
    assert re.fullmatch(
        rf"FluxGate: event {key} recorded: CreateAiEventResponse\(id='.+', .+\)", recorded
    )


async def test_an_event_that_became_unencodable_is_one_warning_naming_the_field(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A value changed after queueing: 'invalid event, not sent' and the field, nothing posted."""
    items: list[object] = []
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        bad = LLMEvent(AiEventUsage(1, 0), metadata=AiEventMetadata(extra={"items": items}))
        assert fg.record_event_nowait(bad)
        items.append(b"late")
        assert await fg.flush(5)
    [warning] = _messages(caplog, logging.WARNING)
    assert warning.startswith("FluxGate: invalid event, not sent: ")
    assert "metadata.items[0]: bytes is not JSON; pass a str" in warning
    assert collector.requests == []
