"""`track_openai` beyond `create`: parse, stream helpers, raw responses, legacy, images, audio.

Every method goes through the one tracked request path; each test checks the
event's tokens field by field against the usage the fake provider sent.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import openai
import pydantic
import pytest
from openai import AsyncOpenAI
from openai._legacy_response import LegacyAPIResponse
from openai.types.chat import ChatCompletion

from fluxgate_async import FluxGate, tracking_of
from fluxgate_async._recording import Mode
from fluxgate_async.integrations import openai as fg_openai
from fluxgate_async.integrations._requests import TrackedResponse
from fluxgate_async.integrations.openai import track_openai
from fluxgate_async.testing import FakeCollector

from .helpers import missing_from_sdk, recorded
from .servers import SSE, Answer, FakeOpenAI, chat_chunks, chat_completion
from .test_openai import MESSAGES, response_body, response_events


class Answerer(pydantic.BaseModel):
    """A structured output."""

    answer: str


def tokens(event: dict[str, Any]) -> tuple[Any, ...]:
    """The event's input, output and cached tokens, and whether it was streamed."""
    usage = event["usage"]
    return (
        usage["inputTokens"],
        usage["outputTokens"],
        usage.get("cachedTokens"),
        usage["isStreamed"],
    )


async def test_responses_streaming_response_as_the_agents_sdk_reads_it(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """`responses.with_streaming_response.create(stream=True)`, parsed then read, records once."""
    client = track_openai(raw, fg, mode=mode)
    server.answer(Answer(events=response_events(response_body()), headers={"x-request-id": "r1"}))
    async with client.responses.with_streaming_response.create(
        model="gpt-4.1", input="hi", stream=True
    ) as response:
        assert response.headers["x-request-id"] == "r1"
        stream = await response.parse()
        assert isinstance(stream, openai.AsyncStream)
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (36, 87, 4, True)
    assert event["usage"]["model"] == "gpt-4.1-2025-04-14"
    assert event["metadata"]["reasoningTokens"] == 12
    assert event["status"] == "SUCCESS"
    assert (tracking_of(stream) is not None) is (mode == "inline")


async def test_streaming_response_left_early_records_one_error(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Leaving a streaming response's block after one event records ERROR once."""
    client = track_openai(raw, fg)
    server.answer(Answer(events=response_events(response_body())))
    async with client.responses.with_streaming_response.create(
        model="gpt-4.1", input="hi", stream=True
    ) as response:
        async for _event in await response.parse():
            break
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "stream closed before its end"}


async def test_streaming_response_never_parsed_records_one_error(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A streaming response closed before its stream was opened records ERROR once."""
    client = track_openai(raw, fg)
    server.answer(Answer(events=response_events(response_body())))
    async with client.responses.with_streaming_response.create(
        model="gpt-4.1", input="hi", stream=True
    ):
        pass
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "stream closed before its end"}
    assert event["usage"]["isStreamed"] is True


async def test_raw_response_is_the_sdks_own_and_records_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """`with_raw_response.create` returns the SDK's LegacyAPIResponse, headers and parse intact."""
    client = track_openai(raw, fg, mode=mode)
    body = chat_completion(prompt_tokens=50, completion_tokens=9, cached_tokens=16)
    server.answer(Answer(body=body, headers={"x-request-id": "req_1"}))
    response = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert type(response) is LegacyAPIResponse
    assert response.headers["x-request-id"] == "req_1"
    completion = response.parse()
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "Hello!"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (50, 9, 16, False)
    assert event["usage"]["model"] == "gpt-4o-mini-2024-07-18"
    assert (tracking_of(response) is not None) is (mode == "inline")


async def test_client_level_raw_response_is_tracked(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """`client.with_raw_response.embeddings.create` records like `embeddings.create`."""
    client = track_openai(raw, fg)
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    server.answer(Answer(body=body))
    response = await client.with_raw_response.embeddings.create(
        model="text-embedding-3-small", input="hi"
    )
    assert len(response.parse().data) == 1
    [event] = await recorded(fg, collector)
    assert tokens(event) == (8, 0, None, False)


@pytest.mark.parametrize("read", ["parse", "read", "text", "json"])
async def test_streaming_response_of_a_whole_answer_records_once_read(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    read: str,
) -> None:
    """`with_streaming_response.create` without a stream records when its body is read."""
    client = track_openai(raw, fg)
    server.answer_chat(prompt_tokens=12, completion_tokens=4)
    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        await getattr(response, read)()
        if read == "parse":
            assert (await response.parse()).choices[0].message.content == "Hello!"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (12, 4, 0, False)


async def test_streaming_response_closed_unread_records_one_error(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A streaming response of a whole answer left unread records ERROR once."""
    client = track_openai(raw, fg)
    server.answer_chat()
    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ):
        pass
    [event] = await recorded(fg, collector)
    assert event["status"] == {
        "status": "ERROR",
        "errorMessage": "response closed before its body was read",
    }


async def test_raw_stream_dropped_unread_records_one_error(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A raw streamed response dropped without being parsed records ERROR once when collected."""
    client = track_openai(raw, fg)
    server.answer_chat_stream()
    response = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    http = response.http_response
    del response
    gc.collect()
    await http.aclose()
    [event] = await recorded(fg, collector)
    assert event["status"]["errorMessage"] == "stream collected before its end"


async def test_raw_stream_parsed_records_the_usage_chunk_it_hides(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A raw chat stream asks for usage, and its parsed stream shows the caller's chunks only."""
    client = track_openai(raw, fg)
    server.answer_chat_stream(prompt_tokens=30, completion_tokens=3)
    response = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    stream = response.parse()
    assert response.parse() is stream
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    [event] = await recorded(fg, collector)
    assert tokens(event) == (30, 3, 0, True)


@pytest.mark.parametrize("beta", [False, True])
async def test_chat_parse_records_once(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    mode: Mode,
    beta: bool,
) -> None:
    """`chat.completions.parse` (and `beta.chat.completions.parse`) records its usage."""
    client = track_openai(raw, fg, mode=mode)
    where = "beta.chat.completions" if beta else "chat.completions"
    if missing_from_sdk("openai", raw, where + ".parse", client):
        return
    server.answer_chat(content='{"answer": "42"}', prompt_tokens=70, completion_tokens=6)
    completions = client.beta.chat.completions if beta else client.chat.completions
    parsed = await completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Answerer
    )
    assert parsed.choices[0].message.parsed == Answerer(answer="42")
    [event] = await recorded(fg, collector)
    assert tokens(event) == (70, 6, 0, False)
    assert (tracking_of(parsed) is not None) is (mode == "inline")


async def test_parse_that_fails_on_the_answer_records_its_tokens(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A parse cut by `max_tokens` raises the SDK's error and records the tokens spent, once."""
    client = track_openai(raw, fg)
    if missing_from_sdk("openai", raw, "chat.completions.parse", client):
        return
    server.answer_chat(content='{"answ', finish_reason="length", completion_tokens=5)
    with pytest.raises(openai.LengthFinishReasonError):
        await client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Answerer
        )
    [event] = await recorded(fg, collector)
    assert tokens(event) == (10, 5, 0, False)
    assert event["status"] == "MAX_TOKENS"


async def test_an_sdk_error_before_sending_records_nothing(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """An argument the SDK refuses before any request records no event and raises as is."""
    client = track_openai(raw, fg)
    with pytest.raises(TypeError) as tracked:
        await client.chat.completions.create(  # type: ignore[call-overload]
            model="gpt-4o-mini", messages=MESSAGES, nonsense=1
        )
    with pytest.raises(TypeError) as untracked:
        await raw.chat.completions.create(  # type: ignore[call-overload]
            model="gpt-4o-mini", messages=MESSAGES, nonsense=1
        )
    assert str(tracked.value) == str(untracked.value)
    assert server.requests == []
    assert await fg.flush(5)
    assert collector.events == []


async def test_chat_stream_helper_records_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """The `chat.completions.stream()` helper records one streamed event with the usage."""
    client = track_openai(raw, fg, mode=mode)
    if missing_from_sdk("openai", raw, "chat.completions.stream", client):
        return
    server.answer_chat_stream(prompt_tokens=21, completion_tokens=3, cached_tokens=5)
    async with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "Hello!"
    assert server.requests[0].json["stream_options"] == {"include_usage": True}
    [event] = await recorded(fg, collector)
    assert tokens(event) == (21, 3, 5, True)
    assert (tracking_of(stream) is not None) is (mode == "inline")


async def test_responses_parse_and_stream_helper_record_once_each(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """`responses.parse` and the `responses.stream()` helper each record their usage."""
    client = track_openai(raw, fg)
    body = response_body()
    body["output"][0]["content"][0]["text"] = '{"answer": "42"}'
    created, _delta, completed = response_events(response_body())
    server.answer(Answer(body=body), Answer(events=[created, completed]))
    parsed = await client.responses.parse(model="gpt-4.1", input="hi", text_format=Answerer)
    assert parsed.output_parsed == Answerer(answer="42")
    async with client.responses.stream(model="gpt-4.1", input="hi") as stream:
        final = await stream.get_final_response()
    assert final.usage is not None
    events = await recorded(fg, collector, 2)
    assert [tokens(e) for e in events] == [(36, 87, 4, False), (36, 87, 4, True)]


def legacy_completion(finish_reason: str = "stop") -> dict[str, Any]:
    """A legacy completion body shaped like OpenAI's."""
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1741569952,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": "Hi", "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


async def test_legacy_completions_record_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """`completions.create`, streamed or not, records its usage and finish reason."""
    client = track_openai(raw, fg)
    chunk = legacy_completion("length")
    usage = chunk.pop("usage")
    server.answer(
        Answer(body=legacy_completion()),
        Answer(
            events=[
                SSE({**chunk, "usage": None}),
                SSE({**chunk, "choices": [], "usage": usage}),
                SSE("[DONE]"),
            ]
        ),
    )
    await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    stream = await client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True
    )
    assert len([c async for c in stream]) == 1
    events = await recorded(fg, collector, 2)
    assert [tokens(e) for e in events] == [(5, 7, None, False), (5, 7, None, True)]
    assert [e["status"] for e in events] == ["SUCCESS", "MAX_TOKENS"]


def image_body(*, usage: bool = True) -> dict[str, Any]:
    """An images answer; gpt-image models add `usage`."""
    body: dict[str, Any] = {"created": 1713833628, "data": [{"b64_json": "aGk="}]}
    if usage:
        body["usage"] = {
            "input_tokens": 50,
            "output_tokens": 4160,
            "total_tokens": 4210,
            "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
        }
    return body


async def test_images_with_usage_record_once_and_without_record_nothing(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """`images.generate` and `images.edit` record `usage`; an answer without it records nothing."""
    client = track_openai(raw, fg)
    server.answer(
        Answer(body=image_body()), Answer(body=image_body()), Answer(body=image_body(usage=False))
    )
    await client.images.generate(model="gpt-image-1", prompt="a cat")
    await client.images.edit(model="gpt-image-1", image=b"png", prompt="a hat")
    await client.images.generate(model="dall-e-3", prompt="a dog")
    events = await recorded(fg, collector, 2)
    assert [tokens(e) for e in events] == [(50, 4160, None, False)] * 2
    assert [e["usage"]["model"] for e in events] == ["gpt-image-1"] * 2


async def test_transcriptions_with_token_usage_record_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """`audio.transcriptions.create` records its token usage, streamed or not."""
    client = track_openai(raw, fg, mode=mode)
    if missing_from_sdk("openai", raw, "audio.transcriptions.create(stream)", client):
        return
    usage = {"type": "tokens", "input_tokens": 14, "output_tokens": 45, "total_tokens": 59}
    done = {"type": "transcript.text.done", "text": "Hello", "usage": usage}
    server.answer(
        Answer(body={"text": "Hello", "usage": usage}),
        Answer(
            events=[
                SSE({"type": "transcript.text.delta", "delta": "Hello"}),
                SSE(done),
            ]
        ),
    )
    transcript = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=b"wav")
    assert transcript.text == "Hello"
    stream = await client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=b"wav", stream=True
    )
    assert len([e async for e in stream]) == 2
    events = await recorded(fg, collector, 2)
    assert [tokens(e) for e in events] == [(14, 45, None, False), (14, 45, None, True)]
    assert events[0]["usage"]["model"] == "gpt-4o-transcribe"


def background_body(status: str) -> dict[str, Any]:
    """A background response at `status`; usage arrives only when it has ended."""
    body = response_body(status if status != "queued" else "completed")
    body["status"] = status
    body["background"] = True
    body["created_at"] = 1741476542
    body["completed_at"] = 1741476549 if status == "completed" else None
    if status in {"queued", "in_progress"}:
        body["usage"] = None
    return body


async def test_background_response_records_once_when_retrieved_ended(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, mode: Mode
) -> None:
    """A background response records nothing at submission, then once when seen completed."""
    client = track_openai(raw, fg, mode=mode)
    if missing_from_sdk("openai", raw, "responses.create(background)", client):
        return
    server.answer(
        Answer(body=background_body("queued")),
        Answer(body=background_body("in_progress")),
        Answer(body=background_body("completed")),
        Answer(body=background_body("completed")),
    )
    submitted = await client.responses.create(model="gpt-4.1", input="hi", background=True)
    assert submitted.status == "queued"
    await client.responses.retrieve(submitted.id)
    done = await client.responses.retrieve(submitted.id)
    again = await client.with_options(timeout=5).responses.retrieve(submitted.id)
    assert done.status == again.status == "completed"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (36, 87, 4, False)
    assert event["usage"]["latencyInMs"] == 7000
    assert event["status"] == "SUCCESS"
    assert (tracking_of(done) is not None) is (mode == "inline")
    assert tracking_of(again) is None


async def test_background_stream_resumed_records_once_at_its_final_event(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A background stream left early records nothing; resumed to its end, it records once."""
    client = track_openai(raw, fg)
    if missing_from_sdk("openai", raw, "responses.create(background)", client):
        return
    final = background_body("completed")
    server.answer(Answer(events=response_events(final)), Answer(events=response_events(final)))
    stream = await client.responses.create(
        model="gpt-4.1", input="hi", background=True, stream=True
    )
    async for _event in stream:
        break
    await stream.close()
    resumed = await client.responses.retrieve(final["id"], stream=True, starting_after=1)
    assert [e.type async for e in resumed][-1] == "response.completed"
    assert server.requests[1].method == "GET"
    [event] = await recorded(fg, collector)
    assert tokens(event) == (36, 87, 4, True)
    assert event["usage"]["latencyInMs"] == 7000


async def test_retrieving_an_inline_response_records_nothing_more(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A response run inline is recorded when it runs; retrieving it later records nothing."""
    client = track_openai(raw, fg)
    server.answer(Answer(body=response_body()), Answer(body=response_body()))
    created = await client.responses.create(model="gpt-4.1", input="hi")
    await client.responses.retrieve(created.id)
    await recorded(fg, collector, 1)


async def test_requests_that_spend_no_tokens_pass_through(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Listing models or fetching a file records nothing and answers as without tracking."""
    client = track_openai(raw, fg)
    server.answer(Answer(body={"object": "list", "data": []}))
    assert (await client.models.list()).data == []
    server.answer(Answer(body={"object": "list", "data": []}))
    assert (await client.with_raw_response.models.list()).parse().data == []
    assert await fg.flush(5)
    assert collector.events == []


async def test_chat_stream_from_the_helper_hides_the_usage_chunk(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """The helper's events are those of an untracked call, although usage was asked for."""
    client = track_openai(raw, fg)
    if missing_from_sdk("openai", raw, "chat.completions.stream", client):
        return
    server.answer_chat_stream()
    server.answer(Answer(events=chat_chunks(with_usage=False)))
    async with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as tracked:
        seen = [event.type async for event in tracked]
    async with raw.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as untracked:
        plain = [event.type async for event in untracked]
    assert seen == plain
    await recorded(fg, collector)


async def test_compaction_and_decisions_record_their_usage(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """`responses.compact` and `decisions.create` each record their usage."""
    client = track_openai(raw, fg)
    # `|`, not `or`: on an SDK without them, each absence is checked.
    if missing_from_sdk("openai", raw, "responses.compact", client) | missing_from_sdk(
        "openai", raw, "decisions.create", client
    ):
        return
    usage = response_body()["usage"]
    server.answer(
        Answer(
            body={
                "id": "cmp_1",
                "object": "response.compaction",
                "created_at": 1741476542,
                "output": [],
                "usage": usage,
            }
        ),
        Answer(body={"answers": [], "model": "gpt-6-luna", "usage": usage}),
    )
    await client.responses.compact(model="gpt-4.1", previous_response_id="resp_1")
    decision = await client.decisions.create(input="hi", model="gpt-6-luna", questions=[])
    assert decision.model == "gpt-6-luna"
    events = await recorded(fg, collector, 2)
    assert [tokens(e) for e in events] == [(36, 87, 4, False)] * 2
    assert [e["usage"]["model"] for e in events] == ["gpt-4.1", "gpt-6-luna"]


async def test_background_stream_closed_unread_records_nothing(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """A background stream left before it was opened records nothing: the response runs on."""
    client = track_openai(raw, fg)
    if missing_from_sdk("openai", raw, "responses.create(background)", client):
        return
    server.answer(Answer(events=response_events(background_body("completed"))))
    async with client.responses.with_streaming_response.create(
        model="gpt-4.1", input="hi", background=True, stream=True
    ):
        pass
    assert await fg.flush(5)
    assert collector.events == []


async def test_background_ids_remembered_are_bounded(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the latest background response ids are remembered, so memory stays bounded."""
    monkeypatch.setattr(fg_openai, "_REMEMBERED", 1)
    client = track_openai(raw, fg)
    first = background_body("completed")
    second = {**first, "id": "resp_2"}
    server.answer(Answer(body=first), Answer(body=first), Answer(body=second), Answer(body=first))
    for response_id in (first["id"], first["id"], "resp_2", first["id"]):
        await client.responses.retrieve(response_id)
    await recorded(fg, collector, 3)


async def test_a_bug_routing_a_request_leaves_it_untracked(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If routing a request fails on a bug of ours, the call runs untracked, and it is logged."""

    def broken(background: object) -> Any:
        def route(*args: object) -> None:
            raise RuntimeError("bug")

        return route

    monkeypatch.setattr(fg_openai, "_router", broken)
    client = track_openai(raw, fg)
    server.answer_chat()
    with caplog.at_level(logging.ERROR, logger="fluxgate_async"):
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello!"
    assert "bug while routing" in caplog.text
    assert await fg.flush(5)
    assert collector.events == []


def test_a_half_built_raw_response_wrapper_is_collected_quietly() -> None:
    """A raw response wrapper whose construction never finished is collected without error."""
    TrackedResponse.__new__(TrackedResponse).__del__()


@pytest.mark.parametrize("how", ["iter_bytes", "iter_text", "iter_lines"])
async def test_streaming_response_read_raw_records_once(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector, how: str
) -> None:
    """A streaming response read as raw bytes, text or lines records its usage once."""
    client = track_openai(raw, fg)
    server.answer_chat(prompt_tokens=12, completion_tokens=4)
    server.answer(Answer(events=response_events(response_body())))
    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        whole = [piece async for piece in getattr(response, how)()]
    async with client.responses.with_streaming_response.create(
        model="gpt-4.1", input="hi", stream=True
    ) as streamed:
        pieces = [piece async for piece in getattr(streamed, how)()]
    assert whole
    assert pieces
    events = await recorded(fg, collector, 2)
    assert [tokens(e) for e in events] == [(12, 4, 0, False), (36, 87, 4, True)]
    assert events[1]["metadata"]["reasoningTokens"] == 12


async def test_raw_lines_left_early_record_the_usage_seen(
    raw: AsyncOpenAI, server: FakeOpenAI, fg: FluxGate, collector: FakeCollector
) -> None:
    """Raw lines of a stream left early record ERROR with the model seen so far, once."""
    client = track_openai(raw, fg)
    server.answer(Answer(events=response_events(response_body())))
    async with client.responses.with_streaming_response.create(
        model="gpt-4.1", input="hi", stream=True
    ) as streamed:
        async for line in streamed.iter_lines():
            if line.startswith("data:"):
                break
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "stream closed before its end"}
    assert event["usage"]["model"] == "gpt-4.1-2025-04-14"


async def test_a_stream_the_sdk_fails_to_open_records_one_error(
    raw: AsyncOpenAI,
    server: FakeOpenAI,
    fg: FluxGate,
    collector: FakeCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A streamed answer the SDK fails to turn into its stream records ERROR once, and raises."""

    async def failing(**_: object) -> None:
        raise RuntimeError("cannot read this stream")

    monkeypatch.setattr(raw, "_process_response", failing)
    client = track_openai(raw, fg)
    server.answer_chat_stream()
    with pytest.raises(RuntimeError, match="cannot read this stream"):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    [event] = await recorded(fg, collector)
    assert event["status"] == {"status": "ERROR", "errorMessage": "cannot read this stream"}
    assert event["usage"]["isStreamed"] is True
