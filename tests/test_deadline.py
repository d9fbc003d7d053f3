"""Deadlines: `asyncio.timeout()`'s semantics, on one shared timer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxgate_async._deadline import Deadlines

# A block either expires at the loop's next turn or never does within a test.
_NOW, _NEVER = 0.0, 3600.0
# How long a block that must time out sleeps: long past its deadline, yet a deadline that
# never fires fails the test in seconds rather than hanging it.
_OUTLIVED = 2.0

Block = Callable[[float], AbstractAsyncContextManager[Any]]


def _with_asyncio() -> Block:
    return asyncio.timeout


def _with_deadlines() -> Block:
    queues = {_NOW: Deadlines(_NOW), _NEVER: Deadlines(_NEVER)}

    @asynccontextmanager
    async def block(seconds: float) -> Any:
        with queues[seconds].start() as deadline:
            yield deadline

    return block


_plans = st.fixed_dictionaries(
    {
        # Outermost first: whether each nested block's deadline passes.
        "levels": st.lists(st.sampled_from([_NOW, _NEVER]), min_size=1, max_size=3),
        # Loop turns the innermost body waits before it ends by itself.
        "body_turns": st.integers(0, 4),
        # Cancellations the body swallows (a badly behaved library under it).
        "swallow": st.integers(0, 2),
        # The loop turn at which the caller's own cancel() arrives, if at all.
        "cancel_at": st.none() | st.integers(0, 4),
        # The caller cancelled the task before the blocks started.
        "cancelled_before": st.booleans(),
    }
)


async def _run(block: Block, plan: dict[str, Any]) -> list[str]:
    """Run `plan` with `block` as the deadline; what each level and the task observed."""
    seen: list[str] = []

    async def body() -> None:
        swallow = plan["swallow"]
        turns = plan["body_turns"]
        while turns:
            try:
                await asyncio.sleep(0)
                turns -= 1
            except asyncio.CancelledError:
                if not swallow:
                    raise
                swallow -= 1
                seen.append("swallowed")

    async def nest(levels: list[float]) -> None:
        if not levels:
            await body()
            return
        try:
            async with block(levels[0]):
                await nest(levels[1:])
        except BaseException as exc:
            seen.append(f"level {len(levels)}: {type(exc).__name__}")
            raise
        seen.append(f"level {len(levels)}: ended")

    async def victim() -> None:
        if plan["cancelled_before"]:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                seen.append("first cancel caught")
        await nest(plan["levels"])
        seen.append("body ended")

    async def main() -> None:
        task = asyncio.create_task(victim())
        for turn in range(8):
            if plan["cancel_at"] == turn:
                task.cancel()
            await asyncio.sleep(0)
        try:
            await task
        except BaseException as exc:
            seen.append(f"task: {type(exc).__name__}")
        seen.append(f"cancelling: {task.cancelling()}")

    await main()
    return seen


@settings(max_examples=300, deadline=None)
@given(plan=_plans)
def test_deadlines_behave_as_asyncio_timeout_under_random_cancellation(
    plan: dict[str, Any],
) -> None:
    """Any nesting, expiry and outside cancel: the same outcome, level by level, as asyncio's."""
    expected = asyncio.run(_run(_with_asyncio(), plan))
    assert asyncio.run(_run(_with_deadlines(), plan)) == expected


@pytest.mark.parametrize("cancel_at", [0, 1])
@pytest.mark.parametrize("expires", [True, False])
def test_a_callers_cancel_always_propagates(cancel_at: int, expires: bool) -> None:
    """A caller's cancel, even in the loop turn the deadline passes, ends the task cancelled."""
    deadlines = Deadlines(_NOW if expires else _NEVER)

    async def victim() -> None:
        with deadlines.start():
            await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(victim())
        for _ in range(cancel_at):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def test_a_passed_deadline_raises_timeout_error_inside() -> None:
    """A block that outlives its deadline ends with TimeoutError, and the task is not cancelled."""
    deadlines = Deadlines(0.01)
    with pytest.raises(TimeoutError), deadlines.start():
        await asyncio.sleep(_OUTLIVED)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_finished_deadlines_are_forgotten() -> None:
    """A thousand blocks in a row leave one deadline queued, not a thousand."""
    deadlines = Deadlines(60)
    for _ in range(1000):
        with deadlines.start():
            await asyncio.sleep(0)
    queue = deadlines._queues[asyncio.get_running_loop()]
    assert len(queue.queue) == 1


async def test_one_timer_serves_deadlines_started_later() -> None:
    """Deadlines queued behind a finished one still expire at their own time."""
    deadlines = Deadlines(0.05)
    with deadlines.start():
        pass
    await asyncio.sleep(0.03)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), deadlines.start():
        await asyncio.sleep(_OUTLIVED)
    assert loop.time() - started >= 0.05


def test_each_event_loop_has_its_own_queue() -> None:
    """A second asyncio.run gets a fresh queue, and the ended loop's is forgotten."""
    deadlines = Deadlines(0.01)

    async def expire() -> None:
        with pytest.raises(TimeoutError), deadlines.start():
            await asyncio.sleep(_OUTLIVED)

    asyncio.run(expire())
    asyncio.run(expire())
    assert len(deadlines._queues) == 1


def test_a_deadline_outside_a_task_is_refused() -> None:
    """Starting a deadline with no running task is a clear error, as asyncio.timeout's."""
    with pytest.raises(RuntimeError, match="inside a task"):
        Deadlines(1).start()


async def test_a_deadline_started_after_the_last_one_expired_still_expires() -> None:
    """Once the timer has fired and emptied the queue, the next block still times out."""
    deadlines = Deadlines(0.01)
    for _ in range(3):
        with pytest.raises(TimeoutError), deadlines.start():
            await asyncio.sleep(_OUTLIVED)


async def test_a_deadline_outside_a_task_is_refused_with_a_clear_message() -> None:
    """Started from a plain callback of the running loop, not a task: a RuntimeError saying so."""
    deadlines = Deadlines(1.0)
    loop = asyncio.get_running_loop()
    said: asyncio.Future[str] = loop.create_future()

    def callback() -> None:
        try:
            deadlines.start(loop)
        except RuntimeError as exc:
            said.set_result(str(exc))
        else:
            said.set_result("no error")

    loop.call_soon(callback)
    assert await asyncio.wait_for(said, 5) == "a deadline must be started inside a task"
