"""The FastAPI helper opens the client at start-up and delivers everything at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from fluxgate_async import FluxGate
from fluxgate_async.contrib.fastapi import FluxGateDep, fluxgate_lifespan
from fluxgate_async.testing import FakeCollector, Reply

from ..conftest import API_KEY


def make_app(**lifespan_options: Any) -> FastAPI:
    """A small service that records one event per chat request, in the background."""
    app = FastAPI(lifespan=fluxgate_lifespan(**lifespan_options))

    @app.post("/chat")
    async def chat(fluxgate: FluxGateDep) -> dict[str, bool]:
        queued = fluxgate.record_event_nowait(
            {"usage": {"inputTokens": 12, "outputTokens": 30}, "metadata": {"feature": "chat"}}
        )
        return {"queued": queued}

    return app


def test_events_queued_by_endpoints_are_delivered_at_shutdown(
    threaded_collector: FakeCollector,
) -> None:
    """Requests return at once; stopping the app delivers every queued event."""
    threaded_collector.responder = lambda _: Reply(delay=0.05)
    app = make_app(api_key=API_KEY, endpoint=threaded_collector.url)
    with TestClient(app) as client:
        for _ in range(5):
            response = client.post("/chat")
            assert response.json() == {"queued": True}
    assert len(threaded_collector.events) == 5
    assert threaded_collector.events[0]["metadata"] == {"feature": "chat"}


def test_a_given_client_is_used_and_closed(threaded_collector: FakeCollector) -> None:
    """Passing a client makes the app use it; shutdown closes it."""
    fluxgate = FluxGate(API_KEY, endpoint=threaded_collector.url)
    with TestClient(make_app(client=fluxgate)) as client:
        client.post("/chat")
    assert fluxgate.closed
    assert fluxgate.stats.sent == 1


def test_own_lifespan_runs_inside_and_its_state_is_kept(
    threaded_collector: FakeCollector,
) -> None:
    """An app's own lifespan still runs, and the state it yields reaches requests."""
    calls: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        calls.append("start")
        yield {"db": "connected"}
        calls.append("stop")

    app = FastAPI(
        lifespan=fluxgate_lifespan(api_key=API_KEY, endpoint=threaded_collector.url, lifespan=own)
    )

    @app.get("/state")
    async def state(request: Request, fluxgate: FluxGateDep) -> dict[str, Any]:
        return {"db": request.state.db, "closed": fluxgate.closed}

    with TestClient(app) as client:
        assert client.get("/state").json() == {"db": "connected", "closed": False}
    assert calls == ["start", "stop"]


def test_dependency_without_the_lifespan_says_how_to_fix_it() -> None:
    """Using the dependency in an app without the lifespan is a clear set-up error."""
    app = FastAPI()

    @app.get("/")
    async def index(fluxgate: FluxGateDep) -> None:
        raise AssertionError("unreachable")  # pragma: no cover

    with TestClient(app) as client, pytest.raises(RuntimeError, match="fluxgate_lifespan"):
        client.get("/")
