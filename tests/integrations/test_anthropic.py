"""`track_anthropic`: the real `anthropic.AsyncAnthropic` against a loopback Messages API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic

from fluxgate_async import FluxGate, tracking_of
from fluxgate_async._recording import Mode
from fluxgate_async.integrations.anthropic import track_anthropic
from fluxgate_async.testing import FakeCollector

from .helpers import cancel_reading, cancel_when, recorded
from .servers import SSE, Answer, ProviderServer

MODEL = "claude-sonnet-4-6-20260217"
MESSAGES: Any = [{"role": "user", "content": "Hello, Claude"}]


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    """A loopback Anthropic API."""
    async with ProviderServer() as s:
        yield s


@pytest.fixture
async def raw(server: ProviderServer) -> AsyncIterator[AsyncAnthropic]:
    """An untracked client of the loopback API, without retries."""
    async with AsyncAnthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0) as c:
        yield c


def message(
    stop_reason: str | None = "end_turn",
    *,
    input_tokens: int = 25,
    output_tokens: int = 15,
    cache_read: int = 200,
    cache_write: int = 100,
    thinking: int | None = None,
) -> dict[str, Any]:
    """A Messages API body shaped like Anthropic's."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hi! My name is Claude."}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def message_events(
    stop_reason: str = "end_turn", *, output_tokens: int = 15, end: bool = True
) -> list[SSE]:
    """A Messages stream shaped like Anthropic's, named events included."""
    start = message(None, output_tokens=1)
    start["content"] = []
    events = [
        SSE({"type": "message_start", "message": start}, "message_start"),
        SSE(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        SSE({"type": "ping"}, "ping"),
        SSE(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
            "content_block_delta",
        ),
        SSE(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "!"},
            },
            "content_block_delta",
        ),
        SSE({"type": "content_block_stop", "index": 0}, "content_block_stop"),
    ]
    if end:
        events += [
            SSE(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
                "message_delta",
            ),
            SSE({"type": "message_stop"}, "message_stop"),
        ]
    return events


async def test_message_records_one_event_field_by_field(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """A message records its tokens (cache reads plus writes as cached), model, status, metadata."""
    client = track_anthropic(raw, fg, mode=mode, feature="support", user="user-9")
    server.answer(Answer(body=message(thinking=6)))

    reply = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=1024, messages=MESSAGES
    )

    assert reply.content[0].text == "Hi! My name is Claude."  # type: ignore[union-attr]
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert usage.pop("latencyInMs") > 0
    assert usage == {
        "inputTokens": 25,
        "outputTokens": 15,
        "cachedTokens": 300,
        "model": MODEL,
        "provider": "anthropic",
        "isStreamed": False,
    }
    assert event["status"] == "SUCCESS"
    assert event["metadata"] == {
        "feature": "support",
        "user": "user-9",
        "finishReason": "end_turn",
        "cacheWriteTokens": 100,
        "reasoningTokens": 6,
    }
    tracking = tracking_of(reply)
    assert (tracking is not None) is (mode == "inline")


@pytest.mark.parametrize(
    ("stop_reason", "status"),
    [
        ("end_turn", "SUCCESS"),
        ("stop_sequence", "SUCCESS"),
        ("tool_use", "SUCCESS"),
        ("pause_turn", "SUCCESS"),
        ("max_tokens", "MAX_TOKENS"),
        ("model_context_window_exceeded", "MAX_TOKENS"),
        ("refusal", "BLOCKED"),
        (None, "SUCCESS"),
    ],
)
async def test_stop_reason_sets_the_status(
    raw: AsyncAnthropic,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
    stop_reason: str | None,
    status: str,
) -> None:
    """Each stop reason maps to its row of the status table."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(body=message(stop_reason)))
    await client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)
    [event] = await recorded(fg, collector)
    assert event["status"] == status
    assert event["metadata"].get("finishReason") == stop_reason


async def test_create_with_stream_records_one_streamed_event(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """`messages.create(stream=True)` yields every event and records the final usage, streamed."""
    client = track_anthropic(raw, fg, mode=mode)
    server.answer(Answer(events=message_events("max_tokens", output_tokens=42)))
    stream = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=42, messages=MESSAGES, stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["cachedTokens"]) == (25, 42, 300)
    assert usage["isStreamed"] is True
    assert usage["latencyInMs"] >= usage["streamingDurationInMs"] >= 0
    assert event["status"] == "MAX_TOKENS"
    assert event["metadata"]["finishReason"] == "max_tokens"
    assert event["metadata"]["cacheWriteTokens"] == 100
    assert event["metadata"]["timeToFirstTokenMs"] > 0
    assert (tracking_of(stream) is not None) is (mode == "inline")


async def test_message_delta_with_input_counts_wins(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Input and cache counts repeated in `message_delta` replace those of `message_start`."""
    client = track_anthropic(raw, fg)
    events = message_events()
    delta = events[-2].data
    delta["usage"].update(
        input_tokens=30, cache_read_input_tokens=0, cache_creation_input_tokens=50
    )
    server.answer(Answer(events=events))
    stream = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, stream=True
    )
    async for _event in stream:
        pass
    [event] = await recorded(fg, collector)
    assert (event["usage"]["inputTokens"], event["usage"]["cachedTokens"]) == (30, 50)
    assert event["metadata"]["cacheWriteTokens"] == 50


async def test_stream_helper_records_one_event(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """The `messages.stream()` helper works as without tracking and records one streamed event."""
    client = track_anthropic(raw, fg, mode=mode, feature="helper")
    server.answer(Answer(events=message_events(output_tokens=9)))
    async with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hi!"
    assert final.usage.output_tokens == 9
    [event] = await recorded(fg, collector)
    assert event["usage"]["outputTokens"] == 9
    assert event["usage"]["isStreamed"] is True
    assert event["status"] == "SUCCESS"
    assert event["metadata"]["feature"] == "helper"
    assert (tracking_of(stream) is not None) is (mode == "inline")


async def test_stream_helper_left_early_records_one_event(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Leaving the helper's block before the end records one ERROR event with the input seen."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(events=message_events()))
    async with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES
    ) as stream:
        async for _event in stream:
            break
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "stream closed before its end"}
    assert event["usage"]["inputTokens"] == 25


async def test_stream_helper_error_is_recorded_and_reraised(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """A helper stream whose request fails records the error and raises the SDK's."""
    client = track_anthropic(raw, fg)
    server.answer(
        Answer(status=400, body=api_error("invalid_request_error", "max_tokens: required"))
    )
    with pytest.raises(anthropic.BadRequestError):
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES
        ):
            pass
    [event] = await recorded(fg, collector)
    assert event["status"]["status"] == "MALFORMED_REQUEST"
    assert "max_tokens: required" in event["status"]["errorMessage"]


async def test_beta_messages_create_is_tracked(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """`beta.messages.create`, streamed or not, records like `messages.create`."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(body=message("refusal")), Answer(events=message_events()))
    await client.beta.messages.create(
        model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, betas=["context-1m-2025-08-07"]
    )
    stream = await client.beta.messages.create(
        model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, stream=True
    )
    async for _event in stream:
        pass
    events = await recorded(fg, collector, 2)
    assert [e["status"] for e in events] == ["BLOCKED", "SUCCESS"]
    assert [e["usage"]["isStreamed"] for e in events] == [False, True]


def api_error(kind: str, text: str) -> dict[str, Any]:
    """An error body shaped like Anthropic's."""
    return {"type": "error", "error": {"type": kind, "message": text}}


@pytest.mark.parametrize(
    ("status", "error", "recorded_status"),
    [
        (400, anthropic.BadRequestError, "MALFORMED_REQUEST"),
        (413, anthropic.APIStatusError, "MALFORMED_REQUEST"),
        (401, anthropic.AuthenticationError, "ERROR"),
        (429, anthropic.RateLimitError, "ERROR"),
        (529, anthropic.APIStatusError, "ERROR"),
    ],
)
async def test_provider_error_is_recorded_and_reraised_unchanged(
    raw: AsyncAnthropic,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
    status: int,
    error: type[Exception],
    recorded_status: str,
) -> None:
    """An API error records its status and message; the caller gets the SDK's own error."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(status=status, body=api_error("some_error", "it went wrong")))
    with pytest.raises(error) as raised:
        await client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)
    assert getattr(raised.value, "status_code", None) == status
    [event] = await recorded(fg, collector)
    assert event["status"]["status"] == recorded_status
    assert "it went wrong" in event["status"]["errorMessage"]


async def test_error_event_mid_stream_is_recorded_with_the_usage_seen(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """An `error` event in a stream records ERROR once, with the input tokens already known."""
    client = track_anthropic(raw, fg)
    overloaded = SSE(api_error("overloaded_error", "Overloaded"), "error")
    server.answer(Answer(events=[*message_events(end=False), overloaded]))
    stream = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, stream=True
    )
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        async for _event in stream:
            pass
    [event] = await recorded(fg, collector)
    assert event["status"]["status"] == "ERROR"
    assert "Overloaded" in event["status"]["errorMessage"]
    assert event["usage"]["inputTokens"] == 25


async def test_cancelled_stream_records_cancelled(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Cancelling a stream mid-way records ERROR "cancelled" with the input seen, once."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(events=message_events(end=False)[:2], hang=True))
    stream = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, stream=True
    )
    await cancel_reading(stream, chunks=2)
    await stream.close()
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "cancelled"}
    assert event["usage"]["inputTokens"] == 25


async def test_cancelled_helper_request_records_cancelled(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Cancelling the helper while its request is in flight records ERROR "cancelled"."""
    client = track_anthropic(raw, fg)
    server.answer(Answer(body=message(), hang=True))

    async def open_stream() -> None:
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES
        ):
            pass

    task = asyncio.create_task(open_stream())
    await cancel_when(task, lambda: bool(server.requests))
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "cancelled"}


async def test_wrapper_is_a_drop_in(
    raw: AsyncAnthropic, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """The wrapper passes for the SDK client; `with_options` stays tracked, the original not."""
    client = track_anthropic(raw, fg, feature="f")
    assert isinstance(client, AsyncAnthropic)
    assert client.api_key == "sk-ant-test"
    server.answer(Answer(body=message()), Answer(body=message()))
    await client.with_options(timeout=5).messages.create(
        model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES
    )
    await raw.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)
    [event] = await recorded(fg, collector)
    assert event["metadata"]["feature"] == "f"


async def test_bad_client_is_refused(raw: AsyncAnthropic, fg: FluxGate) -> None:
    """A synchronous or an already tracked client is refused, saying why."""
    with anthropic.Anthropic(api_key="k") as sync_client, pytest.raises(TypeError, match="Async"):
        track_anthropic(sync_client, fg)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="already tracked"):
        track_anthropic(track_anthropic(raw, fg), fg)
