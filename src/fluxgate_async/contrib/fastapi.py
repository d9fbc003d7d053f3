"""FastAPI (and Starlette) integration: one client per app, flushed and closed at shutdown.

Example:
    ```python
    from fastapi import FastAPI
    from fluxgate_async.contrib.fastapi import FluxGateDep, fluxgate_lifespan

    app = FastAPI(lifespan=fluxgate_lifespan())  # api_key from FLUXGATE_API_KEY


    @app.post("/chat")
    async def chat(question: str, fluxgate: FluxGateDep) -> dict[str, str]:
        answer = f"You asked: {question}"  # your LLM call goes here
        fluxgate.record_event_nowait({"usage": {"inputTokens": 12, "outputTokens": 30}})
        return {"answer": answer}
    ```

    Serve `app` with any ASGI server, or try it with FastAPI's `TestClient`,
    which runs the lifespan too:

    ```python
    from fastapi.testclient import TestClient

    with TestClient(app) as http:
        print(http.post("/chat", params={"question": "Hi!"}).json())
    ```

The lifespan opens the client at start-up and, at shutdown, delivers what is
still queued (within `close_timeout` seconds) before closing it, so no event is
lost when the server stops. Requires the `fastapi` extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

try:
    from fastapi import Depends, FastAPI, Request
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    msg = "fluxgate_async.contrib.fastapi needs FastAPI: pip install 'fluxgate-async[fastapi]'"
    raise ImportError(msg) from exc

from .._client import FluxGate
from .._config import DEFAULT_CLOSE_TIMEOUT

__all__ = ["FluxGateDep", "fluxgate_lifespan", "get_fluxgate"]

_STATE_KEY = "fluxgate"

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def fluxgate_lifespan(
    client: FluxGate | None = None,
    *,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    lifespan: Lifespan | None = None,
    **options: Any,
) -> Lifespan:
    """Return a FastAPI `lifespan` that owns a `FluxGate` client for the app's lifetime.

    Args:
        client: A client to use; by default one is created at start-up from
            `options` (the `FluxGate` constructor's keyword arguments).
        close_timeout: Seconds shutdown spends delivering queued events.
        lifespan: Your own lifespan, run inside this one; a mapping it yields is
            merged into the request state.
        **options: Passed to `FluxGate(...)` when `client` is not given.

    The client is available to endpoints through `get_fluxgate` / `FluxGateDep`
    and as `request.state.fluxgate`.
    """

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        fluxgate = client if client is not None else FluxGate(**options)
        try:
            if lifespan is None:
                yield {_STATE_KEY: fluxgate}
            else:
                async with lifespan(app) as state:
                    yield {**(state or {}), _STATE_KEY: fluxgate}
        finally:
            await fluxgate.aclose(timeout=close_timeout)

    return run


def get_fluxgate(request: Request) -> FluxGate:
    """FastAPI dependency: the app's `FluxGate` client, opened by `fluxgate_lifespan`.

    Raises:
        RuntimeError: The app was not created with `lifespan=fluxgate_lifespan(...)`.
    """
    fluxgate = getattr(request.state, _STATE_KEY, None)
    if not isinstance(fluxgate, FluxGate):
        msg = "no FluxGate client: create the app with FastAPI(lifespan=fluxgate_lifespan(...))"
        raise RuntimeError(msg)
    return fluxgate


FluxGateDep = Annotated[FluxGate, Depends(get_fluxgate)]
"""Annotate an endpoint parameter with this to receive the app's client."""
