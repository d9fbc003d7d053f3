"""What `record_event` logs, line by line: the key, where it went, why it was not recorded."""

from __future__ import annotations

import logging
import re

import pytest

from fluxgate_async import FluxGate
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY

SIMPLE = {"usage": {"inputTokens": 100, "outputTokens": 50}}


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


async def test_a_refused_event_is_one_warning_with_its_key_and_the_answer(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 is not retried: 'event <key> not recorded: HTTP 401: <body>', once."""
    collector.reply_with(Reply(status=401, body="unknown key"))
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: HTTP 401: 'unknown key'"
    ]


async def test_retries_given_up_say_how_many_attempts_were_made(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Three 503s with max_retries=2: the WARNING ends '(after 3 attempts)'."""
    collector.reply_with(*[Reply(status=503, body="busy", retry_after=0.01)] * 3)
    async with FluxGate(API_KEY, endpoint=collector.url, max_retries=2) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert len(collector.requests) == 3
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: HTTP 503: 'busy' (after 3 attempts)"
    ]


async def test_a_retry_that_would_pass_the_deadline_is_not_waited_for(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry-After 5 s within a 1 s timeout: given up at once, and the WARNING says why."""
    collector.reply_with(Reply(status=503, body="busy", retry_after=5))
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=1) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert len(collector.requests) == 1
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: HTTP 503: 'busy'; "
        "retry in 5.00s would pass the deadline"
    ]


async def test_no_answer_within_the_timeout_is_one_warning_with_the_timeout(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A hanging server: 'event <key> not recorded: no answer within 0.3s'."""
    collector.responder = lambda _: Reply(delay=30)
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=0.3) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: no answer within 0.3s"
    ]


async def test_debug_names_the_key_the_endpoint_the_body_and_the_answer(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG: 'sending event <key> to <endpoint>: <body>', then '<key> recorded: <answer>'."""
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url) as fg:
            answer = await fg.record_event(SIMPLE)
    assert answer is not None
    request = collector.requests[0]
    key = request.idempotency_key
    debug = _messages(caplog, logging.DEBUG)
    assert f"FluxGate: sending event {key} to {collector.url}: {request.body!r}" in debug
    assert f"FluxGate: event {key} recorded: {answer}" in debug


async def test_a_bug_below_record_event_is_an_error_line_and_details_at_debug(
    fg: FluxGate, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception: one ERROR with its message; its traceback only at DEBUG."""

    def buggy(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("fluxgate_async._client.check_event", buggy)
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        assert await fg.record_event(SIMPLE) is None
    assert _messages(caplog, logging.ERROR) == [
        "FluxGate: unexpected error, event not recorded: boom"
    ]
    details_line = "FluxGate: unexpected error details"
    [details] = [r for r in caplog.records if r.getMessage() == details_line]
    assert details.levelno == logging.DEBUG
    assert details.exc_info is not None
    assert re.search(r"RuntimeError: boom", caplog.text)
