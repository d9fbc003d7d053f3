"""Loopback stand-ins for the providers' HTTP APIs, for the real SDKs to talk to.

`ProviderServer` is an `aiohttp.web` app on 127.0.0.1 and a free port that
answers each request with the next scripted `Answer`: a JSON body, or a
server-sent-event stream. Point an SDK's `base_url` at `server.url`.

`FakeOpenAI` adds ready-made OpenAI chat completion answers; the benchmarks
reuse it:

    async with FakeOpenAI() as server:
        client = AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1")
        server.answer_chat(prompt_tokens=10, completion_tokens=5)
        await client.chat.completions.create(model="gpt-4o-mini", messages=[...])

With `FakeOpenAI(repeat=True)` the last scripted answer is reused for every
further request, so a benchmark can script once and call many times.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import attrs
from aiohttp import web

from fluxgate_async._serving import start_app

__all__ = ["SSE", "Answer", "FakeOpenAI", "ProviderServer", "Received", "chat_chunks"]


@attrs.frozen
class SSE:
    """One server-sent event: `data` (JSON-encoded unless a str) and an optional `event` name."""

    data: Any
    event: str | None = None

    def encode(self) -> bytes:
        """The event's bytes on the wire."""
        data = self.data if isinstance(self.data, str) else json.dumps(self.data)
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {data}\n\n".encode()


@attrs.frozen
class Answer:
    """How `ProviderServer` answers one request.

    Attributes:
        status: The HTTP status.
        body: A JSON body (for non-stream answers).
        events: Server-sent events, sent as `text/event-stream` instead of `body`.
        delay: Seconds to wait before answering.
        hang: After the events (or instead of a body), keep the connection open
            without sending more, until the server closes.
        headers: Extra response headers.
    """

    status: int = 200
    body: Any = None
    events: Sequence[SSE] | None = None
    delay: float = 0.0
    hang: bool = False
    headers: Any = attrs.field(factory=dict)


@attrs.frozen
class Received:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


class ProviderServer:
    """A scripted HTTP API on a free loopback port; use it with `async with`."""

    def __init__(self, *, repeat: bool = False) -> None:
        self.requests: list[Received] = []
        self._answers: deque[Answer] = deque()
        self._repeat = repeat
        self._last: Answer | None = None
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._port = 0

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, without a trailing slash."""
        return f"http://127.0.0.1:{self._port}"

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests, in order."""
        self._answers.extend(answers)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self._port = await start_app(
            app, "127.0.0.1", 0, shutdown_timeout=0.5, handler_cancellation=True
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        # Multipart uploads (images, audio) are kept out of `json`.
        is_json = bool(raw) and request.content_type == "application/json"
        self.requests.append(
            Received(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=json.loads(raw) if is_json else None,
            )
        )
        if self._answers:
            answer = self._last = self._answers.popleft()
        elif self._repeat and self._last is not None:
            answer = self._last
        else:
            return web.json_response({"error": {"message": "no scripted answer"}}, status=500)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.events is None:
            if answer.hang:
                await self._closing.wait()
            return web.json_response(answer.body, status=answer.status, headers=answer.headers)
        response = web.StreamResponse(
            status=answer.status,
            headers={"Content-Type": "text/event-stream", **answer.headers},
        )
        await response.prepare(request)
        for event in answer.events:
            await response.write(event.encode())
        if answer.hang:
            await self._closing.wait()
        await response.write_eof()
        return response


def chat_completion(
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    content: str = "Hello!",
    finish_reason: str | None = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """A chat completion body shaped like OpenAI's."""
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }


def chat_chunks(
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    words: Sequence[str] = ("Hel", "lo", "!"),
    finish_reason: str = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int = 3,
    cached_tokens: int = 0,
    with_usage: bool = True,
) -> list[SSE]:
    """A chat completion stream shaped like OpenAI's, ending with `[DONE]`.

    With `with_usage`, a last chunk with empty `choices` carries the usage, as
    OpenAI sends it for `stream_options={"include_usage": True}`.
    """
    base = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": model,
        "system_fingerprint": "fp_44709d6fcb",
    }
    usage_field = {"usage": None} if with_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None) -> SSE:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return SSE({**base, "choices": [choice], **usage_field})

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": word}, None) for word in words]
    events.append(chunk({}, finish_reason))
    if with_usage:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        events.append(SSE({**base, "choices": [], "usage": usage}))
    events.append(SSE("[DONE]"))
    return events


class FakeOpenAI(ProviderServer):
    """A loopback OpenAI API: `base_url=server.url + "/v1"`, answers scripted per call."""

    def answer_chat(self, **fields: Any) -> None:
        """Queue one chat completion answer; `fields` go to `chat_completion`."""
        self.answer(Answer(body=chat_completion(**fields)))

    def answer_chat_stream(self, **fields: Any) -> None:
        """Queue one streamed chat completion; `fields` go to `chat_chunks`."""
        self.answer(Answer(events=chat_chunks(**fields)))
