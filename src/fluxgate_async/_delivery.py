"""Background delivery: a bounded queue drained by a few sender tasks, with retries.

The queue belongs to the client, not to an event loop, so events queued in one
`asyncio.run` are still delivered by the next one. The sender tasks and their
wake-up events belong to the loop they run in (the client's *home* loop) and
are started afresh in each.

Threads: only the home loop's thread touches the queue and the counters, so the
common call, from a coroutine or callback on that loop, takes no lock. Another
thread hands its events over through an inbox (a deque, whose `append` is
atomic) and wakes the loop with `call_soon_threadsafe`; the loop moves them to
the queue. With no loop running anywhere, they wait in the inbox for the next
loop that uses the client.

Forks: a child process starts with an empty queue, fresh counters, a fresh
session and fresh senders; what was queued before the fork belongs to the
parent, which alone delivers it.

Every event that enters the queue leaves it exactly once, counted as sent,
failed or dropped (see `DeliveryStats`); a lost event is never silent.

With an outbox (`_outbox.py`), each queued event is also handed to the outbox's
writer thread, which keeps it on disk until a sender tells it the event is done
(acknowledged, or failed for good). Events that an earlier or crashed client
left there come back through the inbox, with their key and body, as the queue
has room for them; closing out of time leaves the rest on disk (`kept`).
An event recorded while the queue is full goes to the outbox only (it is
*spilled*), and so do the events after it until the outbox has handed every
spilled one back, in order, through the inbox: with an outbox, its limits bound
the backlog, and the memory queue stays within `max_queue_size`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import os
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ._deadline import Deadlines
from ._models import LLMEvent
from ._outbox import Outbox, PendingEvent
from ._retry import backoff_delay
from ._stats import DeliveryStats, DropReason, FailureReason
from ._transport import Attempt, Transport
from ._wire import EventInput, InvalidEventError, answer_id, encode_event, parse_response

__all__ = ["OnError", "Pipeline"]

log = logging.getLogger("fluxgate_async")

OnError = Callable[[EventInput, str], object]
"""`on_error(event, reason)`: called once for each event that will not be delivered."""

# How long closing waits for cancelled senders to unwind; they do so at once
# unless something below them swallows the cancellation.
_UNWIND_SECONDS = 1.0
# How often a wait on the home loop from another thread's loop checks that the
# home loop still runs.
_HOME_LOOP_CHECK_SECONDS = 0.25
# How long closing waits for the outbox to write its last batch.
_OUTBOX_CLOSE_SECONDS = 2.0
# How often a flush looks whether the outbox has handed over what earlier clients left.
_OUTBOX_POLL_SECONDS = 0.01

# The running loop of the calling thread, or None: the C function behind
# `asyncio.get_running_loop()`, without an exception to build when there is none.
_running_loop = asyncio._get_running_loop
_thread = threading.get_ident

_T = TypeVar("_T")


def _reader() -> Callable[[object], object]:
    """What a sender reads of an answer: its id, or all of it when the DEBUG log shows it.

    Nothing else of a background event's answer is seen, and building the
    whole answer cost as much as the rest of reading it.
    """
    return parse_response if log.isEnabledFor(logging.DEBUG) else answer_id


class _Item:
    __slots__ = ("body", "event", "key", "number", "seq")
    body: bytes

    def __init__(self, event: EventInput, number: int, key: str | None, seq: int = 0) -> None:
        # An `LLMEvent`; for an event read back from an outbox, the mapping of its JSON.
        self.event = event
        # The key is chosen when the event is queued (its number, under the
        # client's prefix) and kept for every attempt, so the server records the
        # event once however often it is sent. It is written out at the first
        # attempt: formatting costs more than the rest of queueing.
        # A caller may give the key instead (a tracing span's id), so that the
        # same request reported twice is recorded once. Number 0 marks an event
        # read back from an outbox, under the key it was first sent with.
        self.number = number
        self.key = key
        # Its place in the queue, from 1; 0 until it is queued.
        self.seq = seq
        # `body`, the encoded event, is set only with an outbox, once its writer or
        # a sender has encoded it; left unset until then, as queueing must cost
        # nothing more.


class _Keys:
    """Idempotency keys, unique per process: a random prefix and a counter.

    They read as UUIDs (version 4, its last 48 bits a counter), and cost a
    fraction of `uuid4()`. A forked child draws a new prefix.
    """

    def __init__(self) -> None:
        self._prefix = str(uuid.uuid4())[:24]
        # next() on a count is atomic under the GIL: threads share it safely.
        self.numbers = itertools.count(1)

    def key(self, number: int) -> str:
        """The key of the event numbered `number`."""
        return f"{self._prefix}{number & 0xFFFFFFFFFFFF:012x}"

    def next(self) -> str:
        """A key for an event sent at once."""
        # `key`'s format, written out: one call less on every awaited event.
        return f"{self._prefix}{next(self.numbers) & 0xFFFFFFFFFFFF:012x}"


class Pipeline:
    """The queue, its senders and their counters, for one client."""

    def __init__(
        self,
        transport: Transport,
        *,
        deadlines: Deadlines,
        max_retries: int,
        concurrency: int,
        max_queue_size: int,
        on_error: OnError | None,
    ) -> None:
        self._transport = transport
        self._deadlines = deadlines
        self._max_retries = max_retries
        self._concurrency = concurrency
        self._max_queue_size = max_queue_size
        self._on_error = on_error
        self._closing = False
        self._outbox: Outbox | None = None
        self._reset()
        _pipelines.add(self)

    def use_outbox(self, path: str, *, max_events: int, max_bytes: int, max_age: float) -> None:
        """Keep queued events in an outbox at `path` too; its thread starts with `start_outbox`."""
        self._outbox = Outbox(
            path,
            max_events=max_events,
            max_bytes=max_bytes,
            max_age=max_age,
            prepare=self._row,
            room=self._room,
            recovered=self._take_recovered,
            expired=self._expired,
            spilled=self._take_spilled,
            lost=self._lost,
        )

    def start_outbox(self) -> None:
        """Start the outbox's writer, which delivers what earlier clients left there first.

        In a running event loop (`async with FluxGate(...)`) the senders start
        there too: what the writer reads back goes out without waiting for the
        client's first event.
        """
        if self._outbox is not None and not self._closing:
            self._outbox.start()
            if self._loop is None:
                self._start_senders()

    def _reset(self) -> None:
        """Empty queue, zero counters, no loop: a new client's state, or a forked child's."""
        self.keys = _Keys()
        self._numbers = self.keys.numbers
        self._pending: deque[_Item] = deque()
        self._in_flight: dict[int, _Item] = {}
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        # The home loop again when it is one of asyncio's own, which says in
        # `_thread_id` which thread runs it now: asking it is the cheap way to
        # learn that a call runs on the home loop. `_running_loop()` asks the OS
        # for the process id at every call on Python 3.11, which was a third of
        # the cost of queueing an event.
        self._asyncio_home: asyncio.BaseEventLoop | None = None
        self._warned_loop: asyncio.AbstractEventLoop | None = None
        self._senders: set[asyncio.Task[None]] = set()
        # Senders waiting for an event: only they need `_wakeup` set.
        self._idle = 0
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        # What the flushes waiting now wait for (the last event each must see
        # settled), in the order they started, and so ascending: senders wake
        # them only when the first of those is reached.
        self._flush_targets: list[int] = []
        self._resume_at = 0.0
        self._sent = 0
        self._failed = 0
        self._retried = 0
        self._dropped: dict[str, int] = {}
        # Other threads' side: written under the lock, read by the home loop.
        self._lock = threading.Lock()
        self._inbox: deque[_Item] = deque()
        self._inbox_dropped: dict[str, int] = {}
        self._woken: asyncio.AbstractEventLoop | None = None
        self._sealed = False

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of the counters; exact at quiet points, from any thread."""
        inbox = len(self._inbox)
        dropped = dict(self._dropped)
        for reason, count in dict(self._inbox_dropped).items():
            dropped[reason] = dropped.get(reason, 0) + count
        outbox = self._outbox
        spilled = kept_spilled = 0
        if outbox is not None:
            spilled, kept_spilled = outbox.spilled, outbox.spills_kept
        return DeliveryStats(
            enqueued=self._seq + inbox + spilled + kept_spilled,
            sent=self._sent,
            failed=self._failed,
            retried=self._retried,
            queued=len(self._pending) + inbox,
            in_flight=len(self._in_flight),
            dropped=dropped,
            persisted=0 if outbox is None else outbox.persisted,
            recovered=0 if outbox is None else outbox.queued_back,
            kept=0 if outbox is None else outbox.left_queued,
            memory_only=0 if outbox is None else outbox.memory_only,
            spilled=spilled,
        )

    @property
    def keeps_on_disk(self) -> bool:
        """Whether events left unfinished stay in a working outbox for the next start."""
        return self._outbox is not None and self._outbox.usable

    @property
    def outbox_path(self) -> str:
        """The outbox directory, or `""` without one."""
        return "" if self._outbox is None else str(self._outbox.path)

    @property
    def unfinished(self) -> int:
        """Events queued, in flight, or spilled to the outbox."""
        spilled = 0 if self._outbox is None else self._outbox.spilled
        return len(self._pending) + len(self._inbox) + len(self._in_flight) + spilled

    def submit(self, event: LLMEvent, key: str | None = None) -> bool:
        """Queue `event` for delivery; `False` (and counted) when the queue is full.

        `key` is the Idempotency-Key to send it under; `None` chooses one. The
        client refuses events once closing, before they reach the pipeline.
        """
        home = self._asyncio_home
        # The home loop runs on this thread exactly when its `_thread_id` is this
        # thread's: no other loop can run here while it does.
        if home is None or home._thread_id != _thread():  # type: ignore[attr-defined]
            loop = _running_loop()
            if loop is not self._loop or loop is None:
                return self._submit_elsewhere(event, loop, key)
        # The home loop's own thread: no other thread writes these.
        if self._outbox is not None:
            return self._submit_with_outbox(event, key)
        if len(self._pending) + len(self._inbox) >= self._max_queue_size:
            self.drop(event, DropReason.QUEUE_FULL)
            return False
        self._seq = seq = self._seq + 1
        self._pending.append(_Item(event, next(self._numbers), key, seq))
        if len(self._senders) < self._concurrency:
            self._start_senders()
        if self._idle:
            self._wakeup.set()  # busy senders take the next event when they finish theirs
        return True

    def _submit_with_outbox(self, event: LLMEvent, key: str | None) -> bool:
        """`submit` on the home loop with an outbox: the event is written to disk too."""
        outbox = self._outbox
        assert outbox is not None
        full = len(self._pending) + len(self._inbox) >= self._max_queue_size
        if outbox.usable and (full or outbox.spilling):
            return self._spill(event, key)
        if full:
            self.drop(event, DropReason.QUEUE_FULL)
            return False
        item = _Item(event, next(self._numbers), key)
        if not outbox.add(item):
            self.drop(event, DropReason.OUTBOX_FULL)
            return False
        if self._inbox:
            self._take_inbox()  # the last spilled events read back go first, in order
        self._seq += 1
        item.seq = self._seq
        self._pending.append(item)
        if len(self._senders) < self._concurrency:
            self._start_senders()
        self._wakeup.set()
        return True

    def _submit_elsewhere(
        self, event: LLMEvent, loop: asyncio.AbstractEventLoop | None, key: str | None
    ) -> bool:
        home = self._loop
        if loop is not None and (home is None or not home.is_running()):
            # A new loop, the previous one gone (a second `asyncio.run`): it becomes home.
            self._adopt(loop)
            return self.submit(event, key)
        # Another thread (or a second loop) while the home loop runs, or no loop
        # at all: hand over through the inbox.
        outbox = self._outbox
        with self._lock:
            full = len(self._pending) + len(self._inbox) >= self._max_queue_size
            if self._sealed:
                refused = DropReason.CLOSED
            elif outbox is not None and outbox.usable and (full or outbox.spilling):
                spilled = outbox.spill(_Item(event, next(self.keys.numbers), key))
                refused = "" if spilled else DropReason.OUTBOX_FULL
                wake = False
            elif full:
                refused = DropReason.QUEUE_FULL
            else:
                item = _Item(event, next(self.keys.numbers), key)
                if self._outbox is not None and not self._outbox.add(item):
                    refused = DropReason.OUTBOX_FULL
                else:
                    self._inbox.append(item)
                    refused = ""
                wake = home is not None and self._woken is not home
                if wake:
                    self._woken = home
            if refused:
                self._inbox_dropped[refused] = self._inbox_dropped.get(refused, 0) + 1
        if refused:
            self._report(event, refused)
            return False
        if wake:
            assert home is not None
            # A closed loop refuses: the next loop that uses the client takes it.
            with contextlib.suppress(RuntimeError):
                home.call_soon_threadsafe(self._take_inbox)
        return True

    def _spill(self, event: LLMEvent, key: str | None) -> bool:
        """On the home loop: send `event` to the outbox only, to come back when there is room."""
        assert self._outbox is not None
        if not self._outbox.spill(_Item(event, next(self.keys.numbers), key)):
            self.drop(event, DropReason.OUTBOX_FULL)
            return False
        return True

    def _take_inbox(self) -> None:
        """On the home loop: move what other threads handed over into the queue."""
        if _running_loop() is not self._loop:
            return  # a wake-up meant for a loop that is no longer home
        self._woken = None
        if not self._inbox:
            return
        while self._inbox:
            item = self._inbox.popleft()
            self._seq += 1
            item.seq = self._seq
            if item.number == 0:  # left by an earlier client
                self._outbox.queued_back += 1  # type: ignore[union-attr]
            self._pending.append(item)
        self._start_senders()
        self._wakeup.set()

    def drop(self, event: EventInput, reason: str) -> None:
        """Count `event` as dropped for `reason` and tell `on_error`, unless dropped on purpose.

        Safe from any thread: off the home loop's thread it counts under the lock.
        """
        if self._loop is not None and _running_loop() is self._loop:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1
        else:
            with self._lock:
                self._inbox_dropped[reason] = self._inbox_dropped.get(reason, 0) + 1
        if reason not in (DropReason.BEFORE_SEND, DropReason.DISABLED):
            self._report(event, reason)

    # --- the outbox's hooks, called on its writer thread ---

    def _row(self, item: _Item) -> tuple[str, bytes] | None:
        """The key and body to write for `item`; `None` if it cannot be encoded (sent, it fails)."""
        body: bytes | None = getattr(item, "body", None)
        if body is None:
            try:
                body = item.body = encode_event(item.event)  # type: ignore[arg-type]
            except InvalidEventError:
                return None
        if item.key is None:
            item.key = self.keys.key(item.number)
        return item.key, body

    def _room(self) -> int:
        """How many events read back from the outbox the queue takes now: half its free room.

        Rounded up: a queue of one takes one when it is empty, or it would never take any.
        """
        return (self._max_queue_size - len(self._pending) - len(self._inbox) + 1) // 2

    def _take_recovered(self, events: list[PendingEvent]) -> None:
        """Queue events an earlier client left in the outbox, with their keys, through the inbox."""
        self._queue_from_disk(events, 0)

    def _take_spilled(self, events: list[PendingEvent]) -> bool:
        """Queue spilled events read back, with their keys; `False` once closed."""
        return self._queue_from_disk(events, -1)

    def _lost(self, item: _Item, reason: str) -> None:
        """A spilled event the outbox could not write: refused after all, for `reason`."""
        self.drop(item.event, reason)

    def _queue_from_disk(self, events: list[PendingEvent], number: int) -> bool:
        """Queue events read from the outbox through the inbox; `False` once closed.

        `number` marks where they come from: 0 from an earlier client, -1 spilled by this one.
        """
        items = []
        for pending in events:
            # on_error gets the event as the mapping of its JSON: the model is not kept on disk.
            item = _Item(json.loads(pending.body), number, pending.key)
            item.body = pending.body
            items.append(item)
        with self._lock:
            if self._sealed:
                return False  # closed meanwhile: they stay on disk for the next start
            self._inbox.extend(items)
            home = self._loop
            wake = home is not None and self._woken is not home
            if wake:
                self._woken = home
        if wake:
            assert home is not None
            with contextlib.suppress(RuntimeError):
                home.call_soon_threadsafe(self._take_inbox)
        return True

    def _expired(self, pending: PendingEvent) -> None:
        self.drop(json.loads(pending.body), DropReason.EXPIRED)

    def _report(self, event: EventInput, reason: str) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(event, reason)
        except Exception:  # a broken callback must not break the app or the senders
            log.warning("FluxGate: on_error callback raised", exc_info=True)

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new loop (the previous one ended): its tasks and events are gone.
        self._loop = loop
        self._asyncio_home = loop if isinstance(loop, asyncio.BaseEventLoop) else None
        self._senders = set()
        self._idle = 0
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._resume_at = 0.0
        self.start_outbox()
        self._take_inbox()

    def _start_senders(self) -> None:
        loop = _running_loop()
        if loop is None:
            return  # no loop yet: the senders start with the first call made inside one
        if loop is not self._loop:
            self._adopt(loop)
        while len(self._senders) < self._concurrency:
            task = loop.create_task(self._send_forever(), name="fluxgate-sender")
            self._senders.add(task)  # a strong reference: the loop keeps only weak ones
            task.add_done_callback(self._senders.discard)

    async def _send_forever(self) -> None:
        loop = asyncio.get_running_loop()  # a sender lives and dies in one loop
        wakeup, progress = self._wakeup, self._progress
        in_flight = self._in_flight
        post, deadline = self._transport.post, self._deadlines.start
        while True:
            while not self._pending:
                await self._wait_for_events(wakeup)
            item = self._pending.popleft()
            in_flight[item.seq] = item
            try:
                body = self._body(item)
                if body is None:
                    pass  # it cannot be encoded: failed, counted and reported
                elif self._resume_at and self._resume_at > loop.time():
                    await self._deliver(item, body, loop, None)  # rate limited: it waits first
                else:
                    # The first attempt inline, as in `record_event`: most events need
                    # no other, and one coroutine less is resumed at each step of it.
                    key: str = item.key  # type: ignore[assignment]
                    read = _reader()
                    try:
                        with deadline(loop):
                            result = await post(body, key, loop, read)
                    except TimeoutError:
                        result = self._timed_out()
                    if isinstance(result, Attempt):
                        await self._deliver(item, body, loop, result)
                    else:
                        self._recorded(key, result, read)
            except asyncio.CancelledError:
                self._cut_off(item, in_flight)
                raise
            except Exception:  # a bug below must cost one event, not the sender
                log.exception("FluxGate: unexpected error delivering an event")
                self._fail(item, FailureReason.INTERNAL_ERROR)
            # A forked child's copy of a parent's sender (the event is the parent's),
            # or closing gave up waiting for us and counted the event already.
            if in_flight is not self._in_flight or in_flight.pop(item.seq, None) is None:
                return
            targets = self._flush_targets  # ascending: each flush adds the latest seq
            if targets and item.seq <= targets[-1] and self._settled(targets[0]):
                progress.set()

    def _cut_off(self, item: _Item, in_flight: dict[int, _Item]) -> None:
        """The sender delivering `item` is cancelled: keep, count or leave the event."""
        if in_flight.pop(item.seq, None) is None:
            return  # closing gave up waiting for us and counted it already
        if self._closing and self._outbox is not None:
            in_flight[item.seq] = item  # closing keeps it in the outbox, with the rest
        elif self._closing:
            self.drop(item.event, DropReason.SHUTDOWN)
        else:
            # The loop is ending under us (asyncio.run returning): keep the
            # event, with its key, for whichever loop uses the client next.
            self._pending.appendleft(item)
            self._warn_cut_off()

    async def _wait_for_events(self, wakeup: asyncio.Event) -> None:
        wakeup.clear()
        self._idle += 1
        try:
            await wakeup.wait()
        finally:
            # A sender of an earlier loop, or of the parent process after a fork,
            # waited on an earlier event: the count is no longer its.
            if wakeup is self._wakeup:
                self._idle -= 1

    def _warn_cut_off(self) -> None:
        if self._warned_loop is self._loop:
            return  # once per loop, not once per sender
        self._warned_loop = self._loop
        log.warning(
            "FluxGate: the event loop stopped with %d event(s) undelivered; they stay queued "
            "for the next loop, but are lost at exit: await fg.aclose() before the loop ends",
            self.unfinished,
        )

    def _body(self, item: _Item) -> bytes | None:
        """The request body of `item`, its key written out; `None` if it cannot be encoded.

        An event that cannot be encoded is failed here: counted and reported.
        """
        outbox = self._outbox
        # Only with an outbox is an event encoded before it is first sent (by the
        # outbox's writer, or read back from disk with its body): without one,
        # reading the unset slot would cost more than the check.
        body: bytes | None = None if outbox is None else getattr(item, "body", None)
        if body is None:
            try:
                body = encode_event(item.event)  # type: ignore[arg-type]
            except InvalidEventError as exc:
                log.warning("FluxGate: invalid event, not sent: %s", exc)
                self._fail(item, FailureReason.INVALID_EVENT)
                return None
            if outbox is not None:
                item.body = body  # the outbox's writer need not encode it again
        if item.key is None:
            item.key = self.keys.key(item.number)
        return body

    def _timed_out(self) -> Attempt:
        return Attempt(
            reason=FailureReason.TIMEOUT,
            detail=f"no answer within {self._deadlines.seconds}s",
            retryable=True,
        )

    def _recorded(self, key: str, answer: object, read: Callable[[object], object]) -> None:
        self._sent += 1
        if self._outbox is not None:
            self._outbox.done(key)
        if read is parse_response:  # the DEBUG log was on: it shows the whole answer
            log.debug("FluxGate: event %s recorded: %s", key, answer)

    async def _deliver(
        self, item: _Item, body: bytes, loop: asyncio.AbstractEventLoop, result: Attempt | None
    ) -> None:
        """Deliver `item` after the failed first attempt `result`, or from its first attempt.

        `result` is `None` when the event was not attempted yet (the client is
        rate limited: it waits first).
        """
        key: str = item.key  # type: ignore[assignment]
        outbox = self._outbox
        retry = 0
        while True:
            if result is None:
                # Zero unless FluxGate rate-limited the client: then every sender waits.
                if self._resume_at and (pause := self._resume_at - loop.time()) > 0:
                    await asyncio.sleep(pause)
                read = _reader()
                try:
                    with self._deadlines.start(loop):
                        answer = await self._transport.post(body, key, loop, read)
                except TimeoutError:
                    answer = self._timed_out()
                if not isinstance(answer, Attempt):
                    self._recorded(key, answer, read)
                    return
                result = answer
            if not result.retryable or retry >= self._max_retries:
                log.warning(
                    "FluxGate: event %s not recorded after %d attempt(s): %s",
                    key,
                    retry + 1,
                    result.detail,
                )
                self._fail(item, result.reason)
                return
            # Retry-After is capped (MAX_RETRY_AFTER) when it is read.
            delay = result.retry_after if result.retry_after is not None else backoff_delay(retry)
            if result.reason == FailureReason.http(429) and result.retry_after is not None:
                # Rate limited: every sender waits, not just this event.
                self._resume_at = max(self._resume_at, loop.time() + delay)
            log.debug("FluxGate: event %s: %s; retrying in %.2fs", key, result.detail, delay)
            self._retried += 1
            if outbox is not None:
                outbox.failed(key, result.reason)
            await asyncio.sleep(delay)
            retry += 1
            result = None

    def _fail(self, item: _Item, reason: str) -> None:
        self._failed += 1
        if self._outbox is not None and item.key is not None:
            self._outbox.done(item.key)  # failed for good: nothing to deliver later
        self._report(item.event, reason)

    def _settled(self, upto: int) -> bool:
        if self._pending and self._pending[0].seq <= upto:
            return False
        return all(seq > upto for seq in self._in_flight)

    async def flush(self, timeout: float | None) -> bool:
        """Wait until every event queued so far is delivered or given up on.

        From a loop other than the home loop while that one runs (another
        thread's), the wait runs on the home loop and this loop awaits it.
        """
        home = self._loop
        if home is not None and home.is_running() and _running_loop() is not home:
            return await _on_home_loop(home, self.flush(timeout), timeout)
        self._start_senders()
        outbox = self._outbox
        if outbox is not None:
            # Events an earlier client left come back as the queue has room for them:
            # wait until the last of them is queued, then for the queue as usual.
            outbox.start()
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while not outbox.caught_up:
                if deadline is not None and loop.time() >= deadline:
                    return False
                self._take_inbox()
                await asyncio.sleep(_OUTBOX_POLL_SECONDS)
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
        self._take_inbox()
        upto = self._seq
        if self._settled(upto):
            return True
        targets = self._flush_targets
        targets.append(upto)
        try:
            async with asyncio.timeout(timeout):
                while not self._settled(upto):
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        finally:
            targets.remove(upto)
        return True

    async def close(self, timeout: float) -> None:
        """Refuse new events, deliver what is queued within `timeout`, drop the rest."""
        self._closing = True
        home = self._loop
        if home is not None and home.is_running() and _running_loop() is not home:
            # The senders are that loop's: only it may cancel them.
            await _on_home_loop(home, self.close(timeout), timeout + 2 * _UNWIND_SECONDS)
            return
        try:
            await self.flush(timeout)
        finally:
            await self._stop()

    def abandon(self) -> None:
        """Cancel the senders without waiting: the client is being collected."""
        self._closing = True  # what they hold is lost with the client, not kept for later
        if self._outbox is not None:
            self._outbox.close_nowait()  # what is on disk stays there for the next start
        for task in list(self._senders):
            loop = task.get_loop()
            if loop.is_closed():
                continue
            if loop.is_running() and loop is not _running_loop():
                # Collected on another thread: Task.cancel is not thread-safe.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
            else:
                task.cancel()

    async def _stop(self) -> None:
        senders = [task for task in self._senders if task.get_loop() is self._loop]
        for task in senders:
            task.cancel()
        if senders and self._loop is asyncio.get_running_loop():
            await asyncio.wait(senders, timeout=_UNWIND_SECONDS)
        # Without an outbox, a sender cut off while closing dropped its event itself, and
        # nothing else drops one for shutdown before this point: counted in the WARNING too.
        cut_off = self._dropped.get(DropReason.SHUTDOWN, 0)
        with self._lock:
            self._sealed = True  # no other thread adds to the inbox from now on
            abandoned = [*self._in_flight.values(), *self._pending, *self._inbox]
            self._inbox.clear()
        self._in_flight.clear()
        self._pending.clear()
        outbox = self._outbox
        spilled = 0
        if outbox is not None:
            await outbox.aclose(_OUTBOX_CLOSE_SECONDS)
            # Spilled events never left the disk: kept there, even if the outbox failed since.
            spilled = outbox.keep_spilled()
            outbox.left_queued += spilled
        # With a working outbox what is left is on disk, and the next start delivers it.
        keep = outbox is not None and outbox.usable
        for item in abandoned:
            if item.seq == 0:  # still in the inbox: count it as enqueued, as stats did
                self._seq += 1
                if outbox is not None and item.number == 0:
                    outbox.queued_back += 1
            if keep:
                assert outbox is not None
                outbox.left_queued += 1
            else:
                self.drop(item.event, DropReason.SHUTDOWN)
        if (abandoned and keep) or spilled:
            assert outbox is not None
            log.info(
                "FluxGate: closed with %d event(s) undelivered, kept in the outbox at %s "
                "for the next start",
                (len(abandoned) if keep else 0) + spilled,
                outbox.path,
            )
        if (abandoned and not keep) or cut_off:
            log.warning(
                "FluxGate: closed with %d event(s) undelivered, counted as dropped (shutdown)",
                len(abandoned) + cut_off,
            )


async def _on_home_loop(
    home: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, _T], timeout: float | None
) -> _T | bool:
    """Run `work` on the home loop, from another loop's thread; `False` if it cannot end.

    It cannot end when `timeout` runs out, or when the home loop stops with the
    work unfinished (a loop stopped without cancelling its tasks would leave an
    unbounded wait without end): the work is cancelled then.
    """
    waiting = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, home))
    try:
        async with asyncio.timeout(timeout):
            while True:
                done, _ = await asyncio.wait((waiting,), timeout=_HOME_LOOP_CHECK_SECONDS)
                if done:
                    return waiting.result()
                if not home.is_running():
                    return False
    except TimeoutError:
        return False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return False  # the home loop ended first and cancelled the work
    finally:
        waiting.cancel()  # and so the work, unless it has ended


# Every live pipeline, for the fork and exit hooks below.
_pipelines: weakref.WeakSet[Pipeline] = weakref.WeakSet()


def _live() -> Iterator[Pipeline]:
    return iter(list(_pipelines))


def _after_fork_in_child() -> None:
    # The child is a new client: the parent's queue, counters, lock (maybe held
    # by a thread that does not exist here) and session stay the parent's.
    for pipeline in _live():
        pipeline._reset()
        pipeline._transport.forget_parent()


def _warn_at_exit() -> None:
    # A program that never awaited aclose() loses what is queued: say so, even
    # with no logging configured (WARNING reaches stderr through logging's last resort).
    for pipeline in _live():
        if not pipeline._closing and pipeline.unfinished and pipeline.keeps_on_disk:
            log.info(
                "FluxGate: %d event(s) still queued at exit are kept in the outbox at %s; "
                "the next client started on it delivers them",
                pipeline.unfinished,
                pipeline.outbox_path,
            )
        elif not pipeline._closing and pipeline.unfinished:
            log.warning(
                "FluxGate: %d event(s) still queued at exit were never sent: "
                "await fg.aclose() (or use `async with FluxGate(...)`) before the program ends",
                pipeline.unfinished,
            )


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX system has it
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_warn_at_exit)
