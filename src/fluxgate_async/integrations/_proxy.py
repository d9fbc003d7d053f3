"""The machinery the provider wrappers share: attribute proxies and tracked streams.

A wrapper never modifies the SDK client it is given. It returns a `Proxy` that
forwards every attribute to the client, except the few it tracks, and that
reports the client's class, so `isinstance` checks keep working. Streams are
wrapped the same way by a `TrackedStream`, which watches chunks go by and sends
the call's event exactly once, however the stream ends.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from .._models import AiEventStatus
from .._recording import CallTimer, Outcome, Recorder, cancelled_outcome, error_outcome

__all__ = [
    "LEFT_EARLY",
    "NEVER_CONSUMED",
    "Accumulator",
    "IteratedProxy",
    "Proxy",
    "TrackedStream",
    "finish",
    "refuse_tracked",
    "run_tracked",
    "safe_outcome",
]

log = logging.getLogger("fluxgate_async")

LEFT_EARLY = "stream closed before its end"
"""The error message of a stream closed (or left by `break`) before its last chunk."""
NEVER_CONSUMED = "stream collected before its end"
"""The error message of a stream garbage-collected before its last chunk."""

Override = Callable[[Any], Any]
"""Given the wrapped object's attribute, returns what the proxy shows in its place."""


class Proxy:
    """Forwards everything to `target`, except the attributes named in `overrides`.

    Reading an overridden attribute returns `overrides[name](target.name)`,
    computed once. Writing any attribute writes it on the target. `__class__`
    is the target's, so `isinstance(proxy, type(target))` holds.
    """

    __slots__ = ("__weakref__", "_fg_cache", "_fg_overrides", "_fg_target")

    def __init__(self, target: Any, overrides: Mapping[str, Override]) -> None:
        object.__setattr__(self, "_fg_target", target)
        object.__setattr__(self, "_fg_overrides", overrides)
        object.__setattr__(self, "_fg_cache", {})

    @property  # type: ignore[misc]  # reporting the target's class is the point
    def __class__(self) -> type[Any]:
        return type(self._fg_target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._fg_target, name)
        override = self._fg_overrides.get(name)
        if override is None:
            return value
        cache: dict[str, Any] = self._fg_cache
        if name not in cache:
            cache[name] = override(value)
        return cache[name]

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fg_target, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._fg_target, name)

    def __dir__(self) -> list[str]:
        return dir(self._fg_target)

    def __repr__(self) -> str:
        return repr(self._fg_target)

    # `with` and `async with` look these up on the type, never through __getattr__.
    # A client entering itself hands back the proxy, so the block stays tracked.

    def _fg_protocol(self, name: str, protocol: str) -> Any:
        method = getattr(type(self._fg_target), name, None)
        if method is None:
            # The TypeError Python raises for the target itself.
            kind = type(self._fg_target).__name__
            msg = f"{kind!r} object does not support the {protocol} protocol"
            raise TypeError(msg)
        return functools.partial(method, self._fg_target)

    def __enter__(self) -> Any:
        entered = self._fg_protocol("__enter__", "context manager")()
        return self if entered is self._fg_target else entered

    def __exit__(self, *exc_info: Any) -> Any:
        return self._fg_protocol("__exit__", "context manager")(*exc_info)

    async def __aenter__(self) -> Any:
        entered = await self._fg_protocol("__aenter__", "asynchronous context manager")()
        return self if entered is self._fg_target else entered

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._fg_protocol("__aexit__", "asynchronous context manager")(*exc_info)


def refuse_tracked(client: object, wrapper: str) -> None:
    """Raise if `client` is already tracked: every call would be recorded twice.

    Raises:
        ValueError: `client` is a wrapper's proxy.
    """
    if isinstance(client, Proxy):
        msg = (
            f"{wrapper}: this client is already tracked; wrap the original client, "
            "and use tracking_context() for per-call metadata"
        )
        raise ValueError(msg)


def safe_outcome(read: Callable[..., Outcome | None], *args: Any) -> Outcome | None:
    """Call `read(*args)`; on a bug of ours, log it and return an empty outcome instead."""
    try:
        return read(*args)
    except Exception:
        log.exception("FluxGate: bug while reading a provider's answer; usage recorded as 0")
        return Outcome()


async def run_tracked(
    recorder: Recorder,
    model: Any,
    call: Callable[[], Awaitable[Any]],
    outcome: Callable[[Any], Outcome],
    stream: Callable[[Any, CallTimer], Any] | None = None,
    *,
    reached: Callable[[Exception], bool] = lambda _: True,
) -> Any:
    """Await `call()` and send its event; return exactly what it returned, raise what it raised.

    `outcome` reads a plain answer. When `stream` is given the answer is a
    stream, and `stream(answer, timer)` wraps it to send the event at its end.
    An exception for which `reached(exc)` is false was raised before any
    request reached the provider (a bad argument, a missing key): it records
    nothing.
    """
    timer = recorder.start(model if isinstance(model, str) else None)
    try:
        answer = await call()
    except asyncio.CancelledError:
        timer.finish_nowait(cancelled_outcome(), streamed=stream is not None)
        raise
    except Exception as exc:
        if reached(exc):
            await timer.finish(error_outcome(exc), streamed=stream is not None)
        else:
            timer.discard()
        raise
    finally:
        timer.request_ended()
    if stream is not None:
        return stream(answer, timer)
    if timer.inline:
        await finish(timer, safe_outcome(outcome, answer), response=answer)
    else:  # read once the caller has its answer
        timer.finish_soon(functools.partial(safe_outcome, outcome), answer)
    return answer


async def finish(
    timer: CallTimer, outcome: Outcome | None, *, streamed: bool = False, response: object = None
) -> None:
    """Send the call's event, or nothing when `outcome` is `None` (nothing to record)."""
    if outcome is None:
        timer.discard()
    else:
        await timer.finish(outcome, streamed=streamed, response=response)


class Accumulator(Protocol):
    """Reads a provider's stream chunk by chunk."""

    def add(self, chunk: Any) -> bool:
        """Take in one chunk; return whether the caller sees it (False hides it)."""

    def outcome(self) -> Outcome | None:
        """What the chunks so far say; `None` when there is nothing to record (yet)."""


class IteratedProxy(Proxy):
    """A proxy of an async iterator that learns when the caller stops iterating.

    Iteration runs in a generator of our own, so that `break` (which drops it)
    finalizes it through the loop's async-generator hook, and `_fg_left` runs
    then, as it does at the end, on an error or when cancelled.
    """

    __slots__ = ()

    def __aiter__(self) -> Any:
        return self._fg_iterate()

    async def _fg_iterate(self) -> Any:
        try:
            while True:
                try:
                    chunk = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            self._fg_left()

    async def __anext__(self) -> Any:
        return await self._fg_target.__anext__()

    def _fg_left(self) -> None:
        """Called once iteration stops, however it stops; nothing to do by default."""


class TrackedStream(IteratedProxy):
    """A provider's stream, passed through chunk by chunk, that sends one event.

    The event is sent when the stream ends (in the recorder's mode: in inline
    mode its tracking is then attached to this object), fails, is cancelled, is
    closed or left by `break` before its end, or is collected unconsumed (the
    last three in the background, since nothing can wait for them). A stream
    left early keeps the status of a finish reason already seen; without one it
    is ERROR "stream closed before its end".
    """

    __slots__ = ("_fg_accumulator", "_fg_shown", "_fg_timer", "fluxgate_tracking")

    def __init__(
        self,
        target: Any,
        timer: CallTimer,
        accumulator: Accumulator,
        shown: object = None,
    ) -> None:
        super().__init__(target, {})
        object.__setattr__(self, "_fg_timer", timer)
        object.__setattr__(self, "_fg_accumulator", accumulator)
        # What the caller holds, to attach the inline tracking to: this stream,
        # unless an SDK helper wraps it in an object of its own.
        object.__setattr__(self, "_fg_shown", self if shown is None else shown)

    async def __anext__(self) -> Any:
        timer: CallTimer = self._fg_timer
        while True:
            try:
                chunk = await self._fg_target.__anext__()
            except StopAsyncIteration:
                await finish(timer, self._fg_seen(), streamed=True, response=self._fg_shown)
                raise
            except asyncio.CancelledError:
                seen = self._fg_seen()
                if seen is None:
                    timer.discard()
                else:
                    timer.finish_nowait(cancelled_outcome(seen), streamed=True)
                raise
            except Exception as exc:
                seen = self._fg_seen()
                failed = None if seen is None else error_outcome(exc, seen)
                await finish(timer, failed, streamed=True)
                raise
            if self._fg_add(chunk):
                return chunk

    def _fg_add(self, chunk: Any) -> bool:
        self._fg_timer.first_chunk()
        try:
            return bool(self._fg_accumulator.add(chunk))
        except Exception:
            log.exception("FluxGate: bug while reading a stream chunk")
            return True

    def _fg_seen(self) -> Outcome | None:
        return safe_outcome(self._fg_accumulator.outcome)

    def _fg_left(self) -> None:
        self._fg_left_early(LEFT_EARLY)

    def _fg_left_early(self, why: str) -> None:
        timer: CallTimer = self._fg_timer
        if timer.finished:
            return
        seen = self._fg_seen()
        if seen is None:
            timer.discard()
            return
        if seen.extra.get("finishReason") is None:
            seen = attrs.evolve(seen, status=AiEventStatus.ERROR, error_message=why)
        timer.finish_nowait(seen, streamed=True)

    async def close(self) -> None:
        """Close the provider's stream; its event is sent if it was not yet."""
        try:
            await self._fg_target.close()
        finally:
            self._fg_left_early(LEFT_EARLY)

    async def aclose(self) -> None:
        """Close the provider's stream; its event is sent if it was not yet."""
        try:
            await self._fg_target.aclose()
        finally:
            self._fg_left_early(LEFT_EARLY)

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await super().__aexit__(*exc_info)
        finally:
            self._fg_left_early(LEFT_EARLY)

    def __del__(self) -> None:
        try:
            # Not getattr(): on a half-built proxy it would recurse through __getattr__.
            timer = object.__getattribute__(self, "_fg_timer")
        except AttributeError:
            return
        if not timer.finished:
            self._fg_left_early(NEVER_CONSUMED)
