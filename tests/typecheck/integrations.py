"""How the provider wrappers type-check in user code: mypy --strict reads this, pytest never."""

from __future__ import annotations

from typing import assert_type

from anthropic import AsyncAnthropic
from anthropic.types import Message
from google import genai
from google.genai import types
from openai import AsyncAzureOpenAI, AsyncOpenAI
from openai.types.chat import ChatCompletion

from fluxgate_async import (
    FluxGate,
    FluxGateCostTrackingResponse,
    TrackedCall,
    tracking_context,
    tracking_of,
)
from fluxgate_async.integrations.anthropic import track_anthropic
from fluxgate_async.integrations.google import track_genai
from fluxgate_async.integrations.openai import track_openai


async def wrappers_keep_the_sdk_types(fg: FluxGate) -> None:
    """A wrapped client is the SDK's own type, and so is everything it returns."""
    openai = track_openai(AsyncOpenAI(), fg, mode="inline", feature="chat")
    assert_type(openai, AsyncOpenAI)
    assert_type(track_openai(AsyncAzureOpenAI(api_version="2024-10-21"), fg), AsyncAzureOpenAI)
    reply = await openai.chat.completions.create(model="gpt-4o", messages=[])
    assert_type(reply, ChatCompletion)
    tracking = tracking_of(reply)
    assert_type(tracking, FluxGateCostTrackingResponse | None)

    claude = track_anthropic(AsyncAnthropic(), fg, user="user-1")
    assert_type(claude, AsyncAnthropic)
    message = await claude.messages.create(model="claude-sonnet-4-6", max_tokens=1, messages=[])
    assert_type(message, Message)

    gemini = track_genai(genai.Client(), fg)
    assert_type(gemini, genai.Client)
    answer = await gemini.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert_type(answer, types.GenerateContentResponse)


async def any_provider(fg: FluxGate) -> None:
    """`track` and `tracking_context` as users write them."""
    with tracking_context(feature="chat", user="user-1", session_id="s", plan="pro"):
        async with fg.track(model="m", provider="p", mode="inline") as call:
            assert_type(call, TrackedCall)
            call.set_usage(10, 5, cached_tokens=2)
        assert_type(call.tracking, FluxGateCostTrackingResponse | None)
