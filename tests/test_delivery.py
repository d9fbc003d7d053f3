"""Background delivery: fire-and-forget recording that never hangs and never loses silently."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import re
import time
from typing import Any

import attrs
import pytest

import fluxgate_async._delivery
from fluxgate_async import (
    AiEventMetadata,
    AiEventUsage,
    DeliveryStats,
    DropReason,
    FluxGate,
    LLMEvent,
)
from fluxgate_async._retry import backoff_delay
from fluxgate_async.testing import FakeCollector, RecordedRequest, Reply

from .conftest import API_KEY

DOWN = "http://127.0.0.1:9/api/events"  # nothing listens on the discard port


def event(n: int = 1, **meta: Any) -> LLMEvent:
    """A small valid event whose input token count identifies it."""
    return LLMEvent(AiEventUsage(n, 1), metadata=AiEventMetadata(**meta) if meta else None)


def accounted(stats: DeliveryStats) -> int:
    """Every enqueued event, counted where it ended up."""
    return (
        stats.sent
        + stats.failed
        + stats.queued
        + stats.in_flight
        + stats.dropped.get(DropReason.SHUTDOWN, 0)
    )


async def wait_until(condition: Any, timeout: float = 3.0) -> None:
    """Poll `condition` every 10 ms until true, failing after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling state that has no event to wait on
            await asyncio.sleep(0.01)


async def test_nowait_queues_and_flush_delivers(collector: FakeCollector) -> None:
    """Queued events reach the server; flush returns True once all are acknowledged."""
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        assert all(fg.record_event_nowait(event(n)) for n in range(20))
        assert fg.stats.enqueued == 20
        assert await fg.flush(timeout=5) is True
        stats = fg.stats
    assert stats == DeliveryStats(enqueued=20, sent=20)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(20))
    assert len({r.idempotency_key for r in collector.requests}) == 20


async def test_nowait_takes_mappings_and_refuses_invalid_ones(collector: FakeCollector) -> None:
    """The same inputs as record_event; invalid ones are refused at once and counted."""
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        assert fg.record_event_nowait({"usage": {"inputTokens": 3, "outputTokens": 4}})
        assert not fg.record_event_nowait({"usage": {"inputTokens": -3, "outputTokens": 4}})
        assert not fg.record_event_nowait(42)  # type: ignore[arg-type]
        await fg.flush(5)
        assert fg.stats.dropped == {DropReason.INVALID_EVENT: 2}
    assert collector.events == [
        {"usage": {"inputTokens": 3, "outputTokens": 4}, "status": "SUCCESS"}
    ]


async def test_flapping_server_delivers_every_event_exactly_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """5,000 events through 503s with Retry-After, dropped connections and successes."""
    # The same jittered backoff, 25 times shorter: the default's ~750 waits after a dropped
    # connection made up most of this test's time, and what it pins is exactly-once delivery.
    monkeypatch.setattr(
        fluxgate_async._delivery, "backoff_delay", functools.partial(backoff_delay, base=0.01)
    )
    rng = random.Random(20261126)
    failures: collections.Counter[str] = collections.Counter()

    def flap(request: RecordedRequest) -> Reply:
        key = request.idempotency_key or ""
        # At most two failures per event, so three attempts always suffice.
        if failures[key] < 2 and rng.random() < 0.3:
            failures[key] += 1
            return rng.choice([Reply(status=503, retry_after=0), Reply(drop=True)])
        return Reply()

    async with (
        FakeCollector(responder=flap) as collector,
        FluxGate(API_KEY, endpoint=collector.url, concurrency=16, max_retries=2, timeout=5) as fg,
    ):
        for n in range(5_000):
            assert fg.record_event_nowait(event(n))
        assert await fg.flush(timeout=90)
        stats = fg.stats
    assert stats.sent == 5_000
    assert (stats.failed, stats.queued, stats.in_flight, stats.dropped_total) == (0, 0, 0, 0)
    assert stats.retried == sum(failures.values()) > 0
    per_key = collections.Counter(r.idempotency_key or "" for r in collector.requests)
    assert len(per_key) == 5_000
    # A key is seen again only because its earlier attempts failed.
    assert all(seen == failures[key] + 1 for key, seen in per_key.items())
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(5_000))


async def test_server_down_keeps_memory_bounded_and_close_on_time() -> None:
    """With the server down the queue stops at its bound, refusals are counted by reason."""
    lost: list[str] = []
    fg = FluxGate(
        API_KEY,
        endpoint=DOWN,
        max_queue_size=100,
        concurrency=4,
        max_retries=50,
        on_error=lambda _event, reason: lost.append(reason),
    )
    accepted = [fg.record_event_nowait(event(n)) for n in range(1_000)]
    assert accepted.count(True) == 100
    await asyncio.sleep(0.3)  # the senders take some and start failing
    stats = fg.stats
    assert stats.queued <= 100
    assert stats.dropped == {DropReason.QUEUE_FULL: 900}
    assert stats.retried > 0
    started = time.monotonic()
    await fg.aclose(timeout=1)
    assert time.monotonic() - started < 1.5
    stats = fg.stats
    assert stats.sent == 0
    assert stats.enqueued == 100 == accounted(stats)
    assert stats.dropped[DropReason.SHUTDOWN] + stats.failed == 100
    assert len(lost) == 1_000
    assert collections.Counter(lost)[DropReason.QUEUE_FULL] == 900


async def test_flush_on_a_hanging_server_returns_false_on_time(collector: FakeCollector) -> None:
    """flush(timeout) gives up in time rather than hanging, and nothing is lost by it."""
    collector.responder = lambda _: Reply(delay=30)
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=20) as fg:
        fg.record_event_nowait(event())
        started = time.monotonic()
        assert await fg.flush(timeout=0.3) is False
        assert 0.3 <= time.monotonic() - started < 0.8
        assert fg.stats.in_flight == 1
        await fg.aclose(timeout=0.2)
        assert fg.stats.dropped == {DropReason.SHUTDOWN: 1}


async def test_cancelling_a_flush_caller_propagates(collector: FakeCollector) -> None:
    """A task waiting in flush is cancellable like any other await."""
    collector.responder = lambda _: Reply(delay=30)
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=20) as fg:
        fg.record_event_nowait(event())
        waiter = asyncio.create_task(fg.flush())
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await fg.aclose(timeout=0.1)


async def test_flush_with_nothing_queued_returns_at_once(fg: FluxGate) -> None:
    """A flush with an empty queue does not wait."""
    assert await fg.flush(timeout=0.01) is True


async def test_events_from_a_cancelled_task_are_still_delivered(
    collector: FakeCollector,
) -> None:
    """Recording works in a `finally` during cancellation, and the event survives the task."""
    started = asyncio.Event()

    async with FluxGate(API_KEY, endpoint=collector.url) as fg:

        async def handler() -> None:
            try:
                fg.record_event_nowait(event(1))
                started.set()
                await asyncio.sleep(30)
            finally:
                fg.record_event_nowait(
                    LLMEvent(AiEventUsage(2, 0), status="ERROR", error_message="cancelled")
                )

        task = asyncio.create_task(handler())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await fg.flush(5)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == [1, 2]


async def test_before_send_redacts_and_drops(collector: FakeCollector) -> None:
    """before_send may return a changed copy, or None to drop, for both recording paths."""

    def redact(ev: LLMEvent) -> LLMEvent | None:
        if ev.metadata is not None and ev.metadata.feature == "internal":
            return None
        meta = ev.metadata or AiEventMetadata()
        return attrs.evolve(ev, metadata=attrs.evolve(meta, user=None))

    async with FluxGate(API_KEY, endpoint=collector.url, before_send=redact) as fg:
        assert fg.record_event_nowait(event(1, user="alice@example.com", feature="chat"))
        assert not fg.record_event_nowait(event(2, feature="internal"))
        assert await fg.record_event(event(3, user="bob", feature="chat")) is not None
        assert await fg.record_event(event(4, feature="internal")) is None
        await fg.flush(5)
        assert fg.stats.dropped == {DropReason.BEFORE_SEND: 1}
    metas = sorted((e["usage"]["inputTokens"], e["metadata"]) for e in collector.events)
    assert metas == [(1, {"feature": "chat"}), (3, {"feature": "chat"})]


async def test_before_send_errors_are_contained_and_counted(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A before_send that raises or returns junk drops the event; the app is unaffected."""
    calls = 0

    def broken(ev: LLMEvent) -> LLMEvent | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("metadata")
        return "not an event"  # type: ignore[return-value]

    errors: list[str] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        before_send=broken,
        on_error=lambda _e, reason: errors.append(reason),
    ) as fg:
        assert not fg.record_event_nowait(event())
        assert not fg.record_event_nowait(event())
        assert await fg.record_event(event()) is None
        assert fg.stats.dropped == {DropReason.BEFORE_SEND_ERROR: 2}
    assert errors == [DropReason.BEFORE_SEND_ERROR] * 2
    assert collector.requests == []
    assert "before_send raised" in caplog.text
    assert "before_send must return an LLMEvent or None, got str" in caplog.text


async def test_on_error_is_called_once_per_lost_event(collector: FakeCollector) -> None:
    """Refused, rejected-by-server and unencodable events each reach on_error exactly once."""
    collector.responder = lambda r: (
        Reply(status=400) if r.json and r.json["usage"]["inputTokens"] % 2 else Reply()
    )
    lost: list[tuple[int, str]] = []

    def on_error(ev: Any, reason: str) -> None:
        n = ev.usage.input_tokens if isinstance(ev, LLMEvent) else -1
        lost.append((n, reason))

    async with FluxGate(
        API_KEY, endpoint=collector.url, on_error=on_error, max_queue_size=10
    ) as fg:
        for n in range(12):
            fg.record_event_nowait(event(n))
        fg.record_event_nowait(
            LLMEvent(AiEventUsage(100, 0), metadata=AiEventMetadata(extra={"x": object()}))
        )
        assert await fg.flush(5)
        stats = fg.stats
    assert sorted(lost) == [
        (1, "http_400"),
        (3, "http_400"),
        (5, "http_400"),
        (7, "http_400"),
        (9, "http_400"),
        (10, DropReason.QUEUE_FULL),
        (11, DropReason.QUEUE_FULL),
        (100, DropReason.INVALID_EVENT),
    ]
    assert (stats.sent, stats.failed, stats.dropped) == (
        5,
        5,
        {DropReason.QUEUE_FULL: 2, DropReason.INVALID_EVENT: 1},
    )


async def test_unencodable_event_is_refused_when_recorded(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """An extra value JSON cannot hold is refused at once: False, counted, named, on_error."""
    reasons: list[str] = []
    async with FluxGate(
        API_KEY, endpoint=collector.url, on_error=lambda _e, r: reasons.append(r)
    ) as fg:
        bad = LLMEvent(AiEventUsage(1, 0), metadata=AiEventMetadata(extra={"x": {1, 2}}))
        assert fg.record_event_nowait(bad) is False
        assert await fg.flush(5)
        assert fg.stats.dropped == {DropReason.INVALID_EVENT: 1}
        assert fg.stats.enqueued == 0
    assert reasons == [DropReason.INVALID_EVENT]
    assert "metadata.x: set is not JSON; pass a list" in caplog.text
    assert collector.requests == []


async def test_a_value_changed_after_recording_fails_in_the_sender(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A list filled with bytes after the event was queued fails, counted, reported, named."""
    reasons: list[str] = []
    items: list[object] = []
    async with FluxGate(
        API_KEY, endpoint=collector.url, on_error=lambda _e, r: reasons.append(r)
    ) as fg:
        bad = LLMEvent(AiEventUsage(1, 0), metadata=AiEventMetadata(extra={"items": items}))
        assert fg.record_event_nowait(bad)
        items.append(b"late")
        assert await fg.flush(5)
        assert fg.stats.failed == 1
    assert reasons == [DropReason.INVALID_EVENT]
    assert "metadata.items[0]: bytes is not JSON; pass a str" in caplog.text
    assert collector.requests == []


async def test_on_error_that_raises_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    """A broken on_error callback is logged and does not stop anything."""

    def explode(_event: Any, _reason: str) -> None:
        raise RuntimeError("callback bug")

    async with FluxGate(API_KEY, endpoint=DOWN, max_queue_size=1, on_error=explode) as fg:
        assert fg.record_event_nowait(event())
        assert not fg.record_event_nowait(event())
        await fg.aclose(timeout=0.1)
    # One WARNING per call, with the callback's own traceback.
    raised = [r for r in caplog.records if r.exc_info]
    assert raised
    for record in raised:
        assert (record.levelno, record.getMessage()) == (
            logging.WARNING,
            "FluxGate: on_error callback raised",
        )
        assert record.exc_info is not None
        assert repr(record.exc_info[1]) == "RuntimeError('callback bug')"


@pytest.mark.parametrize("how", ["argument", "environment"])
async def test_disabled_client_sends_nothing(
    collector: FakeCollector, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """enabled=False or FLUXGATE_ENABLED=0: no request at all, answers at once."""
    if how == "environment":
        monkeypatch.setenv("FLUXGATE_ENABLED", "0")
        fg = FluxGate(API_KEY, endpoint=collector.url)
    else:
        fg = FluxGate(API_KEY, endpoint=collector.url, enabled=False)
    async with fg:
        assert repr(fg).endswith("disabled>")
        assert await fg.record_event(event()) is None
        assert fg.record_event_nowait(event()) is False
        assert await fg.flush() is True
        assert fg.stats.dropped == {DropReason.DISABLED: 1}
    assert collector.requests == []


def test_enabled_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit enabled=True overrides FLUXGATE_ENABLED=0; any other value enables."""
    monkeypatch.setenv("FLUXGATE_ENABLED", "0")
    assert FluxGate(API_KEY, enabled=True).config.enabled
    monkeypatch.setenv("FLUXGATE_ENABLED", "yes")
    assert FluxGate(API_KEY).config.enabled


@pytest.mark.parametrize("value", ["0", "false", "FALSE", " Off ", "No"])
def test_falsy_environment_values_disable_in_any_case(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """FLUXGATE_ENABLED is read without regard to case or surrounding spaces."""
    monkeypatch.setenv("FLUXGATE_ENABLED", value)
    assert FluxGate(API_KEY).config.enabled is False


def test_the_smallest_bounds_are_accepted() -> None:
    """Each count setting takes its smallest valid value (0 retries, 1 for the others)."""
    config = FluxGate(
        API_KEY,
        max_retries=0,
        max_queue_size=1,
        max_event_bytes=1,
        concurrency=1,
        outbox_max_events=1,
        outbox_max_bytes=1,
    ).config
    assert (
        config.max_retries,
        config.max_queue_size,
        config.max_event_bytes,
        config.concurrency,
        config.outbox_max_events,
        config.outbox_max_bytes,
    ) == (0, 1, 1, 1, 1, 1)


async def test_a_429_pauses_every_sender(collector: FakeCollector) -> None:
    """After a 429 with Retry-After, no sender posts anything until the pause is over.

    The events recorded during the pause are then sent whole, each once.
    """
    collector.reply_with(Reply(status=429, retry_after=0.5))
    async with FluxGate(API_KEY, endpoint=collector.url, concurrency=4) as fg:
        fg.record_event_nowait(event(0))
        await wait_until(lambda: fg.stats.retried == 1)
        for n in range(1, 6):
            fg.record_event_nowait(event(n))
        assert await fg.flush(5)
        assert (fg.stats.sent, fg.stats.failed) == (6, 0)
    limited, *rest = collector.requests
    assert len(rest) == 6
    assert all(r.received_at - limited.received_at >= 0.45 for r in rest)
    assert sorted(e["usage"]["inputTokens"] for e in collector.events) == list(range(6))


async def test_a_503_with_retry_after_delays_only_its_own_event(collector: FakeCollector) -> None:
    """Retry-After on a 503 is that event's wait: an event recorded meanwhile is sent at once."""
    collector.reply_with(Reply(status=503, retry_after=2))
    async with FluxGate(API_KEY, endpoint=collector.url, concurrency=2) as fg:
        fg.record_event_nowait(event(0))
        await wait_until(lambda: fg.stats.retried == 1)
        fg.record_event_nowait(event(1))
        assert await fg.flush(10)
    first, other, retry = collector.requests
    tokens = [r.json["usage"]["inputTokens"] for r in (first, other, retry) if r.json is not None]
    assert tokens == [0, 1, 0]
    assert other.received_at - first.received_at < 1.5  # not held back by the 2 s pause
    assert retry.received_at - first.received_at >= 1.95


async def test_a_background_event_gets_exactly_max_retries_more_attempts(
    collector: FakeCollector,
) -> None:
    """max_retries=2 against 503s: three attempts, then failed and reported; no fourth try."""
    collector.reply_with(*[Reply(status=503, retry_after=0.01)] * 3)
    reasons: list[str] = []
    async with FluxGate(
        API_KEY, endpoint=collector.url, max_retries=2, on_error=lambda _e, r: reasons.append(r)
    ) as fg:
        fg.record_event_nowait(event(1))
        assert await fg.flush(10)
        stats = fg.stats
    assert (stats.sent, stats.failed, stats.retried) == (0, 1, 2)
    assert reasons == ["http_503"]
    assert len(collector.requests) == 3


async def test_at_most_concurrency_posts_in_flight(collector: FakeCollector) -> None:
    """With concurrency=3 and a slow server, requests arrive in waves of three."""
    collector.responder = lambda _: Reply(delay=0.3)
    async with FluxGate(API_KEY, endpoint=collector.url, concurrency=3) as fg:
        for n in range(9):
            fg.record_event_nowait(event(n))
        await wait_until(lambda: len(collector.requests) >= 3)
        await asyncio.sleep(0.15)
        assert len(collector.requests) == 3
        assert fg.stats.in_flight == 3
        assert fg.stats.queued == 6
        assert await fg.flush(5)


async def test_close_refuses_new_events_at_once(collector: FakeCollector) -> None:
    """From the moment aclose starts, nowait refuses (closed) while the queue drains."""
    collector.responder = lambda _: Reply(delay=0.2)
    fg = FluxGate(API_KEY, endpoint=collector.url)
    fg.record_event_nowait(event(1))
    closing = asyncio.create_task(fg.aclose(timeout=5))
    await asyncio.sleep(0.05)
    assert fg.record_event_nowait(event(2)) is False
    await closing
    assert fg.record_event_nowait(event(3)) is False
    assert fg.stats.dropped == {DropReason.CLOSED: 2}
    assert fg.stats.sent == 1
    assert len(collector.events) == 1


async def test_cancelled_close_still_accounts_for_everything(collector: FakeCollector) -> None:
    """Cancelling aclose propagates, and the events it cut off are counted as shutdown."""
    collector.responder = lambda _: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, timeout=20)
    for n in range(3):
        fg.record_event_nowait(event(n))
    await wait_until(lambda: fg.stats.in_flight == 3)
    closing = asyncio.create_task(fg.aclose(timeout=10))
    await asyncio.sleep(0.1)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    stats = fg.stats
    assert stats.dropped == {DropReason.SHUTDOWN: 3}
    assert accounted(stats) == stats.enqueued == 3


def test_queue_outlives_an_event_loop(
    threaded_collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Events queued in one asyncio.run and cut off by its end are sent by the next one."""
    threaded_collector.reply_with(Reply(delay=0.5))
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)

    async def first_run() -> None:
        fg.record_event_nowait(event(1))
        await asyncio.sleep(0.1)  # in flight when the loop ends

    asyncio.run(first_run())
    assert fg.stats.queued == 1
    assert "event loop stopped with 1 event(s) undelivered" in caplog.text
    assert fg.record_event_nowait(event(2))  # no loop running: queued for later

    async def second_run() -> bool:
        fg.record_event_nowait(event(3))
        done = await fg.flush(5)
        await fg.aclose()
        return done

    assert asyncio.run(second_run())
    stats = fg.stats
    assert (stats.enqueued, stats.sent, stats.dropped_total) == (3, 3, 0)
    tokens = sorted(e["usage"]["inputTokens"] for e in threaded_collector.events)
    assert tokens == [1, 2, 3]
    # The event cut off in flight was re-sent with its original key.
    keys = collections.Counter(r.idempotency_key for r in threaded_collector.requests)
    assert sorted(keys.values()) == [1, 1, 2]


async def test_collected_with_pending_events_warns_with_the_count(
    collector: FakeCollector,
) -> None:
    """A client dropped with queued events says how many it lost."""
    collector.responder = lambda _: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, concurrency=1, timeout=20)
    for n in range(3):
        fg.record_event_nowait(event(n))
    await asyncio.sleep(0.1)
    with pytest.warns(ResourceWarning, match=r"3 event\(s\) still pending"):
        del fg  # nothing else refers to it: collected here
    await asyncio.sleep(0.05)  # the abandoned senders unwind


async def test_stats_reconcile_at_quiet_points(collector: FakeCollector) -> None:
    """Sent + failed + queued + in flight + shutdown drops always equals enqueued."""
    collector.responder = lambda r: (
        Reply(status=422) if len(collector.requests) % 3 == 0 else Reply()
    )
    async with FluxGate(API_KEY, endpoint=collector.url, max_queue_size=50) as fg:
        for n in range(80):
            fg.record_event_nowait(event(n))
        assert accounted(fg.stats) == fg.stats.enqueued == 50
        await fg.flush(5)
        stats = fg.stats
    assert accounted(stats) == stats.enqueued
    assert stats.failed > 0
    assert stats.dropped == {DropReason.QUEUE_FULL: 30}


async def test_unexpected_errors_in_nowait_are_contained(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a bug below record_event_nowait comes out as False, a log line, a count, on_error."""
    reasons: list[str] = []

    def buggy(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("fluxgate_async._delivery.Pipeline.submit", buggy)
    async with FluxGate(
        API_KEY, endpoint=collector.url, on_error=lambda _e, r: reasons.append(r)
    ) as fg:
        assert fg.record_event_nowait(event(1)) is False
        assert fg.stats.dropped == {DropReason.INTERNAL_ERROR: 1}
    assert reasons == [DropReason.INTERNAL_ERROR]
    assert "unexpected error, event not queued: boom" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_queue_size": 0}, "max_queue_size must be a positive int"),
        ({"concurrency": 0}, "concurrency must be a positive int"),
        ({"concurrency": 1.5}, "concurrency must be a positive int"),
    ],
)
def test_invalid_delivery_settings_are_configuration_errors(
    kwargs: dict[str, Any], message: str
) -> None:
    """Queue and concurrency bounds are checked at construction."""
    with pytest.raises(ValueError, match=message):
        FluxGate(API_KEY, **kwargs)


@pytest.mark.parametrize("hook", ["before_send", "on_error"])
def test_hooks_must_be_callable(hook: str) -> None:
    """A hook that cannot be called is a TypeError naming it."""
    with pytest.raises(TypeError, match=f"^{hook} must be callable, got str$"):
        FluxGate(API_KEY, **{hook: "print"})  # type: ignore[arg-type]


def test_the_config_shows_the_hooks_and_debug_given() -> None:
    """`fg.config` holds the very hooks and the debug flag the client was built with."""

    def before_send(event: LLMEvent) -> LLMEvent:
        return event

    def on_error(event: object, reason: str) -> None:
        pass

    config = FluxGate(API_KEY, before_send=before_send, on_error=on_error, debug=True).config
    assert config.before_send is before_send
    assert config.on_error is on_error
    assert config.debug is True
    plain = FluxGate(API_KEY).config
    assert (plain.before_send, plain.on_error, plain.debug) == (None, None, False)


async def test_debug_logs_background_failures_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given-up background events are logged with their reason, never with the key."""
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=DOWN, max_retries=1) as fg:
            fg.record_event_nowait(event())
            assert await fg.flush(5)
    assert "not recorded after 2 attempt(s)" in caplog.text
    assert API_KEY not in caplog.text


async def test_each_background_attempt_has_a_deadline(collector: FakeCollector) -> None:
    """A sender never waits on a hanging server longer than `timeout` per attempt."""
    collector.responder = lambda _: Reply(delay=30)
    reasons: list[str] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        timeout=0.2,
        max_retries=0,
        on_error=lambda _e, r: reasons.append(r),
    ) as fg:
        fg.record_event_nowait(event())
        started = time.monotonic()
        assert await fg.flush(3)
        assert time.monotonic() - started < 0.6
    assert reasons == ["timeout"]


async def test_the_senders_are_tasks_named_for_the_client(fg: FluxGate) -> None:
    """`concurrency` tasks named fluxgate-sender, as a task list or a debugger shows them."""
    assert fg.record_event_nowait(event(1))
    names = [task.get_name() for task in asyncio.all_tasks()]
    assert names.count("fluxgate-sender") == fg.config.concurrency == 8


def _client_of_a_silent_server(
    collector: FakeCollector, lost: list[tuple[Any, str]], **settings: Any
) -> FluxGate:
    """A client whose events stay in flight (no answer for 30 s), each lost one noted in `lost`."""
    collector.responder = lambda _request: Reply(delay=30)
    return FluxGate(
        API_KEY,
        endpoint=collector.url,
        timeout=20,
        on_error=lambda e, reason: lost.append((e, reason)),
        **settings,
    )


async def test_a_client_collected_with_an_event_in_flight_counts_it_lost(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Never closed: the event in flight is dropped with the client, not kept for a next loop."""
    lost: list[tuple[Any, str]] = []
    fg = _client_of_a_silent_server(collector, lost)
    in_flight = event(1)
    assert fg.record_event_nowait(in_flight)
    await wait_until(lambda: len(collector.requests) == 1)  # in flight
    with pytest.warns(ResourceWarning, match="1 event"):
        del fg  # nothing else refers to it: collected here, its senders cancelled
    await wait_until(lambda: len(lost) == 1)
    assert lost == [(in_flight, DropReason.SHUTDOWN)]
    assert "event loop stopped" not in caplog.text


async def test_a_bug_below_the_sender_costs_one_event_not_the_sender(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while sending fails that event and the next one still goes."""
    async with FluxGate(API_KEY, endpoint=collector.url, concurrency=1) as fg:
        transport = fg._transport
        assert transport is not None
        real_post = transport.post
        calls = 0

        async def flaky_post(
            body: bytes, key: str, loop: asyncio.AbstractEventLoop, read: Any
        ) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("bug in the transport")
            return await real_post(body, key, loop, read)

        monkeypatch.setattr(transport, "post", flaky_post)
        fg.record_event_nowait(event(1))
        fg.record_event_nowait(event(2))
        assert await fg.flush(3)
        stats = fg.stats
    assert (stats.failed, stats.sent) == (1, 1)
    [bug] = [r for r in caplog.records if r.exc_info]
    assert (bug.levelname, bug.getMessage()) == (
        "ERROR",
        "FluxGate: unexpected error delivering an event",
    )
    assert "bug in the transport" in caplog.text  # with its traceback
    assert [e["usage"]["inputTokens"] for e in collector.events] == [2]


async def test_a_server_echoing_the_key_never_gets_it_logged(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A rejection whose body repeats the API key is logged with the key masked."""
    collector.reply_with(Reply(status=401, body=f"unknown key {API_KEY}"))
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url) as fg:
            fg.record_event_nowait(event())
            assert await fg.flush(5)
    assert "unknown key ***" in caplog.text
    assert API_KEY not in caplog.text


class _Unprintable:
    """A status value whose repr raises: it must still be refused, counted, reported."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


async def test_a_status_whose_repr_raises_is_counted_and_reported(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """The nowait call returns False, stats.dropped counts it, on_error hears of it."""
    reasons: list[str] = []
    async with FluxGate(
        API_KEY, endpoint=collector.url, on_error=lambda _e, r: reasons.append(r)
    ) as fg:
        bad = {"usage": {"inputTokens": 1, "outputTokens": 1}, "status": _Unprintable()}
        assert fg.record_event_nowait(bad) is False
        assert await fg.record_event(bad) is None
        assert fg.stats.dropped == {DropReason.INVALID_EVENT: 1}
    assert reasons == [DropReason.INVALID_EVENT]
    assert "got <_Unprintable object>" in caplog.text


async def test_an_event_over_max_event_bytes_is_refused_naming_its_biggest_field(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2 MB feature is not sent: False, counted as too_large, named, on_error."""
    reasons: list[str] = []
    async with FluxGate(
        API_KEY, endpoint=collector.url, on_error=lambda _e, r: reasons.append(r)
    ) as fg:
        assert fg.record_event_nowait(event(1, feature="f" * 2_000_000)) is False
        assert fg.record_event_nowait(event(2, feature="f" * 1000))
        assert await fg.flush(5)
        assert fg.stats.dropped == {DropReason.TOO_LARGE: 1}
    assert reasons == [DropReason.TOO_LARGE]
    assert "over max_event_bytes (1,048,576); its biggest field is metadata.feature" in caplog.text
    assert [e["usage"]["inputTokens"] for e in collector.events] == [2]


async def test_max_event_bytes_is_configurable(collector: FakeCollector) -> None:
    """A smaller cap refuses smaller events; an invalid cap is a configuration error."""
    async with FluxGate(API_KEY, endpoint=collector.url, max_event_bytes=1000) as fg:
        assert fg.record_event_nowait(event(1, feature="f" * 1000)) is False
        assert fg.stats.dropped == {DropReason.TOO_LARGE: 1}
    with pytest.raises(ValueError, match="max_event_bytes must be a positive int"):
        FluxGate(API_KEY, max_event_bytes=0)


async def test_an_event_just_under_max_event_bytes_is_recorded_whole(
    collector: FakeCollector,
) -> None:
    """An event measured exactly against the cap is sent, awaited or queued, unchanged."""
    async with FluxGate(API_KEY, endpoint=collector.url, max_event_bytes=1300) as fg:
        assert await fg.record_event(event(1, feature="f" * 1000)) is not None
        assert fg.record_event_nowait(event(2, feature="g" * 1000))
        assert await fg.flush(5)
    assert [e["metadata"]["feature"] for e in collector.events] == ["f" * 1000, "g" * 1000]


@pytest.mark.parametrize("status", [503, 429])
async def test_a_long_retry_after_is_capped_so_flush_ends(
    collector: FakeCollector, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """Retry-After: 3600 waits the cap, not an hour: flush() without a timeout ends."""
    monkeypatch.setattr("fluxgate_async._retry.MAX_RETRY_AFTER", 0.2)
    collector.reply_with(Reply(status=status, retry_after=3600))
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        assert fg.record_event_nowait(event(1))
        async with asyncio.timeout(10):  # the test's guard; the cap makes it 0.2 s
            assert await fg.flush()
        assert fg.stats.sent == 1
    assert len(collector.requests) == 2


async def test_a_background_post_that_times_out_is_retried(collector: FakeCollector) -> None:
    """A slow first answer costs one attempt, not the event: the retry delivers it, same key."""
    collector.reply_with(Reply(delay=30))
    lost: list[str] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        timeout=0.2,
        max_retries=1,
        on_error=lambda _e, reason: lost.append(reason),
    ) as fg:
        assert fg.record_event_nowait(event(7))
        assert await fg.flush(5)
        stats = fg.stats
    assert (stats.sent, stats.failed, stats.retried) == (1, 0, 1)
    assert lost == []
    first, second = collector.requests
    assert first.idempotency_key == second.idempotency_key
    assert second.json is not None
    assert second.json["usage"]["inputTokens"] == 7


async def test_events_cut_off_by_aclose_reach_on_error_with_the_event(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """The event in flight and the one still queued go to on_error, themselves; one WARNING."""
    lost: list[tuple[Any, str]] = []
    fg = _client_of_a_silent_server(collector, lost, concurrency=1)
    in_flight, queued = event(1), event(2)
    assert fg.record_event_nowait(in_flight)
    assert fg.record_event_nowait(queued)
    await wait_until(lambda: fg.stats.in_flight == 1)
    await fg.aclose(timeout=0.1)
    assert [reason for _, reason in lost] == ["shutdown", "shutdown"]
    assert lost[0][0] is in_flight
    assert lost[1][0] is queued
    assert fg.stats.dropped == {DropReason.SHUTDOWN: 2}
    # Closing cut them off, not the loop's end: no word of events kept for the next loop.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "FluxGate: closed with 2 event(s) undelivered, counted as dropped (shutdown)"
    ]


def test_the_loop_stopped_warning_is_given_once_not_per_sender(
    threaded_collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Four senders cut off by the end of asyncio.run make one WARNING with the count."""
    threaded_collector.reply_with(*[Reply(delay=0.5)] * 4)
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url, concurrency=4)

    async def cut_off() -> None:
        for n in range(4):
            fg.record_event_nowait(event(n))
        await wait_until(lambda: len(threaded_collector.requests) == 4)

    asyncio.run(cut_off())
    warnings = [r.getMessage() for r in caplog.records if "event loop stopped" in r.getMessage()]
    assert warnings == [
        "FluxGate: the event loop stopped with 4 event(s) undelivered; they stay queued for the "
        "next loop, but are lost at exit: await fg.aclose() before the loop ends"
    ]

    async def deliver() -> None:
        await fg.flush(5)
        await fg.aclose()

    asyncio.run(deliver())
    assert fg.stats.sent == 4


async def test_an_idle_sender_takes_an_event_recorded_while_another_is_busy(
    collector: FakeCollector,
) -> None:
    """The second event goes out while the first is still in flight, not after it."""
    collector.responder = lambda _: Reply(delay=1.0)
    async with FluxGate(API_KEY, endpoint=collector.url, concurrency=2) as fg:
        assert fg.record_event_nowait(event(1))
        await wait_until(lambda: fg.stats.in_flight == 1)
        assert fg.record_event_nowait(event(2))
        await wait_until(lambda: fg.stats.in_flight == 2, timeout=0.5)
        assert await fg.flush(3)
        assert fg.stats.sent == 2


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_each_event_recorded_while_the_senders_are_idle_is_sent_at_once(
    collector: FakeCollector, concurrency: int
) -> None:
    """Recorded one by one, each after the last was answered: each goes out without a flush."""
    async with FluxGate(API_KEY, endpoint=collector.url, concurrency=concurrency) as fg:
        for n in range(5):
            assert fg.record_event_nowait(event(n))
            await collector.wait_for_events(n + 1, timeout=2.0)
            await asyncio.sleep(0.01)  # the senders are idle again
    assert [e["usage"]["inputTokens"] for e in collector.events] == list(range(5))


# --- what background delivery logs, line by line ---------------------------------------------


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


async def test_a_retry_that_times_out_counts_as_the_last_attempt(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503, then no answer within `timeout`: failed as timeout after 2 attempts, one WARNING."""
    collector.reply_with(Reply(status=503, body="busy", retry_after=0.01), Reply(delay=30))
    lost: list[str] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        timeout=0.2,
        max_retries=1,
        on_error=lambda _e, reason: lost.append(reason),
    ) as fg:
        assert fg.record_event_nowait(LLMEvent(AiEventUsage(1, 1)))
        assert await fg.flush(10)
        stats = fg.stats
    key = collector.requests[0].idempotency_key
    assert [r.idempotency_key for r in collector.requests] == [key, key]
    assert (stats.sent, stats.failed, stats.retried) == (0, 1, 1)
    assert lost == ["timeout"]
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded after 2 attempt(s): no answer within 0.2s"
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


async def test_a_background_answer_without_a_string_id_fails_the_event_with_what_came(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A 200 whose JSON has no usable id: failed as invalid_response, the answer in the WARNING."""
    collector.reply_with(Reply(body={"id": 7, "cost": 1}), Reply(body={"id": ""}))
    lost: list[str] = []
    async with FluxGate(
        API_KEY, endpoint=collector.url, on_error=lambda _e, reason: lost.append(reason)
    ) as fg:
        assert fg.record_event_nowait(event(1))
        assert await fg.flush(5)
        assert fg.record_event_nowait(event(2))
        assert await fg.flush(5)
        stats = fg.stats
    assert (stats.sent, stats.failed) == (0, 2)
    assert lost == ["invalid_response", "invalid_response"]
    warnings = _messages(caplog, logging.WARNING)
    assert "HTTP 200 answer has no string id: {'id': 7, 'cost': 1}" in warnings[0]
    assert "HTTP 200 answer has no string id: {'id': ''}" in warnings[1]


async def test_debug_logs_the_whole_answer_of_an_event_sent_at_once(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, a background event recorded at its first attempt logs the answer as read."""
    collector.reply_with(
        Reply(body={"id": "evt_9", "createdAt": "2026-01-01T00:00:00Z", "cost": 0.5})
    )
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url) as fg:
            assert fg.record_event_nowait(event(1))
            assert await fg.flush(5)
    key = collector.requests[0].idempotency_key
    assert (
        f"FluxGate: event {key} recorded: CreateAiEventResponse(id='evt_9', "
        "created_at='2026-01-01T00:00:00Z', cost=0.5, status=None)"
    ) in _messages(caplog, logging.DEBUG)


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
