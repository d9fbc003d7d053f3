"""What the agent-framework tests share: a run that calls one tool, as each provider answers it.

`Queue` stands in for a FluxGate client where a hook is tested on its own.

Each run makes two model requests: the first asks for `get_weather` (50 input,
10 output tokens), the second answers (80 input of which 40 cached, 20 output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from ..integrations.servers import (
    SSE,
    anthropic_message,
    anthropic_stream,
    chat_chunks,
    chat_completion,
    function_call_item,
    gemini_content,
    gemini_stream,
    message_item,
    response,
    response_stream,
    tool_call,
)

Request = tuple[int, int, int | None, bool, str]
"""One event: input, output and cached tokens, whether streamed, status."""

Provider = Literal["openai-chat", "openai-responses", "anthropic", "google"]
PROVIDERS: list[Provider] = ["openai-chat", "openai-responses", "anthropic", "google"]
CALL = {"city": "Paris"}
ANSWER = "Sunny in Paris."
FIRST = {"input": 50, "output": 10}
SECOND = {"input": 80, "output": 20, "cached": 40}


class Queue:
    """Stands in for a FluxGate client: keeps what `record_event_nowait` is given."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.keys: list[str | None] = []

    def record_event_nowait(self, event: Any, idempotency_key: str | None = None) -> bool:
        """Keep `event` and its key."""
        self.events.append(event)
        self.keys.append(idempotency_key)
        return True

    async def record_event(self, event: Any) -> None:
        """Never called by a hook."""
        raise AssertionError


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return f"Sunny in {city}"


def answers(provider: Provider) -> tuple[Any, Any, Callable[[Any], list[SSE]]]:
    """The provider's two answers (the tool call, then the text) and how it streams an answer."""
    if provider == "openai-chat":
        call = chat_completion(
            tool_calls=[tool_call("get_weather", CALL)],
            finish_reason="tool_calls",
            prompt_tokens=FIRST["input"],
            completion_tokens=FIRST["output"],
        )
        text = chat_completion(
            content=ANSWER,
            prompt_tokens=SECOND["input"],
            completion_tokens=SECOND["output"],
            cached_tokens=SECOND["cached"],
        )
        return call, text, chat_stream
    if provider == "openai-responses":
        call = response(
            [function_call_item("get_weather", CALL)],
            input_tokens=FIRST["input"],
            output_tokens=FIRST["output"],
        )
        text = response(
            [message_item(ANSWER)],
            input_tokens=SECOND["input"],
            output_tokens=SECOND["output"],
            cached_tokens=SECOND["cached"],
        )
        return call, text, response_stream
    if provider == "anthropic":
        tool_use = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": CALL}
        call = anthropic_message(
            [tool_use],
            stop_reason="tool_use",
            input_tokens=FIRST["input"],
            output_tokens=FIRST["output"],
        )
        text = anthropic_message(
            [{"type": "text", "text": ANSWER}],
            input_tokens=SECOND["input"],
            output_tokens=SECOND["output"],
            cache_read=SECOND["cached"],
        )
        return call, text, anthropic_stream
    call = gemini_content(
        [{"functionCall": {"name": "get_weather", "args": CALL}}],
        prompt_tokens=FIRST["input"],
        candidates_tokens=FIRST["output"],
    )
    text = gemini_content(
        [{"text": ANSWER}],
        prompt_tokens=SECOND["input"],
        candidates_tokens=SECOND["output"] - 8,
        thoughts_tokens=8,
        cached_tokens=SECOND["cached"],
    )
    return call, text, gemini_stream


def chat_stream(completion: dict[str, Any]) -> list[SSE]:
    """A chat completion streamed: its text or tool calls, then its usage."""
    [choice] = completion["choices"]
    usage = completion["usage"]
    return chat_chunks(
        words=(choice["message"]["content"],) if choice["message"]["content"] else (),
        tool_calls=choice["message"].get("tool_calls", ()),
        finish_reason=choice["finish_reason"],
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        cached_tokens=usage["prompt_tokens_details"]["cached_tokens"],
    )


def requests(events: list[Any]) -> list[Request]:
    """The events' tokens, streaming and status, sorted by input tokens.

    A cache count that is absent (Gemini sends none when nothing was cached) reads as 0.
    """
    return sorted(
        (
            event["usage"]["inputTokens"],
            event["usage"]["outputTokens"],
            event["usage"].get("cachedTokens") or 0,
            event["usage"]["isStreamed"],
            event["status"],
        )
        for event in events
    )


def expected(*, streamed: bool) -> list[Request]:
    """The run's two model requests, as `requests` lists them."""
    return [
        (FIRST["input"], FIRST["output"], 0, streamed, "SUCCESS"),
        (SECOND["input"], SECOND["output"], SECOND["cached"], streamed, "SUCCESS"),
    ]
