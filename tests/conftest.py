"""Shared fixtures: a FakeCollector on loopback, a client pointed at it, the tracking modes."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from fluxgate_async import FluxGate
from fluxgate_async._recording import Mode
from fluxgate_async.testing import FakeCollector

API_KEY = "sk-test-0123456789-secret"

# LiteLLM downloads its price map when first imported, unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    """A FakeCollector serving on 127.0.0.1 and a free port for one test."""
    async with FakeCollector() as c:
        yield c


@pytest.fixture
async def fg(collector: FakeCollector) -> AsyncIterator[FluxGate]:
    """A client pointed at `collector`, with a short deadline."""
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=2.0) as client:
        yield client


class ThreadedCollector:
    """A FakeCollector running on its own loop in a thread, to outlive a test's loops."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.collector = FakeCollector()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeCollector:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.collector.start(), self.loop).result(5)
        return self.collector

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.collector.aclose(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def threaded_collector() -> Iterator[FakeCollector]:
    """A FakeCollector on a thread of its own, for tests that run several event loops."""
    with ThreadedCollector() as c:
        yield c


@pytest.fixture(params=["background", "inline"])
def mode(request: pytest.FixtureRequest) -> Mode:
    """Each test taking `mode` runs once per tracking mode."""
    mode: Mode = request.param
    return mode
