"""`FluxGate`, the client: records usage events without ever breaking the host app."""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import aiohttp
import attrs

from ._config import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_OUTBOX_MAX_AGE,
    DEFAULT_OUTBOX_MAX_BYTES,
    DEFAULT_OUTBOX_MAX_EVENTS,
    DEFAULT_TIMEOUT,
    FluxGateConfig,
)
from ._deadline import Deadline, Deadlines
from ._delivery import OnError, Pipeline
from ._later import Build, Later
from ._logging import hide_secret, log, scrub, show_debug_logs
from ._manual_tracking import TrackedCall, track
from ._models import CreateAiEventResponse, LLMEvent
from ._recording import Mode
from ._retry import backoff_delay
from ._stats import DeliveryStats, DropReason
from ._transport import Attempt, Transport
from ._wire import (
    EventInput,
    EventTooLargeError,
    InvalidEventError,
    check_event,
    encode_event,
    parse_response,
    to_event,
)

__all__ = ["FluxGate"]


_MAX_KEY_LENGTH = 255


def _valid_key(key: object) -> bool:
    """Whether a caller's Idempotency-Key can go in a header as it is; logs why not."""
    if (
        isinstance(key, str)
        and 0 < len(key) <= _MAX_KEY_LENGTH
        and key.isascii()
        and key.isprintable()
        and " " not in key
    ):
        return True
    shown = (
        repr(key) if isinstance(key, str) and len(key) <= _MAX_KEY_LENGTH else type(key).__name__
    )
    log.warning(
        "FluxGate: idempotency_key must be 1 to %d visible ASCII characters, got %s;"
        " event not recorded",
        _MAX_KEY_LENGTH,
        shown,
    )
    return False


class FluxGate:
    """Records LLM usage events to the FluxGate API.

    Use it as an async context manager, or call `aclose()` before the event loop
    ends, so that queued events are delivered and its connection pool closed:

        async with FluxGate() as fg:  # api_key from FLUXGATE_API_KEY
            await fg.record_event({"usage": {"inputTokens": 100, "outputTokens": 50}})
            fg.record_event_nowait({"usage": {"inputTokens": 7, "outputTokens": 3}})

    `record_event` waits for FluxGate's answer; `record_event_nowait` queues the
    event and returns at once, and background senders deliver it.

    Tracking never breaks the host app: no method that records raises for what
    the network, the server or the event does; `asyncio.CancelledError` always
    propagates. Only the constructor raises, for a missing or invalid setting.

    Args:
        api_key: The FluxGate API key; defaults to `FLUXGATE_API_KEY`. It is
            masked as `***` in everything the `fluxgate_async` logger emits,
            tracebacks included (keys under 8 characters, test keys, are not).
        endpoint: Where events go; defaults to `FLUXGATE_ENDPOINT`, then
            `https://fluxgate.app/api/events`.
        timeout: Seconds one `record_event` call may take, retries included.
        debug: Log every send, answer and failure at DEBUG, shown on stderr even
            when the application configured no logging.
        session: An `aiohttp.ClientSession` to borrow: used, never closed.
        max_retries: Further attempts after a connection error or a 408, 429,
            500, 502, 503 or 504 answer.
        max_queue_size: Events `record_event_nowait` may hold; more are refused
            and counted as dropped (`queue_full`), so memory stays bounded.
        max_event_bytes: The largest event sent, in bytes of JSON; a larger one
            is refused (`too_large`), and the log names its biggest field.
        concurrency: Background POSTs in flight at once.
        before_send: Called with each event before it is sent: return it, a
            changed copy (to redact), or `None` to drop it. An exception in it
            drops the event and is logged.
        on_error: Called as `on_error(event, reason)` once for each background
            event that will not be delivered (refused, failed or cut off by
            `aclose`), except those dropped on purpose by `before_send`.
        enabled: `False` sends nothing at all; defaults to `FLUXGATE_ENABLED`
            (`0`, `false`, `no` or `off` disable), else `True`.
        outbox: A directory where background events are kept until the API
            acknowledges them, so that they survive the process being killed;
            defaults to `FLUXGATE_OUTBOX`, else none. A client started on it
            delivers first what earlier clients left there. Written by a thread
            of the client's own, never on the event loop: an event recorded on
            its own is on disk about a millisecond after `record_event_nowait`
            returned `True`, a burst at tens of thousands of events a second.
        outbox_max_events: Events the outbox may hold, all clients sharing it
            together; more are refused (`outbox_full`).
        outbox_max_bytes: Bytes of events the outbox may hold, all clients
            sharing it together; more are refused (`outbox_full`).
        outbox_max_age: Seconds an event left by an earlier client may wait;
            an older one is dropped unsent (`expired`).

    Raises:
        ValueError: No API key, or a setting out of range; the message names it.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        debug: bool = False,
        session: aiohttp.ClientSession | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        concurrency: int = DEFAULT_CONCURRENCY,
        before_send: Callable[[LLMEvent], LLMEvent | None] | None = None,
        on_error: OnError | None = None,
        enabled: bool | None = None,
        outbox: str | os.PathLike[str] | None = None,
        outbox_max_events: int = DEFAULT_OUTBOX_MAX_EVENTS,
        outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES,
        outbox_max_age: float = DEFAULT_OUTBOX_MAX_AGE,
    ) -> None:
        # Set first: __del__ reads them even when the checks below raise.
        self._transport: Transport | None = None
        self._pipeline: Pipeline | None = None
        self._closed = False
        self._config = FluxGateConfig.resolve(
            api_key=api_key,
            endpoint=endpoint,
            timeout=timeout,
            max_retries=max_retries,
            debug=debug,
            enabled=enabled,
            max_queue_size=max_queue_size,
            max_event_bytes=max_event_bytes,
            concurrency=concurrency,
            before_send=before_send,
            on_error=on_error,
            outbox=outbox,
            outbox_max_events=outbox_max_events,
            outbox_max_bytes=outbox_max_bytes,
            outbox_max_age=outbox_max_age,
        )
        hide_secret(self._config.api_key)
        if debug:
            show_debug_logs()
        self._before_send = before_send
        # Whether an event may be queued with no before_send to run and nothing to
        # drop it for; `aclose` clears it, as it sets `_closed`.
        self._queue_as_is = before_send is None and self._config.enabled
        self._max_event_bytes = self._config.max_event_bytes
        self._transport = Transport(self._config, session)
        # One deadline queue for awaited calls and background attempts alike:
        # both last `timeout`.
        self._deadlines = Deadlines(self._config.timeout)
        self._pipeline = Pipeline(
            self._transport,
            deadlines=self._deadlines,
            max_retries=self._config.max_retries,
            concurrency=self._config.concurrency,
            max_queue_size=self._config.max_queue_size,
            on_error=on_error,
        )
        self._later = Later(self.record_event_nowait)
        if self._config.outbox is not None and self._config.enabled:
            self._pipeline.use_outbox(
                self._config.outbox,
                max_events=self._config.outbox_max_events,
                max_bytes=self._config.outbox_max_bytes,
                max_age=self._config.outbox_max_age,
            )
        log.debug(
            "FluxGate initialised: endpoint=%s timeout=%ss max_retries=%d",
            self._config.endpoint,
            self._config.timeout,
            self._config.max_retries,
        )

    @property
    def config(self) -> FluxGateConfig:
        """The resolved settings (the API key is masked in its repr)."""
        return self._config

    @property
    def closed(self) -> bool:
        """Whether `aclose()` has been called."""
        return self._closed

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of background delivery: enqueued, sent, failed, dropped by reason."""
        assert self._pipeline is not None
        self._later.run()  # the events of tracked calls that returned count already
        return self._pipeline.stats

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        if not self._config.enabled:
            state += ", disabled"
        return f"<FluxGate endpoint={scrub(self._config.endpoint)!r} {state}>"

    def _prepare(  # noqa: PLR0911 - guard clauses
        self, event: EventInput, measured: list[bytes] | None = None
    ) -> LLMEvent | str:
        """The checked event after `before_send`, or the `DropReason` why there is none.

        Everything that would make sending fail is found here, so that
        `record_event_nowait` can say at once whether the event will be sent.
        An event near `max_event_bytes` is encoded to measure it: its body is
        appended to `measured`, when given, to be sent as it is.
        """
        if self._closed:
            return DropReason.CLOSED
        if not self._config.enabled:
            return DropReason.DISABLED
        try:
            model = to_event(event)
        except Exception as exc:  # a user's object may raise anything while it is read
            log.warning("FluxGate: invalid event, not recorded: %s", exc)
            return DropReason.INVALID_EVENT
        if self._before_send is not None:
            try:
                kept: object = self._before_send(model)
            except Exception:
                log.warning("FluxGate: before_send raised; event dropped", exc_info=True)
                return DropReason.BEFORE_SEND_ERROR
            if kept is None:
                log.debug("FluxGate: before_send dropped an event")
                return DropReason.BEFORE_SEND
            if not isinstance(kept, LLMEvent):
                log.warning(
                    "FluxGate: before_send must return an LLMEvent or None, got %s; event dropped",
                    type(kept).__name__,
                )
                return DropReason.BEFORE_SEND_ERROR
            model = kept
        try:
            body = check_event(model, self._config.max_event_bytes)
        except EventTooLargeError as exc:
            log.warning("FluxGate: event too large, not recorded: %s", exc)
            return DropReason.TOO_LARGE
        except InvalidEventError as exc:
            log.warning("FluxGate: invalid event, not recorded: %s", exc)
            return DropReason.INVALID_EVENT
        if body is not None and measured is not None:
            measured.append(body)
        return model

    def record_event_nowait(self, event: EventInput, *, idempotency_key: str | None = None) -> bool:
        """Queue one event for background delivery and return at once.

        Synchronous and cheap, so it fits anywhere: in a request handler, in sync
        code running in the loop, in a `finally` block while a task is being
        cancelled, in another thread. The event is delivered by background
        senders with retries, under an `Idempotency-Key` chosen now and sent
        with every attempt; `flush()` waits for them and `aclose()` delivers
        what is left before closing.

        From another thread (a thread pool running a sync endpoint, a tracing
        callback), the event is handed to the loop that runs the client, which
        wakes at once. If no event loop runs anywhere, the event waits for the
        next one that uses the client (any `await` on it); one still waiting
        at exit is reported in a WARNING.

        Args:
            event: An `LLMEvent`, or a mapping shaped like the TypeScript SDK's.
            idempotency_key: The key to send the event under, when the caller
                has one that names the model request (a tracing span's id):
                the same request reported twice is then recorded once. 1 to
                255 visible ASCII characters; `None` (the default) chooses a
                fresh one.

        Returns:
            `True` if the event was queued; `False` if it was refused (queue
            full, client closing or closed or disabled, invalid input, a value
            JSON cannot carry, over `max_event_bytes`, dropped by
            `before_send`, an invalid `idempotency_key`). Each refusal is
            counted in `stats.dropped` by reason. Never raises.
        """
        pipeline = self._pipeline
        assert pipeline is not None
        try:
            if (
                # The common call, checked inline: an LLMEvent (checked when it was
                # built) well within the size limit, nothing to run on it first.
                type(event) is LLMEvent
                and idempotency_key is None
                and self._queue_as_is  # and so not closed
                and event._json_size <= self._max_event_bytes  # and so no problem
            ):
                return pipeline.submit(event, None)
            prepared = self._prepare(event)
            if isinstance(prepared, str):
                pipeline.drop(event, prepared)
                return False
            if idempotency_key is not None and not _valid_key(idempotency_key):
                pipeline.drop(event, DropReason.INVALID_EVENT)
                return False
            return pipeline.submit(prepared, idempotency_key)
        except Exception as exc:  # the promise: tracking never breaks the host app
            log.error("FluxGate: unexpected error, event not queued: %s", exc)
            log.debug("FluxGate: unexpected error details", exc_info=True)
            try:
                pipeline.drop(event, DropReason.INTERNAL_ERROR)
            except Exception:
                log.debug("FluxGate: could not count the event", exc_info=True)
            return False

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued before this call is delivered or given up on.

        With an outbox, the events earlier clients left in it count as queued
        before the call: they are read back as the queue has room, and waited for.

        Args:
            timeout: Seconds to wait at most; `None` waits as long as delivery
                takes (each attempt has its own deadline, so it ends).

        Returns:
            `True` when all were settled; `False` when `timeout` ran out first,
            or when the event loop delivering them (the client's, in another
            thread) stopped before.
        """
        assert self._pipeline is not None
        self._later.run()  # the events of tracked calls that returned first
        return await self._pipeline.flush(timeout)

    async def record_event(  # noqa: PLR0911 - guard clauses
        self, event: EventInput, *, idempotency_key: str | None = None
    ) -> CreateAiEventResponse | None:
        """Send one event and return FluxGate's answer, or `None` if it was not recorded.

        `event` is an `LLMEvent`, or a mapping shaped like the TypeScript SDK's
        `LLMEvent` (camelCase keys; `status` a string or `{"status", "errorMessage"}`).
        It is never modified.

        The whole call, retries included, ends within `timeout` seconds. Connection
        errors and 408/429/500/502/503/504 answers are retried up to `max_retries`
        times with jittered exponential backoff, honouring `Retry-After`; every
        attempt carries the same `Idempotency-Key`, so the server counts the event
        once.

        `idempotency_key`, when given (1 to 255 visible ASCII characters), is
        sent instead of a fresh key: the same model request reported twice is
        then recorded once.

        Returns `None`, and logs why, when the event or key is invalid, the
        client is closed, the server is unreachable, slow, answers a non-2xx
        status or an unusable body. Never raises, except `asyncio.CancelledError`.
        """
        try:
            measured: list[bytes] = []
            prepared: LLMEvent | str
            if (
                # The common call, checked inline as in `record_event_nowait`: an
                # LLMEvent (checked when it was built) well within the size limit,
                # nothing to run on it first.
                type(event) is LLMEvent
                and self._queue_as_is  # and so not closed
                and event._json_size <= self._max_event_bytes  # and so no problem
            ):
                prepared = event
            else:
                prepared = self._prepare(event, measured)
            if isinstance(prepared, str):
                # Compared as text only: an event's generated __eq__ costs more than the check.
                if prepared == DropReason.CLOSED:
                    log.warning(
                        "FluxGate: record_event called on a closed client; event not recorded"
                    )
                return None
            if idempotency_key is not None and not _valid_key(idempotency_key):
                return None
            try:
                body = measured[0] if measured else encode_event(prepared)
            except InvalidEventError as exc:
                log.warning("FluxGate: invalid event, not recorded: %s", exc)
                return None
            assert self._pipeline is not None
            assert self._transport is not None
            key = idempotency_key or self._pipeline.keys.next()
            # Asked once, for both lines.
            debug = log.isEnabledFor(logging.DEBUG)
            if debug:
                log.debug("FluxGate: sending event %s to %s: %s", key, self._config.endpoint, body)
            loop = asyncio.get_running_loop()
            try:
                with self._deadlines.start(loop) as deadline:
                    # The first attempt inline: one coroutine less to resume at each
                    # step of the request, on the common path.
                    result = await self._transport.post(body, key, loop, parse_response)
                    if isinstance(result, Attempt) and result.retryable:
                        result = await self._retry(result, body, key, deadline, loop)
            except TimeoutError:
                log.warning(
                    "FluxGate: event %s not recorded: no answer within %ss",
                    key,
                    self._config.timeout,
                )
                return None
            if isinstance(result, Attempt):
                log.warning("FluxGate: event %s not recorded: %s", key, result.detail)
                return None
            if debug:
                log.debug("FluxGate: event %s recorded: %s", key, result)
            return result
        except Exception as exc:  # the promise: tracking never breaks the host app
            log.error("FluxGate: unexpected error, event not recorded: %s", exc)
            log.debug("FluxGate: unexpected error details", exc_info=True)
            return None

    async def _retry(
        self,
        result: Attempt,
        body: bytes,
        key: str,
        deadline: Deadline,
        loop: asyncio.AbstractEventLoop,
    ) -> CreateAiEventResponse | Attempt:
        """Retry after the retryable `result` of the first attempt, within `deadline`."""
        assert self._transport is not None
        retry = 0
        while True:
            if retry >= self._config.max_retries:
                return attrs.evolve(result, detail=f"{result.detail} (after {retry + 1} attempts)")
            delay = result.retry_after if result.retry_after is not None else backoff_delay(retry)
            if delay >= deadline.when - loop.time():
                # Sleeping into the deadline would only turn this answer into a timeout.
                return attrs.evolve(
                    result, detail=f"{result.detail}; retry in {delay:.2f}s would pass the deadline"
                )
            log.debug("FluxGate: event %s: %s; retrying in %.2fs", key, result.detail, delay)
            await asyncio.sleep(delay)
            retry += 1
            answer = await self._transport.post(body, key, loop, parse_response)
            if not isinstance(answer, Attempt) or not answer.retryable:
                return answer
            result = answer

    def track(
        self,
        *,
        model: str | None = None,
        provider: str | None = None,
        mode: Mode = "background",
        **metadata: Any,
    ) -> AbstractAsyncContextManager[TrackedCall]:
        """Track a call to any LLM provider: time it, let the block set its usage, record it.

        The TypeScript SDK's "Direct Integration", in one block. Latency is measured with
        the monotonic clock from entering the block to leaving it. An exception
        leaving the block is recorded as ERROR with its message (MALFORMED_REQUEST
        for a 400-class HTTP error) and re-raised unchanged; a cancelled block
        records ERROR "cancelled" and `CancelledError` propagates.

        Example:
            ```python
            import asyncio

            from fluxgate_async import FluxGate


            async def generate(prompt: str) -> dict[str, int]:
                # Stands in for your provider's client: it reports the tokens it used.
                return {"input_tokens": len(prompt.split()), "output_tokens": 42}


            async def main() -> None:
                async with (
                    FluxGate() as fg,
                    fg.track(model="my-model", provider="acme", feature="chat") as call,
                ):
                    reply = await generate("Summarise the meeting notes")
                    call.set_usage(reply["input_tokens"], reply["output_tokens"])


            asyncio.run(main())
            ```

        Args:
            model: The model called (the block may set `call.model` instead).
            provider: The provider's name.
            mode: `"background"` queues the event (the block's exit takes no
                time); `"inline"` awaits FluxGate and sets `call.tracking`.
            **metadata: `feature`, `user`, `session_id`, `step`,
                `conversation_id` and any further fields, under those of an
                enclosing `tracking_context`.

        Raises:
            ValueError, TypeError: An invalid `mode` or metadata value (at the call).
        """
        return track(self, model=model, provider=provider, mode=mode, metadata=metadata)

    async def aclose(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Deliver what is queued, then close; calling it again does nothing.

        New events are refused from the first moment. Queued events are
        delivered for at most `timeout` seconds; whatever is still queued or in
        flight then is dropped, counted as `shutdown` and passed to `on_error`;
        with an outbox it stays on disk instead, counted in `stats.kept`, and
        the next client started on the outbox delivers it.
        A session passed in as `session=` is left open: it is the caller's.
        """
        if self._closed:
            return
        self._later.run()  # the events of tracked calls that returned before
        self._closed = True
        self._queue_as_is = False
        assert self._transport is not None
        assert self._pipeline is not None
        try:
            await self._pipeline.close(timeout)
        finally:
            try:
                await self._transport.aclose()
            except Exception:  # a failing close must not break the app's shutdown
                log.warning("FluxGate: error while closing the HTTP session", exc_info=True)

    async def __aenter__(self) -> Self:
        if self._closed:
            msg = "this FluxGate client is closed; create a new one"
            raise RuntimeError(msg)
        assert self._pipeline is not None
        self._pipeline.start_outbox()  # what earlier clients left is delivered from now on
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _record_soon(self, build: Build) -> None:
        """Queue the event `build()` makes once the running task yields to the loop.

        For the provider wrappers in background mode: the tracked call returns
        without waiting for its event to be built. `flush()`, `aclose()` and
        `stats` build the events still waiting first. Never raises.
        """
        self._later.add(build)

    def __del__(self) -> None:
        later = getattr(self, "_later", None)
        if later:
            later.run(self.record_event_nowait)  # their events are pending like the queued ones
        pipeline = getattr(self, "_pipeline", None)
        transport = getattr(self, "_transport", None)
        pending = 0 if pipeline is None else pipeline.unfinished
        if pipeline is not None:
            pipeline.abandon()  # idle senders would otherwise outlive their client
        advice = "use `async with FluxGate(...)` or `await fg.aclose()` before the event loop ends"
        if pending and pipeline is not None and pipeline.keeps_on_disk:
            log.info(
                "FluxGate: client collected with %d event(s) still pending, kept in the outbox "
                "at %s for the next start",
                pending,
                pipeline.outbox_path,
            )
            message = f"FluxGate client was never closed: {advice}"
        elif pending:
            lost = f"client collected with {pending} event(s) still pending, now lost: {advice}"
            # Also a WARNING: Python hides ResourceWarning unless asked, and these
            # events are lost.
            log.warning("FluxGate: %s", lost)
            message = f"FluxGate {lost}"
        elif transport is not None and transport.has_open_session:
            message = f"FluxGate client was never closed: {advice}"
        else:
            return
        warnings.warn(message, ResourceWarning, source=self, stacklevel=1)
