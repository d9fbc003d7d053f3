"""`FakeCollector`: a local stand-in for the FluxGate API, for your tests and ours.

It is a real HTTP server on `127.0.0.1` and a free port, so your code under test
talks HTTP exactly as it does in production. It records every request and
answers like the API; each answer can be scripted to be slow, to fail, or to
drop the connection.

Example:
    ```python
    import asyncio

    from fluxgate_async import FluxGate
    from fluxgate_async.testing import FakeCollector, Reply


    async def my_feature(fg: FluxGate) -> None:
        # The code under test: it records what its LLM call used.
        await fg.record_event({"usage": {"inputTokens": 100, "outputTokens": 20}})


    async def test_my_feature_records_usage() -> None:
        async with FakeCollector() as collector, FluxGate("test", endpoint=collector.url) as fg:
            collector.reply_with(Reply(status=503, retry_after=0))  # first attempt fails
            await my_feature(fg)
        assert collector.events[0]["usage"]["inputTokens"] == 100


    asyncio.run(test_my_feature_records_usage())  # pytest-asyncio runs it in your suite
    ```
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import attrs
from aiohttp import web

from ._models import CreateAiEventResponse
from ._serving import start_app
from ._wire import answer_to_json

__all__ = ["FakeCollector", "RecordedRequest", "Reply"]

_AUTO: Any = object()


@attrs.frozen
class Reply:
    """How `FakeCollector` answers one request.

    Attributes:
        status: The HTTP status.
        body: A JSON-serialisable value, or `str`/`bytes` sent as they are. By
            default a 2xx answer is the API's `{id, createdAt, cost, status}` and
            any other status `{"error": ...}`.
        headers: Extra response headers.
        retry_after: Sent as the `Retry-After` header (seconds, or an HTTP date string).
        delay: Seconds to wait before answering (the server stays responsive to others).
        drop: Close the connection without answering at all.
    """

    status: int = 200
    body: Any = _AUTO
    headers: Mapping[str, str] = attrs.field(factory=dict)
    retry_after: float | str | None = None
    delay: float = 0.0
    drop: bool = False


@attrs.frozen
class RecordedRequest:
    """One request as `FakeCollector` received it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    json: Any
    """The parsed body, or `None` when it is not JSON."""
    received_at: float
    """`time.monotonic()` when it arrived."""
    peer: str
    """The client's `host:port`: requests on one keep-alive connection share it."""

    @property
    def idempotency_key(self) -> str | None:
        """The `Idempotency-Key` header, if sent."""
        return self.headers.get("Idempotency-Key")


class FakeCollector:
    """A local FluxGate API on a free loopback port; use it with `async with`.

    Every request lands in `requests`. Each event the server accepted lands once
    in `events`, however many times it was retried: a repeated `Idempotency-Key`
    gets the first answer again, as from the real API.

    Args:
        api_key: When set, requests without `Authorization: Bearer <api_key>` get 401.
        cost: The `cost` of the default answer.
        responder: Decides every answer that `reply_with` has not scripted.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        cost: float | None = 0.00042,
        responder: Callable[[RecordedRequest], Reply] | None = None,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        """Every request received, in order."""
        self.events: list[Any] = []
        """The JSON body of each accepted event, once per Idempotency-Key."""
        self.responder = responder
        """Decides the answer when no scripted reply is queued; `None` means success."""
        self._api_key = api_key
        self._cost = cost
        self._scripted: deque[Reply] = deque()
        self._answers: dict[str, tuple[int, bytes]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._port = 0

    @property
    def url(self) -> str:
        """The events endpoint to pass as `FluxGate(endpoint=...)`."""
        if self._runner is None:
            msg = "FakeCollector is not started: use `async with FakeCollector() as c`"
            raise RuntimeError(msg)
        return f"http://127.0.0.1:{self._port}/api/events"

    def reply_with(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order; then back to the default."""
        self._scripted.extend(replies)

    async def wait_for_events(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least `count` events were accepted.

        Raises:
            TimeoutError: Fewer arrived within `timeout` seconds.
        """
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.events) >= count)

    async def start(self) -> None:
        """Start serving on `127.0.0.1` and a free port."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/api/events", self._handle)
        self._runner, self._port = await start_app(
            app, "127.0.0.1", 0, shutdown_timeout=1.0, handler_cancellation=True
        )

    async def aclose(self) -> None:
        """Stop serving; answers still being delayed are abandoned."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=raw,
            json=parsed,
            received_at=time.monotonic(),
            peer="{}:{}".format(*(request.transport.get_extra_info("peername") or ("?", 0))[:2])
            if request.transport is not None
            else "?",
        )
        self.requests.append(recorded)
        if self._api_key is not None and (
            request.headers.get("Authorization") != f"Bearer {self._api_key}"
        ):
            return web.json_response({"error": "invalid API key"}, status=401)
        key = recorded.idempotency_key
        if key is not None and key in self._answers:
            status, body = self._answers[key]
            return web.Response(status=status, body=body, content_type="application/json")
        if self._scripted:
            reply = self._scripted.popleft()
        elif self.responder is not None:
            reply = self.responder(recorded)
        else:
            reply = Reply()
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay)
        if reply.drop or self._closing.is_set():
            if request.transport is not None:  # None once the client has gone
                request.transport.abort()
            # With handler_cancellation the lost connection cancels this handler;
            # waiting here keeps aiohttp from logging a failed response. Nothing
            # was answered, so nothing is recorded as accepted.
            await self._closing.wait()
            return web.Response(status=503)
        return await self._answer(reply, recorded, key)

    async def _answer(
        self, reply: Reply, recorded: RecordedRequest, key: str | None
    ) -> web.Response:
        accepted = 200 <= reply.status < 300
        body: Any = reply.body
        if body is _AUTO:
            body = (
                answer_to_json(
                    CreateAiEventResponse(
                        f"evt_{next(self._ids)}",
                        datetime.now(UTC).isoformat(),
                        self._cost,
                        "SUCCESS",
                    )
                )
                if accepted
                else {"error": f"scripted HTTP {reply.status}"}
            )
        payload = (
            body
            if isinstance(body, bytes)
            else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        )
        headers = dict(reply.headers)
        if reply.retry_after is not None:
            headers["Retry-After"] = str(reply.retry_after)
        if accepted:
            if key is not None:
                self._answers[key] = (reply.status, payload)
            async with self._arrived:
                self.events.append(recorded.json)
                self._arrived.notify_all()
        return web.Response(
            status=reply.status, body=payload, headers=headers, content_type="application/json"
        )
