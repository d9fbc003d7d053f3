"""Loopback stand-ins for the providers' HTTP APIs, for the real SDKs to talk to.

`ProviderServer` is an `aiohttp.web` app on 127.0.0.1 and a free port that
answers each request with the next scripted `Answer`: a JSON body, or a
server-sent-event stream. Point an SDK's `base_url` at `server.url`.

Builders shape the providers' answers: chat completions (`chat_completion`,
`chat_chunks`, with `tool_call`s), Responses API bodies and their event streams
(`response`, `response_stream`, with `message_item` and `function_call_item`),
Anthropic messages (`anthropic_message`, `anthropic_stream`) and Gemini content
(`gemini_content`, `gemini_stream`). The streams are built from the final
answer, so a test states each answer once.

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

__all__ = [
    "ANTHROPIC_MODEL",
    "RESPONSES_MODEL",
    "SSE",
    "Answer",
    "FakeOpenAI",
    "ProviderServer",
    "Received",
    "anthropic_message",
    "anthropic_stream",
    "chat_chunks",
    "chat_completion",
    "function_call_item",
    "gemini_content",
    "gemini_stream",
    "message_item",
    "response",
    "response_stream",
    "tool_call",
]


# The models the providers name in their answers, by default.
RESPONSES_MODEL = "gpt-4.1-2025-04-14"
ANTHROPIC_MODEL = "claude-sonnet-4-6-20260217"


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
    tool_calls: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A chat completion body shaped like OpenAI's; with `tool_calls` (see `tool_call`), no text."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message = {**message, "content": None, "tool_calls": list(tool_calls)}
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
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
    tool_calls: Sequence[dict[str, Any]] = (),
) -> list[SSE]:
    """A chat completion stream shaped like OpenAI's, ending with `[DONE]`.

    With `with_usage`, a last chunk with empty `choices` carries the usage, as
    OpenAI sends it for `stream_options={"include_usage": True}`. With
    `tool_calls` (see `tool_call`), each call comes as one delta after the words.
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
    events += [
        chunk({"tool_calls": [{"index": index, **call}]}, None)
        for index, call in enumerate(tool_calls)
    ]
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


def tool_call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    """One function call of a chat completion's `tool_calls`."""
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {"id": call_id, "type": "function", "function": function}


# The Responses API.


def message_item(text: str, item_id: str = "msg_1") -> dict[str, Any]:
    """A Responses API output item: the assistant's text."""
    return {
        "type": "message",
        "id": item_id,
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def function_call_item(
    name: str, arguments: dict[str, Any], call_id: str = "call_1"
) -> dict[str, Any]:
    """A Responses API output item: a call of the caller's function `name`."""
    return {
        "type": "function_call",
        "id": "fc_" + call_id,
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }


def response(
    output: Sequence[dict[str, Any]],
    *,
    model: str = RESPONSES_MODEL,
    input_tokens: int = 36,
    output_tokens: int = 87,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """A completed Responses API body shaped like OpenAI's, with `output` items."""
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": list(output),
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None,
        "metadata": {},
    }


def response_stream(final: dict[str, Any]) -> list[SSE]:
    """The Responses API event stream that builds `final` item by item, as OpenAI sends it."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**final, "status": "in_progress"}},
        {"type": "response.in_progress", "response": {**final, "status": "in_progress"}},
    ]
    events[0]["response"].update(output=[], usage=None)
    events[1]["response"].update(output=[], usage=None)
    for index, item in enumerate(final["output"]):
        where = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "content": []},
                },
                {"type": "response.content_part.added", **where, "content_index": 0, "part": part},
                {
                    "type": "response.output_text.delta",
                    **where,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
                {
                    "type": "response.output_text.done",
                    **where,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                },
                {
                    "type": "response.content_part.done",
                    **where,
                    "content_index": 0,
                    "part": {**part, "text": text},
                },
            ]
        else:
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "arguments": ""},
                },
                {
                    "type": "response.function_call_arguments.delta",
                    **where,
                    "delta": item["arguments"],
                },
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "arguments": item["arguments"],
                },
            ]
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": final})
    return [
        SSE({**event, "sequence_number": number}, event["type"])
        for number, event in enumerate(events)
    ]


# Anthropic's Messages API.


def anthropic_message(
    content: Sequence[dict[str, Any]],
    *,
    model: str = ANTHROPIC_MODEL,
    stop_reason: str = "end_turn",
    input_tokens: int = 25,
    output_tokens: int = 15,
    cache_read: int = 0,
    cache_write: int = 0,
) -> dict[str, Any]:
    """A Messages API body shaped like Anthropic's, with `content` blocks."""
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


def anthropic_stream(final: dict[str, Any], *, counts_in_delta: bool = False) -> list[SSE]:
    """The Messages stream that builds `final` block by block, as Anthropic sends it.

    With `counts_in_delta`, `message_delta` repeats the input and cache counts
    next to the output count, as Anthropic's API sends them now.
    """
    start = {**final, "content": [], "stop_reason": None}
    start["usage"] = {**final["usage"], "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(final["content"]):
        opened: dict[str, Any]
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opened = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            {"type": "content_block_start", "index": index, "content_block": opened},
            {"type": "content_block_delta", "index": index, "delta": delta},
            {"type": "content_block_stop", "index": index},
        ]
    usage = final["usage"]
    delta_usage = {"output_tokens": usage["output_tokens"]}
    if counts_in_delta:
        delta_usage = {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
            **delta_usage,
        }
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": final["stop_reason"], "stop_sequence": None},
            "usage": delta_usage,
        },
        {"type": "message_stop"},
    ]
    return [SSE(event, event["type"]) for event in events]


# Gemini's API.


def gemini_content(
    parts: Sequence[dict[str, Any]],
    *,
    model: str = "gemini-2.5-flash",
    finish_reason: str = "STOP",
    prompt_tokens: int = 11,
    candidates_tokens: int = 7,
    thoughts_tokens: int = 0,
    cached_tokens: int = 0,
) -> dict[str, Any]:
    """A generateContent body shaped like Gemini's, with `parts` (text or `functionCall`)."""
    usage = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + thoughts_tokens,
    }
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    if cached_tokens:
        usage["cachedContentTokenCount"] = cached_tokens
    return {
        "candidates": [
            {
                "content": {"parts": list(parts), "role": "model"},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": "mK1iaJ3-Ao2ez7IPrs-gkQc",
    }


def gemini_stream(final: dict[str, Any]) -> list[SSE]:
    """A streamGenerateContent answer: one chunk per part, the last with the finish and usage.

    Gemini sends the running usage on every chunk; the earlier ones here carry
    the prompt's count only.
    """
    [candidate] = final["candidates"]
    parts = candidate["content"]["parts"]
    usage = final["usageMetadata"]
    chunks = []
    for number, part in enumerate(parts, start=1):
        last = number == len(parts)
        chunk_candidate: dict[str, Any] = {
            "content": {"parts": [part], "role": "model"},
            "index": 0,
        }
        if last:
            chunk_candidate["finishReason"] = candidate["finishReason"]
        chunks.append(
            SSE(
                {
                    **final,
                    "candidates": [chunk_candidate],
                    "usageMetadata": usage
                    if last
                    else {"promptTokenCount": usage["promptTokenCount"]},
                }
            )
        )
    return chunks


class FakeOpenAI(ProviderServer):
    """A loopback OpenAI API: `base_url=server.url + "/v1"`, answers scripted per call."""

    def answer_chat(self, **fields: Any) -> None:
        """Queue one chat completion answer; `fields` go to `chat_completion`."""
        self.answer(Answer(body=chat_completion(**fields)))

    def answer_chat_stream(self, **fields: Any) -> None:
        """Queue one streamed chat completion; `fields` go to `chat_chunks`."""
        self.answer(Answer(events=chat_chunks(**fields)))
