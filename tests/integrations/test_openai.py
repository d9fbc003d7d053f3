"""`track_openai`: the real `openai.AsyncOpenAI` against a loopback OpenAI API."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import time
import warnings
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from fluxgate_async import FluxGate, tracking_context, tracking_of
from fluxgate_async._recording import Mode
from fluxgate_async.integrations import openai as fg_openai
from fluxgate_async.integrations._proxy import TrackedStream
from fluxgate_async.integrations._requests import Route
from fluxgate_async.integrations.openai import detect_provider, track_openai
from fluxgate_async.testing import FakeCollector

from ..conftest import API_KEY
from .helpers import cancel_reading, cancel_when, recorded
from .servers import SSE, Answer, FakeOpenAI, chat_chunks, chat_completion

MESSAGES: Any = [{"role": "user", "content": "Say hello"}]


def response_body(
    status: str = "completed",
    *,
    incomplete: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A Responses API body shaped like OpenAI's."""
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None if error is None else {"code": "server_error", "message": error},
        "incomplete_details": None if incomplete is None else {"reason": incomplete},
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4.1-2025-04-14",
        "output": [
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
            }
        ],
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
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 12},
            "total_tokens": 123,
        },
        "user": None,
        "metadata": {},
    }


async def test_chat_completion_records_one_event_field_by_field(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """A chat completion records its tokens, model, provider, latency, status and metadata."""
    client = track_openai(raw, fg, mode=mode, feature="chat", plan="pro")
    server.answer_chat(
        prompt_tokens=120, completion_tokens=30, cached_tokens=64, reasoning_tokens=8
    )

    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert reply.choices[0].message.content == "Hello!"
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert usage.pop("latencyInMs") > 0
    assert usage == {
        "inputTokens": 120,
        "outputTokens": 30,
        "cachedTokens": 64,
        "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "isStreamed": False,
    }
    assert event["status"] == "SUCCESS"
    assert event["metadata"] == {
        "feature": "chat",
        "plan": "pro",
        "finishReason": "stop",
        "reasoningTokens": 8,
    }


async def test_tracked_client_follows_changes_to_the_original_client(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A setting changed on the client after a tracked call is used by the next one."""
    client = track_openai(raw, fg)
    other = track_openai(raw.copy(api_key="sk-copy"), fg)
    for _ in range(2):
        server.answer_chat()
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    raw.api_key = "sk-changed"
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    server.answer_chat()
    await other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    keys = [received.headers["Authorization"] for received in server.requests]
    assert keys == ["Bearer sk-test", "Bearer sk-changed", "Bearer sk-copy"]
    assert client.chat is not other.chat
    await recorded(fg, collector, 3)


class ClosingWhenCollected(AsyncOpenAI):
    """A client subclass that does something when collected, as some applications' do."""

    collected: list[int] = []  # noqa: RUF012 - shared on purpose: what every instance did

    def __del__(self) -> None:
        """Note that an instance of this class was collected."""
        ClosingWhenCollected.collected.append(id(self))


async def test_tracking_leaves_the_original_client_as_it_was(
    server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Tracked calls add nothing to the client; dropping the tracked one runs none of its code."""
    raw = ClosingWhenCollected(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)
    for _ in range(2):
        server.answer_chat()
    await raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attributes = dict(vars(raw))
    client = track_openai(raw, fg)
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    await recorded(fg, collector)
    del client
    gc.collect()

    assert vars(raw) == attributes
    assert ClosingWhenCollected.collected == []
    await raw.close()


async def test_inline_mode_attaches_fluxgate_answer_without_changing_the_response(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """In inline mode the response carries FluxGate's answer; its data and equality are intact."""
    client = track_openai(raw, fg, mode="inline")
    server.answer_chat()
    server.answer_chat()

    tracked = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    untracked = await raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    tracking = tracking_of(tracked)
    assert tracking is not None
    assert tracked.fluxgate_tracking is tracking  # type: ignore[attr-defined]
    assert tracking.status == "SUCCESS"
    assert tracking.cost == 0.00042
    assert tracking.tracking_id == "evt_1"
    assert tracking.created_at
    assert tracking.error_message is None
    assert tracked == untracked
    assert tracked.model_dump() == untracked.model_dump()
    assert tracked.to_json() == untracked.to_json()
    assert tracking_of(untracked) is None


async def test_inline_mode_without_an_answer_still_reports_the_status(
    raw: AsyncOpenAI, server: FakeOpenAI, collector: FakeCollector
) -> None:
    """When FluxGate is unreachable the call succeeds and its tracking has no id or cost."""
    async with FluxGate("k", endpoint=collector.url, timeout=0.5, max_retries=0) as fg:
        await collector.aclose()
        client = track_openai(raw, fg, mode="inline")
        server.answer_chat(finish_reason="length")
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    tracking = tracking_of(reply)
    assert tracking is not None
    assert (tracking.status, tracking.cost, tracking.tracking_id) == ("MAX_TOKENS", None, None)
    assert tracking.created_at is None


async def test_background_mode_attaches_nothing(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """In background mode the response is returned before FluxGate answers: nothing is attached."""
    client = track_openai(raw, fg)
    server.answer_chat()
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert tracking_of(reply) is None
    assert not hasattr(reply, "fluxgate_tracking")
    await recorded(fg, collector)


async def test_background_call_counts_and_flushes_before_the_task_yields(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """The event is built once the caller yields, but stats and flush() right after see it."""
    client = track_openai(raw, fg)
    server.answer_chat()
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert fg.stats.enqueued == 1
    server.answer_chat()
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert await fg.flush(5)
    assert len(collector.events) == 2


async def test_background_call_closed_at_once_is_delivered(
    raw: AsyncOpenAI, server: FakeOpenAI, collector: FakeCollector
) -> None:
    """`aclose()` right after a call, before the task yields, still delivers its event."""
    fg = FluxGate(API_KEY, endpoint=collector.url, timeout=2.0)
    client = track_openai(raw, fg)
    server.answer_chat()
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    await fg.aclose()
    assert fg.stats.sent == 1
    assert len(collector.events) == 1


async def test_background_latency_ends_when_the_call_returns(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """What the caller does before yielding is not counted in the call's latency."""
    client = track_openai(raw, fg)
    server.answer_chat()
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    time.sleep(0.5)  # noqa: ASYNC251 - the caller's own blocking work, before its next await
    [event] = await recorded(fg, collector)
    assert event["usage"]["latencyInMs"] < 500


async def test_a_child_forked_right_after_a_call_does_not_record_it(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A process forked before the caller yields: the parent records the call, the child not."""
    client = track_openai(raw, fg)
    server.answer_chat()
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock;
        # the child touches nothing another thread holds.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = fg.stats.enqueued
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)  # noqa: ASYNC222 - the child exits at once
    assert os.waitstatus_to_exitcode(status) == 0
    await recorded(fg, collector)


def test_a_call_whose_loop_stops_at_once_is_reported_at_exit() -> None:
    """The loop stops before the call's event is built: at exit it is counted as never sent."""
    code = f"""
import asyncio, httpx, openai
from fluxgate_async import FluxGate
from fluxgate_async.integrations.openai import track_openai

BODY = {chat_completion()!r}

async def main():
    fg = FluxGate("fg_test_key_0000", endpoint="http://127.0.0.1:9/api/events")
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=BODY))
    raw = openai.AsyncOpenAI(
        api_key="sk-test", base_url="http://127.0.0.1:9/v1",
        http_client=httpx.AsyncClient(transport=transport),
    )
    client = track_openai(raw, fg)
    await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    asyncio.get_running_loop().stop()  # before this task yields
    return fg

loop = asyncio.new_event_loop()
fg = loop.run_until_complete(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "1 event(s) still queued at exit were never sent" in done.stderr


@pytest.mark.parametrize(
    ("finish_reason", "status"),
    [
        ("stop", "SUCCESS"),
        ("tool_calls", "SUCCESS"),
        ("function_call", "SUCCESS"),
        ("length", "MAX_TOKENS"),
        ("content_filter", "CONTENT_FILTER"),
        (None, "SUCCESS"),
    ],
)
async def test_chat_finish_reason_sets_the_status(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    finish_reason: str | None,
    status: str,
) -> None:
    """Each chat finish reason maps to its row of the status table."""
    client = track_openai(raw, fg)
    server.answer_chat(finish_reason=finish_reason)
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = await recorded(fg, collector)
    assert event["status"] == status
    assert event["metadata"].get("finishReason") == finish_reason


async def test_chat_stream_yields_the_untracked_chunks_and_records_usage(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """A chat stream asks for usage, hides the extra usage chunk, and records one streamed event."""
    client = track_openai(raw, fg, mode=mode)
    server.answer_chat_stream(finish_reason="length", prompt_tokens=40, completion_tokens=7)
    server.answer(Answer(events=chat_chunks(finish_reason="length", with_usage=False)))

    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    tracked = [chunk async for chunk in stream]
    plain = await raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    untracked = [chunk async for chunk in plain]

    assert [c.model_dump(exclude={"usage"}) for c in tracked] == [
        c.model_dump(exclude={"usage"}) for c in untracked
    ]
    assert server.requests[0].json["stream_options"] == {"include_usage": True}
    assert "stream_options" not in server.requests[1].json
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["cachedTokens"]) == (40, 7, 0)
    assert usage["isStreamed"] is True
    assert usage["latencyInMs"] >= usage["streamingDurationInMs"] >= 0
    assert usage["model"] == "gpt-4o-mini-2024-07-18"
    assert event["status"] == "MAX_TOKENS"
    metadata = event["metadata"]
    assert metadata["finishReason"] == "length"
    assert 0 < metadata["timeToFirstTokenMs"] <= usage["latencyInMs"]
    assert (tracking_of(stream) is not None) is (mode == "inline")


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_keeps_the_callers_include_usage(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    include_usage: bool,
) -> None:
    """A caller's own `include_usage` is sent as given, and a usage chunk it asked for is shown."""
    client = track_openai(raw, fg)
    server.answer_chat_stream(with_usage=include_usage, prompt_tokens=9, completion_tokens=3)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    chunks = [chunk async for chunk in stream]
    assert server.requests[0].json["stream_options"] == {"include_usage": include_usage}
    assert (chunks[-1].usage is not None) is include_usage
    [event] = await recorded(fg, collector)
    expected = (9, 3) if include_usage else (0, 0)
    assert (event["usage"]["inputTokens"], event["usage"]["outputTokens"]) == expected


async def test_chat_stream_read_with_anext_and_async_with(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A stream read chunk by chunk inside `async with` records one event at its end."""
    client = track_openai(raw, fg)
    server.answer_chat_stream()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    seen = 0
    async with stream as entered:
        assert entered is stream
        for _ in range(10):
            try:
                await stream.__anext__()
            except StopAsyncIteration:
                break
            seen += 1
    assert seen == 5
    [event] = await recorded(fg, collector)
    assert event["status"] == "SUCCESS"
    assert event["usage"]["outputTokens"] == 3


async def test_break_before_the_end_records_one_error_event(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """Leaving a stream with `break` before any finish reason records ERROR, once."""
    client = track_openai(raw, fg, mode=mode)
    server.answer_chat_stream()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    async for _chunk in stream:
        break
    await stream.close()
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "stream closed before its end"}
    assert event["usage"]["isStreamed"] is True
    assert event["usage"]["streamingDurationInMs"] >= 0


async def test_break_after_the_finish_reason_keeps_its_status(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Leaving a stream right after its finish reason records that reason's status."""
    client = track_openai(raw, fg)
    server.answer_chat_stream(finish_reason="content_filter")
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            break
    await stream.close()
    [event] = await recorded(fg, collector)
    assert event["status"] == "CONTENT_FILTER"


@pytest.mark.parametrize("how", ["close", "aclose", "async_with"])
async def test_closing_a_stream_early_records_one_event(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, how: str
) -> None:
    """`close()`, `aclose()` or leaving `async with` before the end records exactly one event."""
    client = track_openai(raw, fg)
    server.answer_chat_stream()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    if how == "async_with":
        async with stream:
            await stream.__anext__()
    elif how == "aclose" and not hasattr(openai.AsyncStream, "aclose"):
        # An SDK without aclose(): the tracked stream raises what the SDK's raises.
        await stream.__anext__()
        with pytest.raises(AttributeError, match="aclose"):
            await stream.aclose()
    else:
        await stream.__anext__()
        await getattr(stream, how)()
    await stream.close()
    [event] = await recorded(fg, collector)
    assert event["status"]["errorMessage"] == "stream closed before its end"


async def test_unconsumed_stream_collected_records_one_event(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A stream dropped without being read records one event when it is collected."""
    client = track_openai(raw, fg)
    server.answer_chat_stream()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    response = stream.response
    del stream
    gc.collect()
    await response.aclose()
    [event] = await recorded(fg, collector)
    assert event["status"]["errorMessage"] == "stream collected before its end"
    assert "streamingDurationInMs" not in event["usage"]


@pytest.mark.parametrize(
    ("status", "error", "recorded_status"),
    [
        (400, openai.BadRequestError, "MALFORMED_REQUEST"),
        (404, openai.NotFoundError, "MALFORMED_REQUEST"),
        (422, openai.UnprocessableEntityError, "MALFORMED_REQUEST"),
        (401, openai.AuthenticationError, "ERROR"),
        (429, openai.RateLimitError, "ERROR"),
        (500, openai.InternalServerError, "ERROR"),
    ],
)
async def test_provider_error_is_recorded_and_reraised_unchanged(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    mode: Mode,
    status: int,
    error: type[openai.APIStatusError],
    recorded_status: str,
) -> None:
    """An API error records its status and message, and the caller gets the SDK's own error."""
    client = track_openai(raw, fg, mode=mode)
    body = {
        "error": {
            "message": "Invalid 'messages': empty array.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "empty_array",
        }
    }
    server.answer(Answer(status=status, body=body), Answer(status=status, body=body))
    with pytest.raises(error) as tracked:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(error) as untracked:
        await raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert str(tracked.value) == str(untracked.value)
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": recorded_status, "errorMessage": tracked.value.message}
    assert event["usage"]["inputTokens"] == 0
    assert event["usage"]["model"] == "gpt-4o-mini"


async def test_connection_error_is_recorded_and_reraised(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """A provider that cannot be reached records ERROR and raises the SDK's connection error."""
    async with FakeOpenAI() as gone:
        url = gone.url
    async with AsyncOpenAI(api_key="sk", base_url=url + "/v1", max_retries=0) as raw:
        client = track_openai(raw, fg)
        with pytest.raises(openai.APIConnectionError):
            await client.embeddings.create(model="text-embedding-3-small", input="hi")
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "Connection error."}


async def test_error_event_in_a_stream_is_recorded_with_the_usage_seen(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """An error inside a stream records ERROR once, and the caller gets the SDK's APIError."""
    client = track_openai(raw, fg)
    chunks = chat_chunks()[:2]
    server.answer(Answer(events=[*chunks, SSE({"error": {"message": "overloaded"}})]))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError, match="overloaded"):
        async for _chunk in stream:
            pass
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "overloaded"}
    assert event["usage"]["model"] == "gpt-4o-mini-2024-07-18"


async def test_cancelled_call_records_cancelled_and_propagates(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """Cancelling a call in flight records ERROR "cancelled" and the task ends cancelled."""
    client = track_openai(raw, fg, mode=mode)
    server.answer(Answer(body=chat_completion(), hang=True))
    task = asyncio.create_task(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    )
    await cancel_when(task, lambda: bool(server.requests))
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "cancelled"}


async def test_cancelled_stream_records_the_usage_seen_so_far(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Cancelling a stream mid-way records ERROR "cancelled" with the chunks' model, once."""
    client = track_openai(raw, fg)
    server.answer(Answer(events=chat_chunks()[:2], hang=True))
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    await cancel_reading(stream, chunks=2)
    await stream.close()
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "cancelled"}
    assert event["usage"]["model"] == "gpt-4o-mini-2024-07-18"
    assert event["usage"]["isStreamed"] is True


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (response_body(), "SUCCESS"),
        (
            response_body("failed", error="The model crashed"),
            {"status": "ERROR", "errorMessage": "The model crashed"},
        ),
        (response_body("incomplete", incomplete="max_output_tokens"), "MAX_TOKENS"),
        (response_body("incomplete", incomplete="content_filter"), "CONTENT_FILTER"),
        (
            response_body("incomplete", incomplete="max_messages"),
            {"status": "ERROR", "errorMessage": "incomplete: max_messages"},
        ),
        (response_body("cancelled"), {"status": "ERROR", "errorMessage": "cancelled"}),
    ],
)
async def test_responses_create_records_usage_and_status(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    body: dict[str, Any],
    status: Any,
) -> None:
    """`responses.create` records its usage, and its status by the Responses table."""
    client = track_openai(raw, fg)
    server.answer(Answer(body=body))
    response = await client.responses.create(model="gpt-4.1", input="Say hello")
    assert response.output_text == "Hello!"
    [event] = await recorded(fg, collector)
    assert event["status"] == status
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["cachedTokens"]) == (36, 87, 4)
    assert usage["model"] == "gpt-4.1-2025-04-14"
    assert event["metadata"]["reasoningTokens"] == 12
    assert event["metadata"]["finishReason"] == (
        (body["incomplete_details"] or {}).get("reason") or body["status"]
    )


def response_events(final: dict[str, Any], kind: str = "response.completed") -> list[SSE]:
    """A Responses API event stream, as OpenAI sends it."""
    started = {**final, "status": "in_progress", "usage": None, "output": []}
    return [
        SSE(
            {"type": "response.created", "sequence_number": 0, "response": started},
            "response.created",
        ),
        SSE(
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Hello!",
                "logprobs": [],
            },
            "response.output_text.delta",
        ),
        SSE({"type": kind, "sequence_number": 2, "response": final}, kind),
    ]


async def test_responses_stream_records_the_final_response(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """A streamed `responses.create` records the usage of its final event, streamed."""
    client = track_openai(raw, fg, mode=mode)
    final = response_body("incomplete", incomplete="max_output_tokens")
    server.answer(Answer(events=response_events(final, "response.incomplete")))
    stream = await client.responses.create(model="gpt-4.1", input="hi", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds == ["response.created", "response.output_text.delta", "response.incomplete"]
    [event] = await recorded(fg, collector)
    assert event["status"] == "MAX_TOKENS"
    assert event["usage"]["isStreamed"] is True
    assert (event["usage"]["inputTokens"], event["usage"]["outputTokens"]) == (36, 87)


async def test_responses_stream_error_event_records_error(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """An `error` event in a Responses stream records ERROR with its message."""
    client = track_openai(raw, fg)
    events = response_events(response_body())[:2]
    error = {
        "type": "error",
        "sequence_number": 2,
        "code": "server_error",
        "message": "boom",
        "param": None,
    }
    server.answer(Answer(events=[*events, SSE(error, "error")]))
    stream = await client.responses.create(model="gpt-4.1", input="hi", stream=True)
    assert len([e async for e in stream]) == 3
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "boom"}
    assert event["usage"]["model"] == "gpt-4.1-2025-04-14"


async def test_embeddings_record_prompt_tokens(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """`embeddings.create` records its prompt tokens as input and no output."""
    client = track_openai(raw, fg, mode=mode)
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    server.answer(Answer(body=body))
    result = await client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(result.data) == 1
    [event] = await recorded(fg, collector)
    assert event["usage"]["inputTokens"] == 8
    assert event["usage"]["outputTokens"] == 0
    assert event["usage"]["model"] == "text-embedding-3-small"
    assert event["status"] == "SUCCESS"


async def test_wrapper_is_a_drop_in_and_leaves_the_client_untouched(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """The wrapper passes for the SDK client, forwards the rest; the original stays untracked."""
    original_create = raw.chat.completions.create
    client = track_openai(raw, fg)
    assert isinstance(client, AsyncOpenAI)
    assert client.api_key == "sk-test"
    assert repr(client) == repr(raw)
    assert "chat" in dir(client)
    assert raw.chat.completions.create == original_create
    client.max_retries = 0
    assert raw.max_retries == 0
    server.answer(Answer(body={"object": "list", "data": []}))
    models = await client.models.list()
    assert models.data == []
    server.answer_chat()
    await raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert await fg.flush(5)
    assert collector.events == []


async def test_with_options_and_copy_stay_tracked(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Clients made by `with_options` and `copy` are tracked too, with the same defaults."""
    client = track_openai(raw, fg, feature="f")
    server.answer_chat()
    server.answer_chat()
    await client.with_options(timeout=5).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    await client.copy().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    events = await recorded(fg, collector, 2)
    assert [e["metadata"]["feature"] for e in events] == ["f", "f"]


async def test_tracking_context_overrides_wrapper_defaults(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Metadata from `tracking_context` is merged over the wrapper's defaults."""
    client = track_openai(raw, fg, feature="default", step="one")
    server.answer_chat_stream()
    with tracking_context(feature="search", user="user-123", session_id="s-1"):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    # The context of the call, not of where the stream is read, is recorded.
    async for _chunk in stream:
        pass
    [event] = await recorded(fg, collector)
    metadata = event["metadata"]
    assert (metadata["feature"], metadata["step"]) == ("search", "one")
    assert (metadata["user"], metadata["sessionId"]) == ("user-123", "s-1")


@pytest.mark.parametrize(
    ("base_url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://my-res.openai.azure.com/openai/deployments/gpt-4o", "azure"),
        ("https://my-res.cognitiveservices.azure.com/openai", "azure"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://api.x.ai/v1", "xai"),
        ("https://api.deepseek.com", "deepseek"),
        ("https://api.together.xyz/v1", "together"),
        ("https://api.fireworks.ai/inference/v1", "fireworks"),
        ("https://api.mistral.ai/v1", "mistral"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "google"),
        ("http://localhost:8000/v1", "openai"),
        ("https://notopenrouter.ai/v1", "openai"),
    ],
)
def test_provider_is_detected_from_the_base_url(base_url: str, provider: str) -> None:
    """OpenAI-compatible hosts are recognised by their domain; any other host is `openai`."""
    assert detect_provider(base_url) == provider


async def test_azure_client_and_explicit_provider(
    server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """An `AsyncAzureOpenAI` records `azure`; `provider=` names any other host."""
    async with openai.AsyncAzureOpenAI(
        api_key="k", api_version="2024-10-21", base_url=server.url + "/openai", max_retries=0
    ) as azure:
        server.answer_chat()
        await track_openai(azure, fg).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    async with AsyncOpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as local:
        server.answer_chat()
        client = track_openai(local, fg, provider="vllm")
        await client.chat.completions.create(model="llama", messages=MESSAGES)
    events = await recorded(fg, collector, 2)
    assert [e["usage"]["provider"] for e in events] == ["azure", "vllm"]


async def test_bad_arguments_are_refused_at_wrap_time(raw: AsyncOpenAI, fg: FluxGate) -> None:
    """A sync client, a non-FluxGate, an unknown mode or a bad metadata value raise, naming it."""
    with openai.OpenAI(api_key="k") as sync_client, pytest.raises(TypeError, match="AsyncOpenAI"):
        track_openai(sync_client, fg)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="fluxgate must be a FluxGate"):
        track_openai(raw, "fg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        track_openai(raw, fg, mode="later")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="feature"):
        track_openai(raw, fg, feature=42)
    with pytest.raises(ValueError, match="already tracked"):
        track_openai(track_openai(raw, fg), fg)


async def test_a_bug_in_tracking_never_reaches_the_call(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If reading the answer fails on a bug of ours, the call still returns and is logged."""

    def broken(_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(fg_openai, "_CHAT", Route(read=broken))
    client = track_openai(raw, fg)
    server.answer_chat()
    with caplog.at_level(logging.ERROR, logger="fluxgate_async"):
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        # In background mode the answer is read once the caller's task yields.
        [event] = await recorded(fg, collector)
    assert reply.choices[0].message.content == "Hello!"
    assert "bug while reading" in caplog.text
    assert event["usage"]["inputTokens"] == 0
    assert event["usage"]["model"] == "gpt-4o-mini"


async def test_a_bug_reading_chunks_never_reaches_the_stream(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If reading a chunk fails on a bug of ours, every chunk still reaches the caller."""

    def broken(self: object, chunk: object) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setattr(fg_openai._ChatChunks, "add", broken)
    client = track_openai(raw, fg)
    server.answer_chat_stream()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    with caplog.at_level(logging.ERROR, logger="fluxgate_async"):
        chunks = [chunk async for chunk in stream]
    assert len(chunks) == 6
    assert "bug while reading a stream chunk" in caplog.text
    [event] = await recorded(fg, collector)
    assert event["usage"]["isStreamed"] is True


async def test_reading_past_the_end_records_nothing_more(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Asking a finished stream for more raises StopAsyncIteration again, and sends no event."""
    client = track_openai(raw, fg, mode="inline")
    server.answer_chat_stream()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    async for _chunk in stream:
        pass
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    await recorded(fg, collector)


async def test_loose_usage_from_compatible_hosts_reads_as_missing(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Counts that are negative, text or not finite are recorded as 0, never as an error."""
    client = track_openai(raw, fg)
    body = chat_completion()
    body["usage"] = {"prompt_tokens": -5, "completion_tokens": "7", "total_tokens": 1e400}
    server.answer(Answer(body=body))
    await client.chat.completions.create(model="llama-3", messages=MESSAGES)
    [event] = await recorded(fg, collector)
    assert (event["usage"]["inputTokens"], event["usage"]["outputTokens"]) == (0, 0)
    assert "cachedTokens" not in event["usage"]


async def test_a_response_without_status_is_a_success(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A Responses body without `status` (some compatible hosts) records SUCCESS, no reason."""
    client = track_openai(raw, fg)
    body = response_body()
    del body["status"]
    server.answer(Answer(body=body))
    await client.responses.create(model="gpt-4.1", input="hi")
    [event] = await recorded(fg, collector)
    assert event["status"] == "SUCCESS"
    assert "finishReason" not in event["metadata"]


def test_attributes_are_set_and_deleted_on_the_client(raw: AsyncOpenAI, fg: FluxGate) -> None:
    """Writing or deleting an attribute through the wrapper does it on the client."""
    client = track_openai(raw, fg)
    client.note = "x"  # type: ignore[attr-defined]
    assert raw.note == "x"  # type: ignore[attr-defined]
    del client.note  # type: ignore[attr-defined]
    assert not hasattr(raw, "note")


def test_a_half_built_stream_wrapper_is_collected_quietly() -> None:
    """A stream wrapper whose construction never finished is collected without error."""
    TrackedStream.__new__(TrackedStream).__del__()


async def test_include_usage_is_merged_into_the_callers_stream_options(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Other stream options of the caller are kept, and the added usage chunk stays hidden."""
    client = track_openai(raw, fg)
    server.answer_chat_stream()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_obfuscation": False},
    )
    chunks = [chunk async for chunk in stream]
    assert server.requests[0].json["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }
    assert all(chunk.choices for chunk in chunks)
    [event] = await recorded(fg, collector)
    assert event["usage"]["inputTokens"] == 10


async def test_fake_openai_can_repeat_its_last_answer() -> None:
    """`FakeOpenAI(repeat=True)` answers every further call like the last scripted one."""
    async with (
        FakeOpenAI(repeat=True) as server,
        AsyncOpenAI(api_key="sk", base_url=server.url + "/v1", max_retries=0) as client,
    ):
        server.answer_chat(completion_tokens=4)
        for _ in range(3):
            reply = await client.chat.completions.create(model="m", messages=MESSAGES)
            assert reply.usage is not None
            assert reply.usage.completion_tokens == 4
    assert len(server.requests) == 3


async def test_async_with_on_the_wrapper_yields_the_tracked_client(
    server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """`async with track_openai(...) as client` tracks calls and closes the SDK client."""
    raw = AsyncOpenAI(api_key="sk", base_url=server.url + "/v1", max_retries=0)
    async with track_openai(raw, fg) as client:
        server.answer_chat()
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.is_closed()
    await recorded(fg, collector)
    with (
        pytest.raises(TypeError, match="'AsyncOpenAI' object does not support the context"),
        client,  # type: ignore[attr-defined]
    ):
        pass


async def test_concurrent_calls_each_record_their_own_context(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """Calls running at once in different `tracking_context` blocks never mix their metadata."""
    async with (
        FakeOpenAI(repeat=True) as server,
        AsyncOpenAI(api_key="sk", base_url=server.url + "/v1", max_retries=0) as raw,
    ):
        client = track_openai(raw, fg)
        server.answer(Answer(body=chat_completion(), delay=0.01))

        async def request(user: str) -> None:
            with tracking_context(user=user):
                await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        await asyncio.gather(*(request(f"user-{i}") for i in range(8)))
    events = await recorded(fg, collector, 8)
    assert sorted(e["metadata"]["user"] for e in events) == [f"user-{i}" for i in range(8)]
