"""`track_genai`: the real `google.genai.Client` against a loopback Gemini API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from fluxgate_async import FluxGate, tracking_of
from fluxgate_async._recording import Mode
from fluxgate_async.integrations.google import track_genai
from fluxgate_async.testing import FakeCollector

from .helpers import cancel_reading, recorded
from .servers import SSE, Answer, ProviderServer

# google-genai subclasses aiohttp.ClientSession, which aiohttp warns about: not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    """A loopback Gemini API."""
    async with ProviderServer() as s:
        yield s


@pytest.fixture
async def raw(server: ProviderServer) -> AsyncIterator[genai.Client]:
    """An untracked client of the loopback API."""
    client = genai.Client(api_key="g-test", http_options=types.HttpOptions(base_url=server.url))
    yield client
    await client.aio.aclose()
    client.close()


def content(
    finish_reason: str | None = "STOP",
    *,
    text: str = "Hello there!",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A generateContent body (or stream chunk) shaped like Gemini's."""
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "mK1iaJ3-Ao2ez7IPrs-gkQc",
    }
    if usage is not None:
        body["usageMetadata"] = usage
    return body


USAGE = {
    "promptTokenCount": 11,
    "candidatesTokenCount": 7,
    "cachedContentTokenCount": 4,
    "thoughtsTokenCount": 20,
    "toolUsePromptTokenCount": 3,
    "totalTokenCount": 41,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 11}],
}


async def test_generate_content_records_one_event_field_by_field(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """generate_content records input (with tool prompts), output (with thoughts), cache, model."""
    client = track_genai(raw, fg, mode=mode, feature="summaries")
    server.answer(Answer(body=content(usage=USAGE)))

    reply = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")

    assert reply.text == "Hello there!"
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert usage.pop("latencyInMs") > 0
    assert usage == {
        "inputTokens": 14,
        "outputTokens": 27,
        "cachedTokens": 4,
        "model": "gemini-2.5-flash",
        "provider": "google",
        "isStreamed": False,
    }
    assert event["status"] == "SUCCESS"
    assert event["metadata"] == {
        "feature": "summaries",
        "finishReason": "STOP",
        "reasoningTokens": 20,
    }
    assert (tracking_of(reply) is not None) is (mode == "inline")


@pytest.mark.parametrize(
    ("finish_reason", "status"),
    [
        ("STOP", "SUCCESS"),
        ("MAX_TOKENS", "MAX_TOKENS"),
        ("SAFETY", "BLOCKED"),
        ("BLOCKLIST", "BLOCKED"),
        ("PROHIBITED_CONTENT", "BLOCKED"),
        ("SPII", "BLOCKED"),
        ("IMAGE_SAFETY", "BLOCKED"),
        ("IMAGE_PROHIBITED_CONTENT", "BLOCKED"),
        ("RECITATION", "RECITATION"),
        ("IMAGE_RECITATION", "RECITATION"),
        ("MALFORMED_FUNCTION_CALL", "MALFORMED_REQUEST"),
        ("OTHER", "SUCCESS"),
        (None, "SUCCESS"),
    ],
)
async def test_finish_reason_sets_the_status(
    raw: genai.Client,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
    finish_reason: str | None,
    status: str,
) -> None:
    """Each finish reason maps to its row of the status table."""
    client = track_genai(raw, fg)
    server.answer(Answer(body=content(finish_reason, usage=USAGE)))
    await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    [event] = await recorded(fg, collector)
    assert event["status"] == status
    assert event["metadata"].get("finishReason") == finish_reason


async def test_blocked_prompt_records_blocked(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """A prompt blocked by Gemini records BLOCKED with its reason and the prompt's tokens."""
    client = track_genai(raw, fg)
    body = {
        "promptFeedback": {
            "blockReason": "PROHIBITED_CONTENT",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}
            ],
        },
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
    }
    server.answer(Answer(body=body))
    await client.aio.models.generate_content(model="models/gemini-2.5-flash", contents="...")
    [event] = await recorded(fg, collector)
    assert event["status"] == {
        "status": "BLOCKED",
        "errorMessage": "prompt blocked: PROHIBITED_CONTENT",
    }
    assert (event["usage"]["inputTokens"], event["usage"]["outputTokens"]) == (9, 0)
    assert event["metadata"]["finishReason"] == "PROHIBITED_CONTENT"


async def test_stream_records_the_last_usage_and_finish_reason(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """generate_content_stream yields every chunk and records the final totals, streamed."""
    client = track_genai(raw, fg, mode=mode)
    first = {"promptTokenCount": 11, "candidatesTokenCount": 2, "totalTokenCount": 13}
    server.answer(
        Answer(
            events=[
                SSE(content(None, text="Hel", usage=first)),
                SSE(content(None, text="lo", usage=first)),
                SSE(content("MAX_TOKENS", text="!", usage=USAGE)),
            ]
        )
    )
    stream = await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hi"
    )
    texts = [chunk.text async for chunk in stream]
    assert texts == ["Hel", "lo", "!"]
    assert server.requests[0].query == {"alt": "sse"}
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["cachedTokens"]) == (14, 27, 4)
    assert usage["isStreamed"] is True
    assert usage["latencyInMs"] >= usage["streamingDurationInMs"] >= 0
    assert event["status"] == "MAX_TOKENS"
    assert event["metadata"]["timeToFirstTokenMs"] > 0
    assert (tracking_of(stream) is not None) is (mode == "inline")


async def test_stream_left_early_records_one_event(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Leaving a Gemini stream with `break` and `aclose()` records one ERROR event."""
    client = track_genai(raw, fg)
    chunk = SSE(content(None, usage={"promptTokenCount": 5, "totalTokenCount": 5}))
    server.answer(Answer(events=[chunk, chunk, chunk]))
    stream = await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hi"
    )
    async for _chunk in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]  # typed AsyncIterator, is a generator
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "stream closed before its end"}
    assert event["usage"]["inputTokens"] == 5


async def test_stream_cancelled_records_cancelled(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Cancelling a Gemini stream mid-way records ERROR "cancelled" once."""
    client = track_genai(raw, fg)
    server.answer(Answer(events=[SSE(content(None))], hang=True))
    stream = await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hi"
    )
    await cancel_reading(stream, chunks=1)
    await stream.aclose()  # type: ignore[attr-defined]  # typed AsyncIterator, is a generator
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "cancelled"}
    assert event["usage"]["model"] == "gemini-2.5-flash"


@pytest.mark.parametrize(
    ("status", "error", "recorded_status"),
    [
        (400, errors.ClientError, "MALFORMED_REQUEST"),
        (404, errors.ClientError, "MALFORMED_REQUEST"),
        (403, errors.ClientError, "ERROR"),
        (429, errors.ClientError, "ERROR"),
        (503, errors.ServerError, "ERROR"),
    ],
)
async def test_provider_error_is_recorded_and_reraised(
    raw: genai.Client,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
    status: int,
    error: type[Exception],
    recorded_status: str,
) -> None:
    """A Gemini API error records its status and message; the caller gets the SDK's error."""
    client = track_genai(raw, fg)
    body = {
        "error": {
            "code": status,
            "message": "Request contains an invalid argument.",
            "status": "INVALID_ARGUMENT",
        }
    }
    server.answer(Answer(status=status, body=body))
    with pytest.raises(error) as raised:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    assert getattr(raised.value, "code", None) == status
    [event] = await recorded(fg, collector)
    assert event["status"] == {
        "status": recorded_status,
        "errorMessage": "Request contains an invalid argument.",
    }
    assert event["usage"]["model"] == "gemini-2.5-flash"


async def test_stream_error_is_recorded_and_reraised(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """A stream whose request fails raises the SDK's error while iterating, and records it."""
    client = track_genai(raw, fg)
    body = {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    server.answer(Answer(status=400, body=body))
    stream = await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hi"
    )
    with pytest.raises(errors.ClientError):
        async for _chunk in stream:
            pass
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "MALFORMED_REQUEST", "errorMessage": "bad"}
    assert event["usage"]["isStreamed"] is True


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"embeddings": [{"values": [0.1, 0.2]}]}, 0),
        ({"embeddings": [{"values": [0.1]}], "usageMetadata": {"promptTokenCount": 6}}, 6),
        (
            {
                "embeddings": [
                    {"values": [0.1], "statistics": {"tokenCount": 3.0, "truncated": False}},
                    {"values": [0.2], "statistics": {"tokenCount": 4.0, "truncated": False}},
                ]
            },
            7,
        ),
    ],
)
async def test_embed_content_records_its_tokens(
    raw: genai.Client,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
    body: dict[str, Any],
    tokens: int,
) -> None:
    """embed_content records the prompt tokens Gemini reports, however it reports them."""
    client = track_genai(raw, fg)
    server.answer(Answer(body=body))
    result = await client.aio.models.embed_content(
        model="gemini-embedding-001", contents=["a", "b"]
    )
    assert result.embeddings
    [event] = await recorded(fg, collector)
    assert event["usage"]["inputTokens"] == tokens
    assert event["usage"]["outputTokens"] == 0
    assert event["usage"]["model"] == "gemini-embedding-001"


async def test_wrapper_is_a_drop_in(raw: genai.Client, fg: FluxGate) -> None:
    """The wrapper passes for a genai.Client, forwards the rest, and refuses other objects."""
    client = track_genai(raw, fg)
    assert isinstance(client, genai.Client)
    assert client.models is raw.models
    assert isinstance(client.aio.models, type(raw.aio.models))
    with pytest.raises(TypeError, match=r"google\.genai\.Client"):
        track_genai(raw.aio, fg)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="already tracked"):
        track_genai(client, fg)


async def test_with_blocks_keep_the_client_tracked(
    server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """`with` on the client and `async with` on `client.aio` hand back tracked objects."""
    with track_genai(
        genai.Client(api_key="g", http_options=types.HttpOptions(base_url=server.url)), fg
    ) as client:
        async with client.aio as aio:
            server.answer(Answer(body=content(usage=USAGE)))
            await aio.models.generate_content(model="gemini-2.5-flash", contents="Hi")
    [event] = await recorded(fg, collector)
    assert event["usage"]["provider"] == "google"


async def test_a_stream_is_no_context_manager_as_without_tracking(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """`async with` on a Gemini stream fails as it does on the SDK's own generator."""
    client = track_genai(raw, fg)
    server.answer(Answer(events=[SSE(content(usage=USAGE))]))
    stream = await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hi"
    )
    with pytest.raises(TypeError, match="'async_generator' object does not support"):
        async with stream:  # type: ignore[attr-defined]
            pass
    assert [chunk.text async for chunk in stream] == ["Hello there!"]
    await recorded(fg, collector)


async def test_chat_send_message_records_one_event_per_message(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """`aio.chats.create(...).send_message` records one event per message, with its usage."""
    client = track_genai(raw, fg, mode=mode)
    second = {"promptTokenCount": 30, "candidatesTokenCount": 5, "totalTokenCount": 35}
    server.answer(Answer(body=content(usage=USAGE)), Answer(body=content(usage=second)))
    chat = client.aio.chats.create(model="gemini-2.5-flash")
    first_reply = await chat.send_message("Hi")
    second_reply = await chat.send_message("And then?")
    assert first_reply.text == second_reply.text == "Hello there!"
    assert len(chat.get_history()) == 4
    events = await recorded(fg, collector, 2)
    assert [
        (e["usage"]["inputTokens"], e["usage"]["outputTokens"], e["usage"].get("cachedTokens"))
        for e in events
    ] == [(14, 27, 4), (30, 5, None)]
    assert {e["usage"]["isStreamed"] for e in events} == {False}
    assert (tracking_of(second_reply) is not None) is (mode == "inline")


async def test_chat_send_message_stream_records_once_at_its_end(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """`send_message_stream` records one streamed event with the stream's last usage."""
    client = track_genai(raw, fg)
    server.answer(
        Answer(events=[SSE(content(None, text="Hel")), SSE(content("STOP", usage=USAGE))])
    )
    chat = client.aio.chats.create(model="gemini-2.5-flash")
    texts = [chunk.text async for chunk in await chat.send_message_stream("Hi")]
    assert texts == ["Hel", "Hello there!"]
    [event] = await recorded(fg, collector)
    usage = event["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["cachedTokens"]) == (14, 27, 4)
    assert usage["isStreamed"] is True


async def test_an_sdk_error_before_sending_records_nothing(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """An argument the SDK refuses before any request records no event and raises as is."""
    client = track_genai(raw, fg)
    with pytest.raises(ValueError, match="temperature") as tracked:
        await client.aio.models.generate_content(
            model="gemini-2.5-flash",
            contents="Hi",
            config={"temperature": "hot"},  # type: ignore[arg-type]
        )
    assert server.requests == []
    assert type(tracked.value).__module__.startswith("pydantic")
    assert await fg.flush(5)
    assert collector.events == []


async def test_automatic_function_calling_records_each_model_request(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """A call whose tool the SDK runs itself records each of its model requests, once."""
    client = track_genai(raw, fg, mode=mode)

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    asking = content(usage={"promptTokenCount": 9, "candidatesTokenCount": 3})
    asking["candidates"][0]["content"]["parts"] = [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    ]
    server.answer(Answer(body=asking), Answer(body=content(usage=USAGE)))
    reply = await client.aio.models.generate_content(
        model="gemini-2.5-flash",
        contents="Weather in Paris?",
        config=types.GenerateContentConfig(tools=[get_weather]),
    )
    assert reply.text == "Hello there!"
    assert len(server.requests) == 2
    events = await recorded(fg, collector, 2)
    assert [(e["usage"]["inputTokens"], e["usage"]["outputTokens"]) for e in events] == [
        (9, 3),
        (14, 27),
    ]
    assert (tracking_of(reply) is not None) is (mode == "inline")


async def test_chat_stream_left_early_records_one_event(
    raw: genai.Client, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """Leaving a chat's stream with `break` records one ERROR event with the usage seen."""
    client = track_genai(raw, fg)
    chunk = SSE(content(None, usage={"promptTokenCount": 5, "totalTokenCount": 5}))
    server.answer(Answer(events=[chunk, chunk, chunk]))
    chat = client.aio.chats.create(model="gemini-2.5-flash")
    async for _chunk in await chat.send_message_stream("Hi"):
        break
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "stream closed before its end"}
    assert event["usage"]["inputTokens"] == 5
