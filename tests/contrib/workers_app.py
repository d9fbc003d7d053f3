"""A FastAPI app that tests/contrib/test_workers.py serves with several worker processes.

The client is built at import, so that under `gunicorn --preload` the master builds
it and each worker inherits it by fork.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from fluxgate_async import FluxGate
from fluxgate_async.contrib.fastapi import FluxGateDep, fluxgate_lifespan

client = FluxGate()  # api_key and endpoint from the environment
if "RECORD_AT_IMPORT" in os.environ:  # the input tokens of an event recorded at import
    tokens = int(os.environ["RECORD_AT_IMPORT"])
    client.record_event_nowait({"usage": {"inputTokens": tokens, "outputTokens": 1}})

app = FastAPI(lifespan=fluxgate_lifespan(client, close_timeout=20))


def _event(n: int) -> dict[str, object]:
    return {"usage": {"inputTokens": n, "outputTokens": 1}, "metadata": {"worker": os.getpid()}}


@app.post("/async/{n}")
async def record_in_the_loop(n: int, fluxgate: FluxGateDep) -> dict[str, int | bool]:
    """Record from the event loop's thread."""
    return {"worker": os.getpid(), "queued": fluxgate.record_event_nowait(_event(n))}


@app.post("/sync/{n}")
def record_in_a_thread(n: int, fluxgate: FluxGateDep) -> dict[str, int | bool]:
    """Record from the thread pool FastAPI runs `def` endpoints in."""
    return {"worker": os.getpid(), "queued": fluxgate.record_event_nowait(_event(n))}
