"""`FluxGate.track`: tracking a call to any provider in one `async with` block."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from fluxgate_async import FluxGate, TrackedCall, tracking_context
from fluxgate_async._recording import CallTimer, Outcome, Recorder
from fluxgate_async.testing import FakeCollector, Reply

from .integrations.helpers import recorded


class ProviderError(Exception):
    """A provider SDK's HTTP error, carrying its status code like openai's and anthropic's."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


async def test_block_records_usage_model_provider_and_latency(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """The usage set in the block is recorded with the block's monotonic duration."""
    started = time.monotonic()
    async with fg.track(model="custom-model", provider="custom-provider", feature="f") as call:
        await asyncio.sleep(0.02)
        call.set_usage(100, 50, cached_tokens=20)
    elapsed_ms = (time.monotonic() - started) * 1000
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert 20 <= usage.pop("latencyInMs") <= elapsed_ms
    assert usage == {
        "inputTokens": 100,
        "outputTokens": 50,
        "cachedTokens": 20,
        "model": "custom-model",
        "provider": "custom-provider",
    }
    assert event["status"] == "SUCCESS"
    assert event["metadata"] == {"feature": "f"}
    assert call.tracking is None


async def test_block_may_set_every_field(fg: FluxGate, collector: FakeCollector) -> None:
    """Model, status, error message and streaming set in the block are recorded as set."""
    async with fg.track(provider="p") as call:
        call.model = "served-model"
        call.input_tokens = 7
        call.status = "MAX_TOKENS"  # type: ignore[assignment]  # a plain status string converts
        call.error_message = "cut at 7"
        call.is_streamed = True
        call.streaming_duration_in_ms = 12.5
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "MAX_TOKENS", "errorMessage": "cut at 7"}
    usage = event["usage"]
    assert (usage["model"], usage["isStreamed"], usage["streamingDurationInMs"]) == (
        "served-model",
        True,
        12.5,
    )
    assert "TrackedCall" in repr(call)
    assert "MAX_TOKENS" in repr(call)


async def test_inline_mode_sets_the_tracking_on_exit(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """With `mode="inline"` the block's exit awaits FluxGate and exposes its answer."""
    async with fg.track(model="m", mode="inline") as call:
        call.set_usage(1, 1)
    assert call.tracking is not None
    assert call.tracking.tracking_id == "evt_1"
    assert call.tracking.cost == 0.00042
    assert len(collector.events) == 1


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RuntimeError("model exploded"), "ERROR"),
        (ProviderError("bad request", 400), "MALFORMED_REQUEST"),
        (ProviderError("rate limited", 429), "ERROR"),
    ],
)
async def test_exception_in_block_is_recorded_and_reraised(
    fg: FluxGate, collector: FakeCollector, error: Exception, status: str
) -> None:
    """An exception leaving the block records its message and propagates unchanged."""

    async def failing_call() -> None:
        async with fg.track(model="m") as call:
            call.input_tokens = 12
            raise error

    with pytest.raises(type(error)) as raised:
        await failing_call()
    assert raised.value is error
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": status, "errorMessage": str(error)}
    assert event["usage"]["inputTokens"] == 12


async def test_exception_without_message_records_its_type(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """An exception with an empty message is recorded by its type name."""
    with pytest.raises(KeyError):
        async with fg.track(model="m", mode="inline") as call:
            raise KeyError
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "KeyError"}
    assert call.tracking is not None
    assert call.tracking.error_message == "KeyError"


async def test_cancelled_block_records_cancelled_and_propagates(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """A block cancelled mid-way records ERROR "cancelled" with the usage set so far."""
    inside = asyncio.Event()

    async def tracked() -> None:
        async with fg.track(model="m") as call:
            call.input_tokens = 5
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(tracked())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "cancelled"}
    assert event["usage"]["inputTokens"] == 5


async def test_wrong_values_raise_where_they_are_set(fg: FluxGate) -> None:
    """Setting a field to a wrong value raises at that line, naming the field."""
    call = TrackedCall()
    with pytest.raises(TypeError, match="input_tokens must be a non-negative int"):
        call.set_usage("100", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_tokens must be a non-negative int"):
        call.output_tokens = -1
    with pytest.raises(ValueError, match="status must be one of"):
        call.status = "FINE"  # type: ignore[assignment]


async def test_bad_mode_or_metadata_is_refused_on_entry(fg: FluxGate) -> None:
    """An unknown mode or a bad metadata value raises when the block is entered."""
    with pytest.raises(ValueError, match="mode must be"):
        async with fg.track(mode="now"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="feature must be a str"):
        async with fg.track(feature=1):
            pass


async def test_context_applies_over_the_calls_metadata(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """A `tracking_context` block's metadata merges over the metadata given to `track`."""
    with tracking_context(user="u-1", feature="outer"):
        async with fg.track(model="m", feature="inner", step="s"):
            pass
    [event] = await recorded(fg, collector)
    assert event["metadata"] == {"feature": "outer", "step": "s", "user": "u-1"}


async def test_a_call_records_once_however_often_it_is_finished(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """A call's event is sent once, even if finishing is attempted again, either way."""
    recorder = Recorder(fg, mode="inline", provider="p", metadata={})
    timer = recorder.start("m")
    assert await timer.finish(Outcome(input_tokens=1)) is not None
    assert await timer.finish(Outcome(input_tokens=2)) is None
    timer.finish_nowait(Outcome(input_tokens=3))
    other = recorder.start("m")
    other.finish_nowait(Outcome(input_tokens=4))
    other.finish_nowait(Outcome(input_tokens=5))
    events = await recorded(fg, collector, 2)
    assert sorted(e["usage"]["inputTokens"] for e in events) == [1, 4]


async def test_calls_in_a_row_each_record_their_own_metadata(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """Each call records its own context and extra fields, however alike the calls before it."""
    recorder = Recorder(fg, mode="background", provider="p", metadata={"feature": "f"})
    extras: list[dict[str, object]] = [
        {"n": 1},
        {"n": 1},
        {"n": True},
        {"n": 1.0},
        {"tags": ["a"]},
        {"tags": ["a"]},
        {},
    ]
    for extra in extras:
        recorder.start("m").finish_nowait(Outcome(extra=extra))
    with tracking_context(user="u-1"):
        recorder.start("m").finish_nowait(Outcome(extra={"n": 1}))
    recorder.start("m").finish_nowait(Outcome(extra={"n": 1}))
    events = await recorded(fg, collector, len(extras) + 2)
    # Background delivery may reorder events: compare them as JSON text, which
    # tells 1, true and 1.0 apart.
    sent = sorted(json.dumps(event["metadata"], sort_keys=True) for event in events)
    expected = [{**extra, "feature": "f"} for extra in extras]
    expected += [{"feature": "f", "user": "u-1", "n": 1}, {"feature": "f", "n": 1}]
    assert sent == sorted(json.dumps(metadata, sort_keys=True) for metadata in expected)


async def test_a_bug_building_the_event_is_logged_not_raised(
    fg: FluxGate,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If building an event fails on a bug of ours, the block still completes and it is logged."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(CallTimer, "event", broken)
    with caplog.at_level(logging.ERROR, logger="fluxgate_async"):
        async with fg.track(model="m", mode="inline") as call:
            call.set_usage(1, 1)
        Recorder(fg, mode="background", provider=None, metadata={}).start().finish_nowait(Outcome())
    assert caplog.text.count("bug while building an event") == 2
    assert call.tracking is None
    assert await fg.flush(5)
    assert collector.events == []


class Unprintable(Exception):
    """An exception whose message cannot be read."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


async def test_an_unreadable_exception_still_reaches_the_caller(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """An exception whose `str()` fails is recorded by its type name and re-raised as it is."""
    error = Unprintable()

    async def failing_call() -> None:
        async with fg.track(model="m"):
            raise error

    with pytest.raises(Unprintable) as raised:
        await failing_call()
    assert raised.value is error
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "Unprintable"}


async def test_an_inline_block_cancelled_while_fluxgate_answers_still_records_once(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """Cancelled while awaiting FluxGate, the event is queued under the same key: stored once."""
    collector.reply_with(Reply(delay=0.3))
    entered = asyncio.Event()

    async def tracked() -> None:
        async with fg.track(model="m", provider="acme", mode="inline") as call:
            call.set_usage(7, 3)
            entered.set()

    task = asyncio.create_task(tracked())
    await entered.wait()
    await asyncio.sleep(0.05)  # the block has exited and is awaiting FluxGate's answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fg.flush(5)
    await asyncio.sleep(0.4)  # the first, delayed request is answered too
    assert len(collector.events) == 1
    assert collector.events[0]["usage"]["inputTokens"] == 7
    keys = {request.idempotency_key for request in collector.requests}
    assert len(keys) == 1
