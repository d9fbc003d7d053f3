"""One POST of one event, and the aiohttp session it goes through.

`Transport` owns the session's life: created lazily inside the running loop,
reused for keep-alive, replaced when the client is used from a new loop, and
closed with the loop if the program never calls `aclose()`. A session passed in
by the user is borrowed: used as it is, never closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from collections.abc import AsyncGenerator, Callable
from importlib.metadata import version
from typing import Any, TypeVar

import aiohttp
import attrs

from ._config import MAX_RESPONSE_BYTES, FluxGateConfig
from ._logging import quote, scrub, shorten
from ._retry import RETRYABLE_STATUSES, parse_retry_after
from ._stats import FailureReason
from ._wire import decode_json

__all__ = ["USER_AGENT", "Attempt", "Transport"]

USER_AGENT = f"fluxgate-async/{version('fluxgate-async')}"
"""Sent as `User-Agent` with every event."""

# What a caller reads of an answer: the whole `CreateAiEventResponse`, or only its id.
_Answer = TypeVar("_Answer")

_SNIPPET_BYTES = 200
_CHUNK_BYTES = 16 * 1024
# How long closing waits for another thread's loop to close its session.
_CLOSE_SECONDS = 2.0


@attrs.frozen
class Attempt:
    """Why one POST did not get an answer, and whether to try again.

    A POST that got one returns the answer itself: the common case allocates
    nothing more.
    """

    reason: str
    """Why it failed, a `FailureReason`: `connection`, `http_503`, `invalid_response`."""
    detail: str
    """For the log: what exactly happened."""
    retryable: bool = False
    retry_after: float | None = None


# Not mutated: mutmut's wrapper around an async generator cannot be started by
# hand as below (see tests/mutation-equivalents.md).
async def _close_with_loop(
    session: aiohttp.ClientSession,
) -> AsyncGenerator[None]:  # pragma: no mutate block
    # A suspended async generator is closed by the loop's `shutdown_asyncgens()`,
    # which `asyncio.run` and pytest-asyncio call before closing the loop: so a
    # program that forgets `aclose()` still closes its sockets while it can.
    pid = os.getpid()
    try:
        yield
    finally:
        # A forked child shares the parent's sockets: closing them from the child
        # would end the parent's TLS sessions. The child leaves them alone.
        if os.getpid() == pid:
            await session.close()


# Sessions a forked child inherited: kept, never closed nor collected, because
# their sockets are the parent's (closing or a collection warning would touch them).
_inherited: list[object] = []


class Transport:
    """Posts event bodies to the endpoint over one keep-alive session per event loop."""

    def __init__(self, config: FluxGateConfig, session: aiohttp.ClientSession | None) -> None:
        self._borrowed = session
        # One session per event loop: a session may only be used in its own loop,
        # and two threads may each run a loop that uses the client.
        self._sessions: dict[
            asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncGenerator[None]]
        ] = {}
        self._url = config.endpoint
        self._headers: dict[str, str] = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {config.api_key}",
            "User-Agent": USER_AGENT,
            # The answer is a few hundred bytes of JSON: nothing to gain from
            # compression, and an encoded answer is one more thing to bound.
            "Accept-Encoding": "identity",
        }
        # An owned session carries those as its defaults: each POST then adds
        # only its key, and aiohttp merges one header instead of five.
        self._own_headers = session is None

    @property
    def has_open_session(self) -> bool:
        """Whether this transport owns a session that is still open."""
        return any(not session.closed for session, _ in list(self._sessions.values()))

    def _current_session(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        if self._borrowed is not None:
            return self._borrowed
        entry = self._sessions.get(loop)
        if entry is None or entry[0].closed:
            # A new loop (a second `asyncio.run`, pytest-asyncio's loop per test,
            # another thread's): start afresh in it, and forget loops that ended.
            for ended in [other for other in list(self._sessions) if other.is_closed()]:
                self._sessions.pop(ended, None)
            session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=None)
            )
            guard = _close_with_loop(session)
            with contextlib.suppress(StopIteration):
                guard.asend(None).send(None)
            entry = self._sessions[loop] = (session, guard)
        return entry[0]

    async def post(
        self,
        body: bytes,
        idempotency_key: str,
        loop: asyncio.AbstractEventLoop,
        read: Callable[[object], _Answer | None],
    ) -> _Answer | Attempt:
        """POST one event body from `loop`, the running loop: FluxGate's answer, or why not.

        `read` takes the decoded JSON of a 2xx answer and returns what the
        caller needs of it (`parse_response` for the whole answer), or `None`
        when the answer is unusable (it has no string id).

        Never raises for what the network or the server does.
        """
        session = self._current_session(loop)
        if self._own_headers:
            headers = {"Idempotency-Key": idempotency_key}
        else:
            headers = {**self._headers, "Idempotency-Key": idempotency_key}
        try:
            # aiohttp would inflate any encoding it can (brotli and zstd too, when
            # importable) before a byte limit applies: a few KB become gigabytes.
            # The answer is read raw instead, and inflated here within the limit.
            resp = await session.post(
                self._url,
                data=body,
                headers=headers,
                allow_redirects=False,
                auto_decompress=False,
            )
            # Released by hand rather than with `async with`: its context managers add
            # a coroutine to every step of the request and two more to leave it (0.2 to
            # 2.8 µs of CPU per event, measured beside the bare aiohttp loop).
            try:
                if 200 <= resp.status < 300:
                    answer_headers = resp.headers
                    size = answer_headers.get("Content-Length")  # checked by aiohttp's parser
                    if (
                        size is not None
                        and "Content-Encoding" not in answer_headers
                        and int(size) <= MAX_RESPONSE_BYTES
                    ):
                        # The common answer, read here rather than in a coroutine of
                        # its own: plain, its length declared and within the limit,
                        # so aiohttp reads exactly that many bytes in one call.
                        return _answer(await resp.read(), resp.status, read)
                    return await _read_answer(resp, read)
                retryable = resp.status in RETRYABLE_STATUSES
                snippet = await _read_body(resp, _SNIPPET_BYTES, _SNIPPET_BYTES)
                text = (
                    snippet[:_SNIPPET_BYTES].decode(errors="replace")
                    if isinstance(snippet, bytes)
                    else snippet
                )
                return Attempt(
                    reason=FailureReason.http(resp.status),
                    detail=f"HTTP {resp.status}: {scrub(text)!r}",
                    retryable=retryable,
                    retry_after=(
                        parse_retry_after(resp.headers.get("Retry-After")) if retryable else None
                    ),
                )
            finally:
                # As leaving `async with` does: the connection goes back to the pool
                # when the answer was read whole, and is closed otherwise.
                resp.release()
        except (aiohttp.ClientError, OSError) as exc:
            # Covers refused and dropped connections, DNS, TLS and truncated answers;
            # retrying is safe because the Idempotency-Key makes the server dedupe.
            return Attempt(
                reason=FailureReason.CONNECTION,
                detail=scrub(shorten(f"{type(exc).__name__}: {exc}")),
                retryable=True,
            )

    def forget_parent(self) -> None:
        """In a forked child: leave the parent's session alone and start a fresh one when used."""
        _inherited.append(self._sessions)
        self._sessions = {}

    async def aclose(self) -> None:
        """Close the owned sessions; a borrowed session is left open.

        A session belongs to its loop: one of another thread's running loop is
        closed on that loop. Sessions of loops that have ended were closed by
        their shutdown.
        """
        current = asyncio.get_running_loop()
        for loop, (_, guard) in list(self._sessions.items()):
            self._sessions.pop(loop, None)
            if loop is current:
                await guard.aclose()
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(guard.aclose(), loop)
                async with asyncio.timeout(_CLOSE_SECONDS):
                    await asyncio.wrap_future(future)


class _Inflater:
    """Inflates gzip or deflate, never more than a given number of bytes."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._decoder: Any = None

    def feed(self, chunk: bytes, room: int) -> bytes:
        if self._decoder is None:
            # "deflate" is zlib-wrapped by the RFC, raw in some servers: the first
            # byte tells (a zlib header's low nibble is 8). 47 reads a gzip header.
            wbits = 47 if self._encoding != "deflate" else (15 if chunk[0] & 0x0F == 8 else -15)
            self._decoder = zlib.decompressobj(wbits=wbits)
        return bytes(self._decoder.decompress(chunk, room))


_IDENTITY = frozenset({"", "identity"})
_INFLATED = frozenset({"gzip", "x-gzip", "deflate"})


async def _read_body(resp: aiohttp.ClientResponse, raw_limit: int, limit: int) -> bytes | str:
    """The answer's body decoded, at most `limit` bytes of it; a `str` says why not.

    A body over the limit is cut for a snippet (`raw_limit == limit`), refused
    otherwise: the caller compares the length.
    """
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    inflater = None
    if encoding in _INFLATED:
        inflater = _Inflater(encoding)
    elif encoding not in _IDENTITY:
        return f"answer in {shorten(encoding, 40)!r} encoding, which was not asked for"
    out = bytearray()
    read = 0
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            read += len(chunk)
            out += chunk if inflater is None else inflater.feed(chunk, limit + 1 - len(out))
            if len(out) > limit or read > raw_limit:
                break
    except zlib.error as exc:
        return f"answer is not valid {encoding}: {exc}"
    return bytes(out)


async def _read_answer(
    resp: aiohttp.ClientResponse, read: Callable[[object], _Answer | None]
) -> _Answer | Attempt:
    """A 2xx answer that is compressed, over the limit or of undeclared length."""
    size = resp.content_length
    if size is not None and size > MAX_RESPONSE_BYTES:
        return _invalid(f"answer of {size} bytes is over the limit")
    raw = await _read_body(resp, MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES)
    if isinstance(raw, str):
        return _invalid(raw)
    if len(raw) > MAX_RESPONSE_BYTES:
        return _invalid(f"answer is over {MAX_RESPONSE_BYTES} bytes")
    return _answer(raw, resp.status, read)


def _answer(raw: bytes, status: int, read: Callable[[object], _Answer | None]) -> _Answer | Attempt:
    try:
        body = decode_json(raw)
    except ValueError:
        return _invalid(f"HTTP {status} answer is not JSON: {quote(raw[:_SNIPPET_BYTES])}")
    answer = read(body)
    if answer is None:
        return _invalid(f"HTTP {status} answer has no string id: {quote(body)}")
    return answer


def _invalid(detail: str) -> Attempt:
    return Attempt(reason=FailureReason.INVALID_RESPONSE, detail=detail)
