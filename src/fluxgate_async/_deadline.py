"""Deadlines for the client's calls and attempts, all on one timer per event loop.

`asyncio.timeout()` schedules a timer when a block starts and cancels it when
the block ends: two changes to the loop's timer heap and a new timer object
per call, which showed as a tenth of the client's own time per event. The
client's deadlines all have the same length (its `timeout`), so they end in
the order they start: they wait in a queue, and one loop timer, set for the
oldest, serves them all. A block that ends only marks its deadline done; the
timer skips done deadlines when it fires (lazy cancellation).

The semantics are `asyncio.timeout()`'s, exactly: when the deadline passes,
the block's task is cancelled, and the block turns that cancellation into
`TimeoutError` (`Task.uncancel()` undoes it). A cancellation from anyone else,
even one arriving at the same moment, propagates as `CancelledError`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

__all__ = ["Deadline", "Deadlines"]

_running_loop = asyncio._get_running_loop


class Deadline:
    """One block's deadline: a context manager, entered once, inside a task."""

    __slots__ = ("_cancelling", "_done", "_expired", "_task", "when")

    def __init__(self, when: float, task: asyncio.Task[object]) -> None:
        self.when = when
        """The loop time at which the block is cancelled."""
        self._task = task
        # Cancellations the task had before the block: a later count says
        # someone else cancelled it too, and their cancellation wins.
        self._cancelling = task.cancelling()
        self._done = False
        self._expired = False

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done = True
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
        ):
            raise TimeoutError from exc


class _LoopQueue:
    """The deadlines started in one event loop, oldest first, and its one timer."""

    __slots__ = ("_loop", "_timer", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: deque[Deadline] = deque()
        self._timer: asyncio.Handle | None = None

    def add(self, deadline: Deadline) -> None:
        queue = self.queue
        # Finished blocks at the front are forgotten now, so the queue holds
        # about as many deadlines as there are blocks running.
        while queue and queue[0]._done:
            queue.popleft()
        queue.append(deadline)
        if self._timer is None:
            when = queue[0].when
            loop = self._loop
            # A deadline already passed cancels at the loop's next turn, as asyncio.timeout's.
            if when <= loop.time():
                self._timer = loop.call_soon(self._fire)
            else:
                self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        queue = self.queue
        # The loop runs a timer up to its clock resolution early, as asyncio.timeout's.
        now = self._loop.time() + self._loop._clock_resolution  # type: ignore[attr-defined]
        while queue:
            deadline = queue[0]
            if not deadline._done:
                if deadline.when > now:
                    self._timer = self._loop.call_at(deadline.when, self._fire)
                    return
                deadline._expired = True
                deadline._task.cancel()
            queue.popleft()


class Deadlines:
    """Deadlines of `seconds` each, for blocks run in any event loop.

    Use `with deadlines.start():` inside a task, where `async with
    asyncio.timeout(seconds):` would go. Each event loop has its own queue and
    timer, touched only from that loop's thread.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        """How long each block may take."""
        self._queues: dict[asyncio.AbstractEventLoop, _LoopQueue] = {}

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> Deadline:
        """A deadline `seconds` from now for the current task's block.

        Args:
            loop: The running loop, when the caller has it at hand (asking
                for it costs a system call on Python 3.11).

        Raises:
            RuntimeError: Not called inside a task.
        """
        if loop is None:
            loop = _running_loop()
        task = asyncio.current_task(loop) if loop is not None else None
        if loop is None or task is None:
            msg = "a deadline must be started inside a task"
            raise RuntimeError(msg)
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queue_for(loop)
        deadline = Deadline(loop.time() + self.seconds, task)
        queue.add(deadline)
        return deadline

    def _queue_for(self, loop: asyncio.AbstractEventLoop) -> _LoopQueue:
        # A new loop: forget those that have closed (a previous `asyncio.run`).
        for ended in [other for other in list(self._queues) if other.is_closed()]:
            self._queues.pop(ended, None)
        queue = self._queues[loop] = _LoopQueue(loop)
        return queue
