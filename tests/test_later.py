"""Events built once the calling task yields (`fluxgate_async._later`), seen from its client."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from fluxgate_async import AiEventUsage, FluxGate, LLMEvent
from fluxgate_async._later import MAX_WAITING, Later

from .conftest import API_KEY


def _event(tokens: int) -> LLMEvent:
    return LLMEvent(usage=AiEventUsage(input_tokens=tokens, output_tokens=1))


class _Sink:
    """Stands in for the client's `record_event_nowait`, which `Later` holds weakly."""

    def __init__(self) -> None:
        self.tokens: list[int] = []

    def queue(self, event: LLMEvent) -> None:
        self.tokens.append(event.usage.input_tokens)


async def test_events_are_queued_in_order_once_the_task_yields() -> None:
    """Builders wait for the running task to yield, then run in the order they came."""
    sink = _Sink()
    later = Later(sink.queue)
    later.add(lambda: _event(1))
    later.add(lambda: _event(2))
    assert (sink.tokens, len(later)) == ([], 2)
    await asyncio.sleep(0)
    assert sink.tokens == [1, 2]
    assert len(later) == 0


async def test_calls_that_never_yield_leave_at_most_max_waiting_builders() -> None:
    """Memory stays bounded: past `MAX_WAITING` builders, they run at once."""
    sink = _Sink()
    later = Later(sink.queue)
    for n in range(MAX_WAITING):
        later.add(functools.partial(_event, n))
    assert (len(later), sink.tokens) == (MAX_WAITING, [])
    later.add(lambda: _event(MAX_WAITING))
    assert len(later) == 0
    assert sink.tokens == list(range(MAX_WAITING + 1))


def test_builders_left_by_a_loop_that_stopped_run_in_the_next_one() -> None:
    """A loop stopped before its turn to build: the next loop builds its events and the new."""
    sink = _Sink()
    later = Later(sink.queue)

    async def call(tokens: int, stop: bool) -> None:
        later.add(functools.partial(_event, tokens))
        if stop:
            asyncio.get_running_loop().stop()  # before this task yields

    first = asyncio.new_event_loop()
    first.run_until_complete(call(1, stop=True))
    first.close()
    assert (sink.tokens, len(later)) == ([], 1)
    asyncio.run(call(2, stop=False))
    assert sink.tokens == [1, 2]


def test_without_a_running_loop_the_event_is_queued_at_once() -> None:
    """Outside any event loop there is nothing to wait for: the builder runs now."""
    sink = _Sink()
    Later(sink.queue).add(lambda: _event(3))
    assert sink.tokens == [3]


async def test_a_failing_builder_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug building one event loses that one alone, with an ERROR; nothing is raised."""
    sink = _Sink()
    later = Later(sink.queue)

    def broken() -> LLMEvent:
        raise RuntimeError("bug")

    later.add(broken)
    later.add(lambda: None)  # nothing to record
    later.add(lambda: _event(4))
    with caplog.at_level(logging.ERROR, logger="fluxgate_async"):
        later.run()
    assert sink.tokens == [4]
    [record] = caplog.records
    assert record.getMessage() == "FluxGate: bug while building an event; not recorded"


async def test_a_client_collected_with_events_waiting_reports_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events still waiting to be built when their client is collected are reported as lost."""
    fg = FluxGate(API_KEY, endpoint="http://127.0.0.1:9/api/events")
    fg._record_soon(lambda: _event(5))
    fg._record_soon(lambda: _event(6))
    later = fg._later
    with (
        caplog.at_level(logging.WARNING, logger="fluxgate_async"),
        pytest.warns(ResourceWarning, match="2 event"),
    ):
        del fg  # nothing else refers to it: collected here
    assert "client collected with 2 event(s) still pending, now lost" in caplog.text
    later.run()  # the loop's callback, after its client is gone: nothing left, nothing raised
    assert len(later) == 0
