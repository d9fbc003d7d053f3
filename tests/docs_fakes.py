"""Loopback fakes the docs samples talk to: a FakeCollector and fakes of OpenAI, Anthropic, Gemini.

OpenAI's fake answers chat completions and the Responses API, which the agent
frameworks built on the OpenAI SDK call too.

They run in a thread with a loop of their own, so that they keep answering the
samples, each of which runs in its own interpreter. The provider fake answers
every call with one fixed, well-formed answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Self

from aiohttp import web

from fluxgate_async._serving import start_app
from fluxgate_async.testing import FakeCollector

_CHAT = {
    "id": "chatcmpl-docs",
    "object": "chat.completion",
    "created": 1764115200,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}
_RESPONSE = {
    "id": "resp_docs",
    "object": "response",
    "created_at": 1764115200,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_docs",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    },
}
_MESSAGE = {
    "id": "msg_docs",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}
_MESSAGE_STREAM = [
    ("message_start", {"type": "message_start", "message": {**_MESSAGE, "content": []}}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 3},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
_CONTENT = {
    "candidates": [
        {"content": {"parts": [{"text": "Hello!"}], "role": "model"}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15},
    "modelVersion": "gemini-2.5-flash",
}


async def _sse(request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        body = data if isinstance(data, str) else json.dumps(data)
        await response.write(f"{head}data: {body}\n\n".encode())
    await response.write_eof()
    return response


async def _openai_chat(request: web.Request) -> web.StreamResponse:
    if not (await request.json()).get("stream"):
        return web.json_response(_CHAT)
    chunk = {**_CHAT, "object": "chat.completion.chunk", "usage": None}
    delta = {"index": 0, "delta": {"content": "Hello!"}, "finish_reason": "stop"}
    return await _sse(
        request,
        [
            (None, {**chunk, "choices": [delta]}),
            (None, {**chunk, "choices": [], "usage": _CHAT["usage"]}),
            (None, "[DONE]"),
        ],
    )


async def _openai_responses(request: web.Request) -> web.Response:
    return web.json_response(_RESPONSE)


async def _anthropic_messages(request: web.Request) -> web.StreamResponse:
    if not (await request.json()).get("stream"):
        return web.json_response(_MESSAGE)
    return await _sse(request, list(_MESSAGE_STREAM))


async def _gemini_content(request: web.Request) -> web.Response:
    return web.json_response(_CONTENT)


async def _gemini_stream(request: web.Request) -> web.StreamResponse:
    return await _sse(request, [(None, _CONTENT)])


class ThreadedServers:
    """A `FakeCollector` and fakes of OpenAI, Anthropic and Gemini, in a thread of their own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.collector: FakeCollector | None = None
        self._providers: web.AppRunner | None = None
        self.providers_url = ""

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    @property
    def events_url(self) -> str:
        """The FakeCollector's endpoint."""
        assert self.collector is not None
        return self.collector.url

    def environment(self) -> dict[str, str]:
        """The value each variable a page may tell its reader to set takes in the docs tests."""
        return {
            "FLUXGATE_API_KEY": "docs-test-key",
            "FLUXGATE_ENDPOINT": self.events_url,
            "OPENAI_API_KEY": "sk-docs",
            "OPENAI_BASE_URL": f"{self.providers_url}/v1",
            "ANTHROPIC_API_KEY": "sk-ant-docs",
            "ANTHROPIC_BASE_URL": self.providers_url,
            "GOOGLE_API_KEY": "g-docs",
            "GOOGLE_GEMINI_BASE_URL": self.providers_url,
            # Not a fake: LiteLLM's own switch to read its bundled price map, not download it.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self.collector = FakeCollector()
        await self.collector.start()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _openai_chat)
        app.router.add_post("/v1/responses", _openai_responses)
        app.router.add_post("/v1/messages", _anthropic_messages)
        app.router.add_post("/{version}/models/{model}:generateContent", _gemini_content)
        app.router.add_post("/{version}/models/{model}:streamGenerateContent", _gemini_stream)
        self._providers, port = await start_app(app, "127.0.0.1", 0, shutdown_timeout=1.0)
        self.providers_url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self.collector is not None:
            await self.collector.aclose()
        if self._providers is not None:
            await self._providers.cleanup()
