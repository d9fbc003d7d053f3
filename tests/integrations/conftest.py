"""Fixtures the integration tests share: a loopback OpenAI API and an untracked client of it.

Test modules for other providers (Anthropic, Gemini) define their own `server`
and `raw`, which take the place of these in those modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from .servers import FakeOpenAI


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    """A loopback OpenAI API."""
    async with FakeOpenAI() as s:
        yield s


@pytest.fixture
async def raw(server: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    """An untracked OpenAI client of the loopback API, without retries."""
    async with AsyncOpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as c:
        yield c
