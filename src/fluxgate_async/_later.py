"""Events built just after the call they record returns: background mode's promise kept.

In background mode a tracked call "takes no longer than without tracking". Reading
the provider's answer and building its `LLMEvent` costs tens of microseconds of
Python on a cold cache, after a call that already spent a millisecond in the
SDK: done before the call returns, the caller waits for it. So a wrapped call
hands a builder to `Later` instead, and the event is built and queued as soon as
the caller's task yields to the event loop (one `call_soon` per turn of the
loop), whatever it does next.

Nothing waits longer for it: `flush()`, `aclose()` and `stats` run the builders
still waiting first, so an event is never missed by them; a forked child drops
the parent's (the parent records them); builders a loop stopped before running
are run by the next loop that tracks a call, or at exit, so that their events
are counted and reported with the other undelivered ones.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import os
import weakref
from collections.abc import Callable

from . import _delivery  # noqa: F401 - registers its exit hook before this module's
from ._models import LLMEvent

__all__ = ["MAX_WAITING", "Later"]

log = logging.getLogger("fluxgate_async")

MAX_WAITING = 1_000
"""The most builders left waiting: each holds its call's answer until it runs."""

Build = Callable[[], LLMEvent | None]
"""Builds the event of a call that has returned; `None` when there is nothing to record."""


class Later:
    """The builders of one client's events, run once the calling task yields."""

    __slots__ = ("__weakref__", "_builds", "_queue", "_scheduled")

    def __init__(self, queue: Callable[[LLMEvent], object]) -> None:
        """`queue` is the client's `record_event_nowait`, held weakly: no cycle keeps it alive."""
        self._queue = weakref.WeakMethod(queue)
        # A deque: appended and popped from any thread without a lock.
        self._builds: collections.deque[Build] = collections.deque()
        # The loop a `run` is scheduled on, until it starts.
        self._scheduled: asyncio.AbstractEventLoop | None = None
        _waiting.add(self)

    def __len__(self) -> int:
        """How many builders are waiting."""
        return len(self._builds)

    def add(self, build: Build) -> None:
        """Run `build` and queue its event once the running task yields. Never raises."""
        builds = self._builds
        builds.append(build)
        if len(builds) > MAX_WAITING:  # calls that never yield (an in-memory transport)
            self.run()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs in this thread: now
            self.run()
            return
        # One run per turn of the loop. A run scheduled on another loop (or on one
        # that stopped before its turn, and may never run again) does not count:
        # a run of this loop's own takes what is waiting, whoever appended it.
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_soon(self.run)

    def run(self, queue: Callable[[LLMEvent], object] | None = None) -> None:
        """Build and queue the events of every builder waiting. Never raises.

        `queue` is given by the client's finaliser, when the weak one is gone.
        """
        builds = self._builds
        self._scheduled = None  # a builder appended from now on needs a run of its own
        if queue is None:
            queue = self._queue()
            if queue is None:  # the client's finaliser ran them already
                return
        while builds:
            try:
                build = builds.popleft()
            except IndexError:  # another thread took the last one
                return
            try:
                event = build()
                if event is not None:
                    queue(event)
            except Exception:
                log.exception("FluxGate: bug while building an event; not recorded")

    def forget(self) -> None:
        """Drop the builders waiting, unrun: a forked child's copies of its parent's."""
        self._builds.clear()


# Every client's `Later`, for the fork and exit hooks below.
_waiting: weakref.WeakSet[Later] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for later in list(_waiting):
        later.forget()


def _run_at_exit() -> None:
    for later in list(_waiting):
        later.run()


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system has it
    os.register_at_fork(after_in_child=_after_fork_in_child)
# Exit hooks run last registered first: the delivery module, imported above,
# registered its report of what is still queued already; this one runs before it.
atexit.register(_run_at_exit)
