"""pydantic-ai with tracked clients: one event per model request, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from anthropic import AsyncAnthropic
from google import genai
from google.genai import types
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.google import GoogleModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.google import GoogleProvider
from pydantic_ai.providers.openai import OpenAIProvider

from fluxgate_async import FluxGate
from fluxgate_async._recording import Mode
from fluxgate_async.integrations.anthropic import track_anthropic
from fluxgate_async.integrations.google import track_genai
from fluxgate_async.integrations.openai import track_openai
from fluxgate_async.testing import FakeCollector

from ..integrations.helpers import recorded
from ..integrations.servers import (
    Answer,
    ProviderServer,
)
from .helpers import (
    ANSWER,
    PROVIDERS,
    Provider,
    answers,
    expected,
    get_weather,
    requests,
)

# google-genai subclasses aiohttp.ClientSession, which aiohttp warns about: not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    """A loopback provider API."""
    async with ProviderServer() as s:
        yield s


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> Provider:
    """Each test taking `provider` runs once per pydantic-ai model tested."""
    name: Provider = request.param
    return name


@pytest.fixture
async def model(
    provider: Provider, server: ProviderServer, fg: FluxGate, mode: Mode
) -> AsyncIterator[Model]:
    """The pydantic-ai model for `provider`, on a client of the loopback API tracked in `mode`."""
    if provider in ("openai-chat", "openai-responses"):
        async with AsyncOpenAI(
            api_key="sk-test", base_url=server.url + "/v1", max_retries=0
        ) as raw:
            openai = OpenAIProvider(openai_client=track_openai(raw, fg, mode=mode))
            if provider == "openai-chat":
                yield OpenAIChatModel("gpt-4o-mini", provider=openai)
            else:
                yield OpenAIResponsesModel("gpt-4.1", provider=openai)
    elif provider == "anthropic":
        async with AsyncAnthropic(
            api_key="sk-ant-test", base_url=server.url, max_retries=0
        ) as raw_anthropic:
            tracked = track_anthropic(raw_anthropic, fg, mode=mode)
            yield AnthropicModel(
                "claude-sonnet-4-6", provider=AnthropicProvider(anthropic_client=tracked)
            )
    else:
        raw_google = genai.Client(
            api_key="g-test", http_options=types.HttpOptions(base_url=server.url)
        )
        yield GoogleModel(
            "gemini-2.5-flash",
            provider=GoogleProvider(client=track_genai(raw_google, fg, mode=mode)),
        )
        await raw_google.aio.aclose()
        raw_google.close()


def agent(model: Model) -> Agent[None, str]:
    """An agent that may call `get_weather`."""
    return Agent(model, instructions="Answer with the weather.", tools=[get_weather])


PROVIDER_NAMES = {
    "openai-chat": "openai",
    "openai-responses": "openai",
    "anthropic": "anthropic",
    "google": "google",
}


async def test_run_records_each_model_request(
    provider: Provider,
    model: Model,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
) -> None:
    """`Agent.run` with a tool call records its two requests, with each one's tokens."""
    call, text, _stream = answers(provider)
    server.answer(Answer(body=call), Answer(body=text))

    result = await agent(model).run("Weather in Paris?", model_settings={"max_tokens": 1024})

    assert result.output == ANSWER
    assert len(server.requests) == 2
    events = await recorded(fg, collector, 2)
    assert requests(events) == expected(streamed=False)
    assert {event["usage"]["provider"] for event in events} == {PROVIDER_NAMES[provider]}


async def test_run_stream_records_each_model_request(
    provider: Provider,
    model: Model,
    server: ProviderServer,
    fg: FluxGate,
    collector: FakeCollector,
) -> None:
    """`Agent.run_stream` with a tool call records its two streamed requests, with their tokens."""
    call, text, stream = answers(provider)
    server.answer(Answer(events=stream(call)), Answer(events=stream(text)))

    async with agent(model).run_stream(
        "Weather in Paris?", model_settings={"max_tokens": 1024}
    ) as result:
        output = await result.get_output()

    assert output == ANSWER
    assert len(server.requests) == 2
    events = await recorded(fg, collector, 2)
    assert requests(events) == expected(streamed=True)


@pytest.mark.parametrize("provider", ["anthropic"])
async def test_anthropic_run_retried_as_a_stream_records_no_phantom_error(
    model: Model, server: ProviderServer, fg: FluxGate, collector: FakeCollector
) -> None:
    """A request the SDK refuses unsent, that pydantic-ai then streams, records one SUCCESS."""
    call, text, stream = answers("anthropic")
    server.answer(Answer(events=stream(call)), Answer(events=stream(text)))

    # No max_tokens: pydantic-ai asks for the model's maximum, too long for a non-streamed request.
    result = await agent(model).run("Weather in Paris?")

    assert result.output == ANSWER
    assert len(server.requests) == 2
    events = await recorded(fg, collector, 2)
    assert requests(events) == expected(streamed=True)
