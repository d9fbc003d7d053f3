"""What every framework hook shares: names, token conventions, the one-event rule, never raising."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
import uuid
from typing import Any

import pytest
from langchain_core.outputs import LLMResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from fluxgate_async import _routes
from fluxgate_async._models import AiEventStatus
from fluxgate_async._routes import (
    TRACKED_CALL_ATTRIBUTE,
    inside_tracked_call,
    note_tracked_call,
    open_model_request,
)
from fluxgate_async.integrations._conventions import finish_status, provider_name, usage_outcome
from fluxgate_async.integrations.langchain import FluxGateCallbackHandler
from fluxgate_async.integrations.litellm import FluxGateLogger
from fluxgate_async.integrations.openai_agents import FluxGateTracingProcessor
from fluxgate_async.integrations.otel import FluxGateSpanProcessor

from .helpers import Queue


class Call:
    """A tracked client's call, as `note_tracked_call` sees it."""

    finished = False


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openai", "openai"),
        ("gcp.gemini", "google"),
        ("google_genai", "google"),
        ("vertex_ai", "google"),
        ("azure.ai.openai", "azure"),
        (" Anthropic ", "anthropic"),
        ("together_ai", "together"),
        ("my-host", "my-host"),
        ("", None),
        (None, None),
    ],
)
def test_provider_names_are_fluxgates(name: object, expected: str | None) -> None:
    """Each framework's name of a provider becomes the one the SDK wrappers record."""
    assert provider_name(name) == expected


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("stop", AiEventStatus.SUCCESS),
        ("MAX_TOKENS", AiEventStatus.MAX_TOKENS),
        ("length", AiEventStatus.MAX_TOKENS),
        ("content_filter", AiEventStatus.CONTENT_FILTER),
        ("SAFETY", AiEventStatus.BLOCKED),
        ("RECITATION", AiEventStatus.RECITATION),
        ("something new", AiEventStatus.SUCCESS),
        (None, AiEventStatus.SUCCESS),
    ],
)
def test_finish_reasons_map_to_one_status_on_every_route(
    reason: object, status: AiEventStatus
) -> None:
    """Finish reasons of every provider, any case, map to one status; unknown ones succeed."""
    assert finish_status(reason) == status


def test_anthropic_tokens_follow_the_anthropic_wrapper() -> None:
    """Anthropic: input less the cache; cached is reads plus writes, or unknown."""
    known = usage_outcome(
        "anthropic", input_tokens=325, output_tokens=15, cache_read=200, cache_write=100
    )
    assert (known.input_tokens, known.cached_tokens) == (25, 300)
    assert known.extra == {"cacheWriteTokens": 100}
    unknown = usage_outcome("anthropic", input_tokens=25, output_tokens=15)
    assert (unknown.input_tokens, unknown.cached_tokens) == (25, None)
    odd = usage_outcome("anthropic", input_tokens=10, output_tokens=-1, cache_read=40)
    assert (odd.input_tokens, odd.output_tokens, odd.cached_tokens) == (0, 0, 40)


def test_a_request_ended_in_another_thread_or_twice_is_harmless() -> None:
    """Closing a request where it did not start, or twice, neither raises nor loses the answer."""
    request = open_model_request(object())
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(request.close()))
    thread.start()
    thread.join(5)
    assert answers == [True]
    assert request.close() is True


def test_siblings_of_one_hook_both_record_and_a_tracked_call_covers_all() -> None:
    """Two open requests of one hook are siblings; a tracked call covers every open request."""
    hook, other = object(), object()

    def run() -> None:
        first = open_model_request(hook)
        second = open_model_request(hook)
        assert (second.close(), first.close()) == (True, True)
        outer = open_model_request(other)
        inner = open_model_request(hook)  # another hook's request inside: the inner wins
        assert (inner.close(), outer.close()) == (True, False)
        ended = open_model_request(hook)
        ended.ended = True  # ended in another context, still the current one here
        after = open_model_request(other)
        assert after.parent is None
        call = Call()
        note_tracked_call(call)
        assert inside_tracked_call()
        assert after.close() is False
        inside = open_model_request(hook)
        assert inside.close() is False
        call.finished = True
        assert not inside_tracked_call()

    contextvars.Context().run(run)


def test_a_long_chain_is_marked_only_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain of open requests deeper than the bound is marked up to the bound, cheaply."""
    monkeypatch.setattr(_routes, "_MAX_DEPTH", 2)
    results: list[bool] = []

    def run() -> None:
        hook = object()
        requests = [open_model_request(hook) for _ in range(4)]
        note_tracked_call(Call())
        results.extend(request.close() for request in reversed(requests))

    contextvars.Context().run(run)
    assert results == [False, False, True, True]


def test_a_tracked_call_marks_only_a_current_inference_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wrapper marks the current span when it is an inference span, and only then."""
    tracer = TracerProvider().get_tracer("test")
    chat_attributes = {"gen_ai.operation.name": "chat"}

    def run() -> list[Any]:
        with tracer.start_as_current_span("chat", attributes=chat_attributes) as chat:
            note_tracked_call(Call())
        with tracer.start_as_current_span("work") as work:
            note_tracked_call(Call())
        monkeypatch.delitem(sys.modules, "opentelemetry.trace")
        with tracer.start_as_current_span("chat", attributes=chat_attributes) as late:
            note_tracked_call(Call())
        return [dict(getattr(span, "attributes", None) or {}) for span in (chat, work, late)]

    chat, work, late = contextvars.Context().run(run)
    assert chat.get(TRACKED_CALL_ATTRIBUTE) is True
    assert TRACKED_CALL_ATTRIBUTE not in work
    assert TRACKED_CALL_ATTRIBUTE not in late


class BadError(Exception):
    """An exception that cannot be shown."""

    def __str__(self) -> str:
        raise RuntimeError


class Broken:
    """An object on which every attribute read fails."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


async def test_a_bug_in_any_hook_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    """Given objects they cannot read, hooks log the bug and return normally."""
    queue = Queue()
    otel = FluxGateSpanProcessor(queue)  # type: ignore[arg-type]
    agents_processor = FluxGateTracingProcessor(queue)  # type: ignore[arg-type]
    handler = FluxGateCallbackHandler(queue)  # type: ignore[arg-type]
    logger = FluxGateLogger(queue)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="fluxgate_async"):
        otel.on_start(Broken())  # type: ignore[arg-type]
        otel.on_end(Broken())  # type: ignore[arg-type]
        agents_processor.on_trace_start(Broken())  # type: ignore[arg-type]
        agents_processor.on_span_start(Broken())  # type: ignore[arg-type]
        agents_processor.on_span_end(Broken())  # type: ignore[arg-type]
        run_id = uuid.uuid4()
        await handler.on_chat_model_start({}, [[]], run_id=run_id, metadata=Broken())  # type: ignore[arg-type]
        await handler.on_llm_start({}, [""], run_id=run_id)
        await handler.on_llm_end(Broken(), run_id=run_id)  # type: ignore[arg-type]
        await handler.on_llm_start({}, [""], run_id=run_id)
        await handler.on_llm_error(BadError(), run_id=run_id)
        await logger.async_log_success_event(Broken(), None, 0, 0)  # type: ignore[arg-type]
    # An error whose text cannot be read is still recorded, under its type's name.
    [event] = queue.events
    assert (event.status, event.error_message) == ("ERROR", "BadError")
    assert caplog.text.count("FluxGate: bug while") == 8


async def test_hooks_read_what_little_they_are_given(caplog: pytest.LogCaptureFixture) -> None:
    """Missing usage, a LiteLLM cache hit and an exception event each record sensibly."""
    queue = Queue()
    handler = FluxGateCallbackHandler(queue)  # type: ignore[arg-type]
    run_id = uuid.uuid4()
    await handler.on_llm_start({}, [""], run_id=run_id)
    await handler.on_llm_end(LLMResult(generations=[]), run_id=run_id)
    empty = queue.events.pop()
    assert (empty.usage.input_tokens, empty.usage.output_tokens, empty.status) == (0, 0, "SUCCESS")

    logger = FluxGateLogger(queue)  # type: ignore[arg-type]
    payload = {
        "status": "success",
        "custom_llm_provider": "vertex_ai",
        "model": "gemini-2.5-flash",
        "prompt_tokens": 40,
        "completion_tokens": 9,
        "startTime": True,
        "endTime": 2.0,
        "cache_hit": True,
    }
    await logger.async_log_success_event({"standard_logging_object": payload}, None, 0, 0)
    hit = queue.events.pop()
    assert (hit.usage.input_tokens, hit.usage.output_tokens, hit.usage.provider) == (0, 0, "google")
    assert hit.metadata.extra["cacheHit"] is True
    with caplog.at_level(logging.WARNING, logger="fluxgate_async"):
        await logger.async_log_failure_event({}, None, 0, 0)
    assert "no standard_logging_object" in caplog.text
    assert queue.events == []

    processor = FluxGateSpanProcessor(queue)  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(processor)
    span = provider.get_tracer("test").start_span(
        "chat", attributes={"gen_ai.operation.name": "chat"}
    )
    span.add_event("gen_ai.choice")
    span.record_exception(TimeoutError("slow"))
    span.set_status(Status(StatusCode.ERROR))
    span.end()
    [failed] = queue.events
    assert failed.error_message == "TimeoutError"
    assert failed.metadata.extra["errorType"] == "TimeoutError"
    await asyncio.sleep(0)
