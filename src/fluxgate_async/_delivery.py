"""Background delivery: a bounded queue drained by a few sender tasks, with retries.

The queue is a plain deque that belongs to the client, not to an event loop, so
events queued in one `asyncio.run` are still delivered by the next one. The
sender tasks and their wake-up events belong to the loop they run in and are
started afresh in each.

Every event that enters the queue leaves it exactly once, counted as sent,
failed or dropped (see `DeliveryStats`); a lost event is never silent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable

from ._models import LLMEvent
from ._retry import backoff_delay
from ._stats import DeliveryStats, DropReason
from ._transport import Attempt, Transport
from ._wire import EventInput, encode_event

__all__ = ["OnError", "Pipeline"]

log = logging.getLogger("fluxgate_async")

OnError = Callable[[EventInput, str], object]
"""`on_error(event, reason)`: called once for each event that will not be delivered."""

# How long closing waits for cancelled senders to unwind; they do so at once
# unless something below them swallows the cancellation.
_UNWIND_SECONDS = 1.0


class _Item:
    __slots__ = ("event", "key", "seq")

    def __init__(self, event: LLMEvent, seq: int) -> None:
        self.event = event
        self.seq = seq
        # Chosen at the first attempt and kept for every retry, so the server
        # records the event once however often it is sent.
        self.key: str | None = None


class Pipeline:
    """The queue, its senders and their counters, for one client."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float,
        max_retries: int,
        concurrency: int,
        max_queue_size: int,
        on_error: OnError | None,
    ) -> None:
        self._transport = transport
        self._timeout = timeout
        self._max_retries = max_retries
        self._concurrency = concurrency
        self._max_queue_size = max_queue_size
        self._on_error = on_error
        self._pending: deque[_Item] = deque()
        self._in_flight: dict[int, _Item] = {}
        self._seq = 0
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned_loop: asyncio.AbstractEventLoop | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._resume_at = 0.0
        self._sent = 0
        self._failed = 0
        self._retried = 0
        self._dropped: dict[str, int] = {}

    @property
    def stats(self) -> DeliveryStats:
        """A consistent snapshot of the counters."""
        return DeliveryStats(
            enqueued=self._seq,
            sent=self._sent,
            failed=self._failed,
            retried=self._retried,
            queued=len(self._pending),
            in_flight=len(self._in_flight),
            dropped=self._dropped,
        )

    @property
    def unfinished(self) -> int:
        """Events queued or in flight."""
        return len(self._pending) + len(self._in_flight)

    def submit(self, event: LLMEvent) -> bool:
        """Queue `event` for delivery; `False` (and counted) when the queue is full.

        The client refuses events once closing, before they reach the pipeline.
        """
        if len(self._pending) >= self._max_queue_size:
            self.drop(event, DropReason.QUEUE_FULL)
            return False
        self._seq += 1
        self._pending.append(_Item(event, self._seq))
        self._start_senders()
        self._wakeup.set()
        return True

    def drop(self, event: EventInput, reason: str) -> None:
        """Count `event` as dropped for `reason` and tell `on_error`, unless dropped on purpose."""
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        if reason not in (DropReason.BEFORE_SEND, DropReason.DISABLED):
            self._report(event, reason)

    def _report(self, event: EventInput, reason: str) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(event, reason)
        except Exception:  # a broken callback must not break the app or the senders
            log.warning("FluxGate: on_error callback raised", exc_info=True)

    def _start_senders(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the senders start with the first call made inside one
        if loop is not self._loop:
            # A new loop (the previous one ended): its tasks and events are gone.
            self._loop = loop
            self._senders = set()
            self._wakeup = asyncio.Event()
            self._progress = asyncio.Event()
            self._resume_at = 0.0
        while len(self._senders) < self._concurrency:
            task = loop.create_task(self._send_forever(), name="fluxgate-sender")
            self._senders.add(task)  # a strong reference: the loop keeps only weak ones
            task.add_done_callback(self._senders.discard)

    async def _send_forever(self) -> None:
        wakeup, progress = self._wakeup, self._progress
        while True:
            while not self._pending:
                wakeup.clear()
                await wakeup.wait()
            item = self._pending.popleft()
            self._in_flight[item.seq] = item
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                if self._in_flight.pop(item.seq, None) is None:
                    raise  # closing gave up waiting for us and counted it already
                if self._closing:
                    self.drop(item.event, DropReason.SHUTDOWN)
                else:
                    # The loop is ending under us (asyncio.run returning): keep the
                    # event, with its key, for whichever loop uses the client next.
                    self._pending.appendleft(item)
                    self._warn_cut_off()
                raise
            except Exception:  # a bug below must cost one event, not the sender
                log.exception("FluxGate: unexpected error delivering an event")
                self._fail(item, "internal_error")
            del self._in_flight[item.seq]
            progress.set()

    def _warn_cut_off(self) -> None:
        if self._warned_loop is self._loop:
            return  # once per loop, not once per sender
        self._warned_loop = self._loop
        log.warning(
            "FluxGate: the event loop stopped with %d event(s) undelivered; they stay queued "
            "for the next loop, but are lost at exit: await fg.aclose() before the loop ends",
            self.unfinished,
        )

    async def _deliver(self, item: _Item) -> None:
        try:
            body = encode_event(item.event)
        except (TypeError, ValueError) as exc:
            log.warning("FluxGate: invalid event, not sent: %s", exc)
            self._fail(item, DropReason.INVALID_EVENT)
            return
        if item.key is None:
            item.key = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        retry = 0
        while True:
            pause = self._resume_at - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                async with asyncio.timeout(self._timeout):
                    result = await self._transport.post(body, item.key)
            except TimeoutError:
                result = Attempt(
                    reason="timeout", detail=f"no answer within {self._timeout}s", retryable=True
                )
            if result.response is not None:
                self._sent += 1
                log.debug("FluxGate: event %s recorded: %s", item.key, result.response)
                return
            if not result.retryable or retry >= self._max_retries:
                log.warning(
                    "FluxGate: event %s not recorded after %d attempt(s): %s",
                    item.key,
                    retry + 1,
                    result.detail,
                )
                self._fail(item, result.reason)
                return
            delay = result.retry_after if result.retry_after is not None else backoff_delay(retry)
            if result.reason == "http_429" and result.retry_after is not None:
                # Rate limited: every sender waits, not just this event.
                self._resume_at = max(self._resume_at, loop.time() + delay)
            log.debug("FluxGate: event %s: %s; retrying in %.2fs", item.key, result.detail, delay)
            self._retried += 1
            await asyncio.sleep(delay)
            retry += 1

    def _fail(self, item: _Item, reason: str) -> None:
        self._failed += 1
        self._report(item.event, reason)

    def _settled(self, upto: int) -> bool:
        if self._pending and self._pending[0].seq <= upto:
            return False
        return all(seq > upto for seq in self._in_flight)

    async def flush(self, timeout: float | None) -> bool:
        """Wait until every event queued so far is delivered or given up on."""
        upto = self._seq
        if self._settled(upto):
            return True
        self._start_senders()
        try:
            async with asyncio.timeout(timeout):
                while not self._settled(upto):
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float) -> None:
        """Refuse new events, deliver what is queued within `timeout`, drop the rest."""
        self._closing = True
        try:
            await self.flush(timeout)
        finally:
            await self._stop()

    def abandon(self) -> None:
        """Cancel the senders without waiting: the client is being collected."""
        self._closing = True  # what they hold is lost with the client, not kept for later
        for task in self._senders:
            if not task.get_loop().is_closed():
                task.cancel()

    async def _stop(self) -> None:
        senders = [task for task in self._senders if task.get_loop() is self._loop]
        for task in senders:
            task.cancel()
        if senders and self._loop is asyncio.get_running_loop():
            await asyncio.wait(senders, timeout=_UNWIND_SECONDS)
        abandoned = [*self._in_flight.values(), *self._pending]
        self._in_flight.clear()
        self._pending.clear()
        for item in abandoned:
            self.drop(item.event, DropReason.SHUTDOWN)
        if abandoned:
            log.warning(
                "FluxGate: closed with %d event(s) undelivered, counted as dropped (shutdown)",
                len(abandoned),
            )
