"""How answers are read: compression bombs in every encoding, within memory and deadlines."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import struct
import time
import tracemalloc
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import brotli
import pytest
from aiohttp import web
from backports import zstd

from fluxgate_async import DropReason, FluxGate
from fluxgate_async._config import MAX_RESPONSE_BYTES
from fluxgate_async._serving import start_app
from fluxgate_async._transport import USER_AGENT
from fluxgate_async.testing import FakeCollector

from .conftest import API_KEY

_MIB = 1 << 20
_ANSWER = json.dumps({"id": "evt_1", "createdAt": "2026-11-27T00:00:00Z", "cost": 0.1}).encode()


def _chunks(count: int) -> Iterator[bytes]:
    # Valid JSON's first byte, then zeros: what inflates is a number too long to read.
    yield b"1"
    for _ in range(count):
        yield b"0" * _MIB


def _gzip(count: int) -> bytes:
    packer = zlib.compressobj(9, wbits=31)
    return b"".join(packer.compress(c) for c in _chunks(count)) + packer.flush()


def _deflate(count: int, wbits: int) -> bytes:
    packer = zlib.compressobj(9, wbits=wbits)
    return b"".join(packer.compress(c) for c in _chunks(count)) + packer.flush()


def _brotli(count: int) -> bytes:
    packer = brotli.Compressor(quality=5)
    return b"".join(bytes(packer.process(c)) for c in _chunks(count)) + bytes(packer.finish())


def _zstd(count: int) -> bytes:
    packer = zstd.ZstdCompressor()
    return b"".join(packer.compress(c) for c in _chunks(count)) + packer.flush()


# (Content-Encoding, body): 64 MiB behind gzip and deflate, 256 MiB behind brotli and zstd.
BOMBS: dict[str, Callable[[], tuple[str, bytes]]] = {
    "gzip": lambda: ("gzip", _gzip(64)),
    "deflate-zlib": lambda: ("deflate", _deflate(64, 15)),
    "deflate-raw": lambda: ("deflate", _deflate(64, -15)),
    "br": lambda: ("br", _brotli(256)),
    "zstd": lambda: ("zstd", _zstd(256)),
}


@pytest.fixture(scope="module")
def bombs() -> dict[str, tuple[str, bytes]]:
    """Each bomb built once for the module."""
    return {name: make() for name, make in BOMBS.items()}


class AnswerServer:
    """A loopback server that answers every POST with the body and encoding it is given."""

    def __init__(self) -> None:
        self.status = 200
        self.body = _ANSWER
        self.encoding: str | None = None
        self.headers: dict[str, str] = {}
        # When set, the body is sent in these pieces without Content-Length, each
        # written once the client has had time to read the one before.
        self.chunks: list[bytes] | None = None
        self.seen_accept_encoding: list[str | None] = []
        self.moved_hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer with the configured body, sent as it is."""
        await request.read()
        self.seen_accept_encoding.append(request.headers.get("Accept-Encoding"))
        headers = {"Content-Type": "application/json", **self.headers}
        if self.encoding is not None:
            headers["Content-Encoding"] = self.encoding
        if self.chunks is None:
            return web.Response(status=self.status, body=self.body, headers=headers)
        response = web.StreamResponse(status=self.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in self.chunks:
            await response.write(chunk)
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    async def moved(self, request: web.Request) -> web.Response:
        """Where a redirect points: a valid answer, so following it would record the event."""
        await request.read()
        self.moved_hits += 1
        return web.Response(body=_ANSWER, headers={"Content-Type": "application/json"})


@pytest.fixture
async def server() -> AsyncIterator[AnswerServer]:
    """An AnswerServer on 127.0.0.1 and a free port."""
    answers = AnswerServer()
    app = web.Application()
    app.router.add_post("/api/events", answers.handle)
    app.router.add_route("*", "/moved", answers.moved)
    runner, port = await start_app(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    answers.url = f"http://127.0.0.1:{port}/api/events"
    try:
        yield answers
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("name", list(BOMBS))
async def test_a_compression_bomb_is_refused_within_memory_and_deadline(
    name: str,
    bombs: dict[str, tuple[str, bytes]],
    server: AnswerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An answer that inflates to hundreds of MiB is refused: little memory, no stalled loop."""
    server.encoding, server.body = bombs[name]
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0, max_retries=0) as fg:
        tracemalloc.start()
        try:
            started = time.monotonic()
            assert await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}}) is None
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * _MIB, f"{peak / _MIB:.1f} MiB held while reading a {name} bomb"
    assert elapsed < 2.0  # the call's own deadline
    expected = (
        f"answer is over {MAX_RESPONSE_BYTES} bytes"
        if name.startswith(("gzip", "deflate"))
        else f"answer in '{name}' encoding, which was not asked for"
    )
    assert expected in caplog.text
    assert server.seen_accept_encoding == ["identity"]


async def test_background_delivery_of_a_bomb_keeps_close_on_time(
    bombs: dict[str, tuple[str, bytes]], server: AnswerServer
) -> None:
    """Sixteen events answered with a gzip bomb: counted failed, and aclose(1) holds."""
    server.encoding, server.body = bombs["gzip"]
    fg = FluxGate(API_KEY, endpoint=server.url, timeout=2.0, max_retries=0)
    for n in range(16):
        assert fg.record_event_nowait({"usage": {"inputTokens": n, "outputTokens": 1}})
    started = time.monotonic()
    await fg.aclose(timeout=1.0)
    assert time.monotonic() - started < 1.0 + 2 * 1.0  # the close deadline, then the unwind
    stats = fg.stats
    assert stats.failed + stats.dropped.get(DropReason.SHUTDOWN, 0) == 16
    assert stats.sent == 0


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", lambda body: zlib.compress(body, wbits=31)),
        ("deflate", zlib.compress),
        ("deflate", lambda body: zlib.compress(body, wbits=-15)),
        ("identity", lambda body: body),
    ],
)
async def test_a_small_encoded_answer_is_read(
    encoding: str, pack: Callable[[bytes], bytes], server: AnswerServer
) -> None:
    """A server that compresses anyway still gets its small answer read."""
    server.encoding, server.body = encoding, pack(_ANSWER)
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        answer = await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}})
    assert answer is not None
    assert answer.id == "evt_1"


async def test_a_corrupt_gzip_answer_is_an_invalid_response(
    server: AnswerServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that claim to be gzip and are not: refused with a message, not raised."""
    server.encoding, server.body = "gzip", b"\x1f\x8b" + b"garbage" * 10
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        assert await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}}) is None
    assert "answer is not valid gzip" in caplog.text


async def test_an_error_answer_is_quoted_short_and_scrubbed(
    server: AnswerServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 echoing the request head: the log quotes 200 bytes, no Bearer value, no key piece."""
    server.status = 400
    server.body = (
        f"bad request; got Authorization: Bearer {API_KEY} and more " + "x" * 5000
    ).encode()
    caplog.set_level(logging.DEBUG, logger="fluxgate_async")
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        assert await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}}) is None
    line = next(r.getMessage() for r in caplog.records if "HTTP 400" in r.getMessage())
    assert "Authorization: Bearer ***" in line
    assert API_KEY[:8] not in line
    assert len(line) < 400


def _padded_answer(size: int) -> bytes:
    """The API's answer, padded with JSON whitespace to exactly `size` bytes."""
    return _ANSWER + b" " * (size - len(_ANSWER))


async def _record_in_background(url: str, **options: Any) -> tuple[list[tuple[Any, str]], Any]:
    """One event through record_event_nowait; what on_error heard, and the stats."""
    lost: list[tuple[Any, str]] = []
    async with FluxGate(
        API_KEY, endpoint=url, on_error=lambda ev, reason: lost.append((ev, reason)), **options
    ) as fg:
        assert fg.record_event_nowait(EVENT)
        assert await fg.flush(5)
    return lost, fg.stats


EVENT = {"usage": {"inputTokens": 1, "outputTokens": 1}}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed(server: AnswerServer, status: int) -> None:
    """A redirect is an unusable answer: the key never goes to the other URL, nothing recorded."""
    server.status, server.body = status, b""
    server.headers = {"Location": server.url.replace("/api/events", "/moved")}
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        assert await fg.record_event(EVENT) is None
    lost, stats = await _record_in_background(server.url)
    assert [reason for _, reason in lost] == [f"http_{status}"]
    assert (stats.sent, stats.failed) == (0, 1)
    assert server.moved_hits == 0
    assert len(server.seen_accept_encoding) == 2  # one attempt each: not retried


async def test_http_300_is_not_a_success(server: AnswerServer) -> None:
    """A 300 carrying a perfect answer body is still a failure (http_300), and not retried."""
    server.status = 300
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        assert await fg.record_event(EVENT) is None
    lost, stats = await _record_in_background(server.url)
    assert [reason for _, reason in lost] == ["http_300"]
    assert (stats.sent, stats.failed, stats.retried) == (0, 1, 0)
    server.status = 299
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        answer = await fg.record_event(EVENT)
    assert answer is not None
    assert answer.id == "evt_1"


async def test_an_answer_in_many_chunks_without_length_is_read_whole(
    server: AnswerServer,
) -> None:
    """40 KB sent in five pieces, no Content-Length: parsed from all of them, recorded."""
    body = _padded_answer(40_000)
    server.chunks = [body[i : i + 8_000] for i in range(0, len(body), 8_000)]
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        answer = await fg.record_event(EVENT)
    assert answer is not None
    assert answer.id == "evt_1"
    lost, stats = await _record_in_background(server.url)
    assert (lost, stats.sent) == ([], 1)


@pytest.mark.parametrize("form", ["content-length", "chunked", "gzip"])
@pytest.mark.parametrize(
    ("size", "recorded"),
    [(MAX_RESPONSE_BYTES, True), (MAX_RESPONSE_BYTES + 1, False)],
    ids=["at-the-cap", "one-over"],
)
async def test_the_answer_size_cap_is_exact(
    server: AnswerServer,
    caplog: pytest.LogCaptureFixture,
    size: int,
    recorded: bool,
    form: str,
) -> None:
    """An answer of exactly 64 KiB is read; one byte more is refused as invalid_response.

    Plain with its length, in chunks without one, or gzip with its length (the
    cap counts the bytes that came, before inflating).
    """
    body = _padded_answer(size)
    chunked = form == "chunked"
    if chunked:  # the cap's worth first, then the rest: the reader must not stop at the cap
        server.chunks = [c for c in (body[:MAX_RESPONSE_BYTES], body[MAX_RESPONSE_BYTES:]) if c]
    elif form == "gzip":
        server.encoding = "gzip"
        server.body = _gzip_with_comment(_ANSWER, size - len(_gzip_with_comment(_ANSWER, 0)))
        assert len(server.body) == size
    else:
        server.body = body
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        answer = await fg.record_event(EVENT)
    assert (answer is not None) is recorded
    lost, stats = await _record_in_background(server.url)
    assert [reason for _, reason in lost] == ([] if recorded else ["invalid_response"])
    assert stats.sent == int(recorded)
    if not recorded:
        expected = (
            f"answer is over {MAX_RESPONSE_BYTES} bytes"
            if chunked
            else f"answer of {size} bytes is over the limit"
        )
        assert expected in caplog.text


async def test_after_a_fork_the_parents_session_is_kept_and_a_fresh_one_used(
    server: AnswerServer,
) -> None:
    """As in a forked child: the inherited session is kept open, uncollected; a new one is used."""
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        assert await fg.record_event(EVENT) is not None
        transport = fg._transport
        assert transport is not None
        (inherited,) = [session for session, _ in transport._sessions.values()]
        kept = weakref.ref(inherited)
        del inherited
        transport.forget_parent()
        gc.collect()
        parent_session = kept()
        assert parent_session is not None
        assert not parent_session.closed
        answer = await fg.record_event(EVENT)
        assert answer is not None
        assert answer.id == "evt_1"
        assert transport.has_open_session
    assert not parent_session.closed  # closing the client leaves the parent's session alone
    await parent_session.close()


@pytest.mark.parametrize(
    ("encoding", "shown"),
    [("x" * 40, "x" * 40), ("x" * 41, "x" * 40 + "... (1 more characters)")],
    ids=["40_characters", "41_characters"],
)
async def test_an_unknown_encoding_is_named_cut_at_40_characters(
    server: AnswerServer, caplog: pytest.LogCaptureFixture, encoding: str, shown: str
) -> None:
    """An answer in an encoding nobody asked for is refused, its name cut after 40 characters."""
    server.encoding = encoding
    caplog.set_level(logging.DEBUG, logger="fluxgate_async")
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        assert await fg.record_event(EVENT) is None
    assert f"answer in '{shown}' encoding, which was not asked for" in caplog.text
    assert f"answer in '{shown}x" not in caplog.text


def _gzip_with_comment(body: bytes, comment_bytes: int) -> bytes:
    """`body` gzipped behind a header comment of `comment_bytes`: large raw, small inflated."""
    deflate = zlib.compressobj(wbits=-15)
    data = deflate.compress(body) + deflate.flush()
    header = b"\x1f\x8b\x08\x10" + b"\x00" * 4 + b"\x00\xff" + b"c" * comment_bytes + b"\x00"
    return header + data + struct.pack("<II", zlib.crc32(body), len(body))


@pytest.mark.parametrize(
    ("comment_bytes", "recorded"),
    [(1_000, True), (2 * MAX_RESPONSE_BYTES, False)],
    ids=["small_header", "header_over_the_cap"],
)
async def test_the_cap_counts_the_raw_bytes_of_an_encoded_answer(
    server: AnswerServer, comment_bytes: int, recorded: bool
) -> None:
    """A gzip answer whose raw bytes pass 64 KiB is refused even if it inflates to little."""
    raw = _gzip_with_comment(_ANSWER, comment_bytes)
    server.encoding = "gzip"
    server.chunks = [raw[i : i + 16_384] for i in range(0, len(raw), 16_384)]
    async with FluxGate(API_KEY, endpoint=server.url, timeout=5.0) as fg:
        answer = await fg.record_event(EVENT)
    assert (answer is not None) is recorded
    lost, stats = await _record_in_background(server.url)
    assert [reason for _, reason in lost] == ([] if recorded else ["invalid_response"])
    assert stats.sent == int(recorded)


async def test_a_huge_answer_without_length_is_refused_within_memory(
    server: AnswerServer, caplog: pytest.LogCaptureFixture
) -> None:
    """16 MiB sent in pieces, no Content-Length: reading stops past 64 KiB, memory stays low."""
    server.chunks = [b" " * _MIB] * 16
    async with FluxGate(API_KEY, endpoint=server.url, timeout=5.0, max_retries=0) as fg:
        tracemalloc.start()
        try:
            assert await fg.record_event(EVENT) is None
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * _MIB, f"{peak / _MIB:.1f} MiB held while reading a 16 MiB answer"
    assert f"answer is over {MAX_RESPONSE_BYTES} bytes" in caplog.text


@pytest.mark.parametrize(
    ("status", "body", "logged"),
    [
        (200, b"<html>oops</html>", "HTTP 200 answer is not JSON: b'<html>oops</html>'"),
        (201, b'{"cost": 1}', "HTTP 201 answer has no string id: {'cost': 1}"),
    ],
    ids=["not_json", "no_id"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_unusable_success_answer_is_logged_with_what_came(
    server: AnswerServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes,
    logged: str,
    chunked: bool,
) -> None:
    """A 2xx answer that cannot be read is an invalid_response, logged with its status and body."""
    server.status, server.body = status, body
    if chunked:
        server.chunks = [body]
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0) as fg:
        assert await fg.record_event(EVENT) is None
    assert logged in caplog.text


@pytest.mark.parametrize("borrowed", [False, True], ids=["own_session", "borrowed_session"])
async def test_every_post_carries_the_key_and_the_client_headers(borrowed: bool) -> None:
    """Through its own session or a borrowed one, each POST has the key, its type and its id."""
    async with FakeCollector() as collector, aiohttp.ClientSession() as session:
        async with FluxGate(
            API_KEY, endpoint=collector.url, session=session if borrowed else None
        ) as fg:
            assert await fg.record_event(EVENT) is not None
        (request,) = collector.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.headers["Accept-Encoding"] == "identity"
    assert request.idempotency_key is not None
    assert len(request.idempotency_key) == 36


@pytest.mark.parametrize(
    ("encoding", "body", "shown"),
    [
        (None, b"bad \xff\xfe request", "HTTP 400: 'bad \ufffd\ufffd request'"),
        ("br2", b"\x00\x01", "HTTP 400: \"answer in 'br2' encoding, which was not asked for\""),
    ],
    ids=["not_utf8", "unknown_encoding"],
)
async def test_an_error_answer_that_cannot_be_read_as_text_is_shown_never_raised(
    server: AnswerServer,
    caplog: pytest.LogCaptureFixture,
    encoding: str | None,
    body: bytes,
    shown: str,
) -> None:
    """Bytes that are not UTF-8 show as U+FFFD; an encoding not asked for is named instead."""
    server.status, server.encoding, server.body = 400, encoding, body
    async with FluxGate(API_KEY, endpoint=server.url, timeout=2.0, max_retries=0) as fg:
        assert await fg.record_event(EVENT) is None
    assert shown in caplog.text


async def test_a_refused_connection_is_logged_with_the_error_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection that cannot be made is named by aiohttp's error type in the WARNING."""
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/events"
        async with FluxGate(API_KEY, endpoint=url, timeout=2.0, max_retries=0) as fg:
            assert await fg.record_event(EVENT) is None
    assert "ClientConnectorError: Cannot connect to host 127.0.0.1:" in caplog.text
