"""Provider answers the agent frameworks need: tool calls, Anthropic messages, Responses.

Every answer carries distinct token counts, so that a test can tell which
request an event belongs to and check the event against the answer's usage.
"""

from __future__ import annotations

import json
from typing import Any

from ..integrations.servers import SSE, Answer, chat_completion

__all__ = [
    "anthropic_message",
    "anthropic_stream",
    "chat_tool_call",
    "response_body",
    "response_stream",
]

ANTHROPIC_MODEL = "claude-sonnet-4-6-20260217"
RESPONSES_MODEL = "gpt-4.1-2025-04-14"


def chat_tool_call(
    tool: str, arguments: dict[str, Any], *, prompt_tokens: int, completion_tokens: int
) -> Answer:
    """A chat completion asking to call `tool` with `arguments`."""
    body = chat_completion(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason="tool_calls",
    )
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": tool, "arguments": json.dumps(arguments)},
            }
        ],
    }
    return Answer(body=body)


def anthropic_message(
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
    text: str = "Hi! My name is Claude.",
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    """A Messages API body shaped like Anthropic's."""
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": text}],
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


def anthropic_stream(
    *, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> Answer:
    """A Messages stream shaped like Anthropic's: start, one text block, delta, stop."""
    start = anthropic_message(
        input_tokens=input_tokens,
        output_tokens=1,
        cache_read=cache_read,
        cache_write=cache_write,
    )
    start["content"] = []
    start["stop_reason"] = None
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": start}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi!"}}),
        ("content_block_stop", {"index": 0}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                # As Anthropic sends it now: the final counts, input and cache included.
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": cache_write,
                    "cache_read_input_tokens": cache_read,
                    "output_tokens": output_tokens,
                },
            },
        ),
        ("message_stop", {}),
    ]
    return Answer(events=[SSE({"type": kind, **data}, kind) for kind, data in events])


def response_body(
    *,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    text: str = "Hello!",
    tool_call: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Responses API body shaped like OpenAI's: a message, or a function call."""
    if tool_call is None:
        item: dict[str, Any] = {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
    else:
        name, arguments = tool_call
        item = {
            "type": "function_call",
            "id": "fc_67ccd2bf17f0819081ff3bb2cf6508e6",
            "call_id": "call_" + name,
            "name": name,
            "arguments": json.dumps(arguments),
            "status": "completed",
        }
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc054267",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": RESPONSES_MODEL,
        "output": [item],
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


def response_stream(final: dict[str, Any]) -> Answer:
    """A Responses API event stream ending with `final`, as OpenAI sends it."""
    started = {**final, "status": "in_progress", "usage": None, "output": []}
    item = final["output"][0]
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": final}),
    ]
    return Answer(
        events=[
            SSE({"type": kind, "sequence_number": n, **data}, kind)
            for n, (kind, data) in enumerate(events)
        ]
    )
