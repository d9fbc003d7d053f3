"""A local FluxGate API: stores events in SQLite, prices them, reports on them.

It speaks the API the client speaks, so the whole loop runs on one machine
without an account: `fluxgate-async serve`, then point `FluxGate(endpoint=...)`
at it. Needs the `collector` extra: `pip install 'fluxgate-async[collector]'`.

Example:
    ```python
    import asyncio

    from fluxgate_async import FluxGate
    from fluxgate_async.collector import Collector


    async def main() -> None:
        async with (
            Collector("events.sqlite") as collector,
            FluxGate("local", endpoint=collector.url) as fg,
        ):
            answer = await fg.record_event(
                {"usage": {"inputTokens": 100, "outputTokens": 50, "model": "gpt-4o"}}
            )
        print(answer)  # its id, and its cost as genai-prices prices it


    asyncio.run(main())
    ```
"""

from ._app import DEFAULT_MAX_BODY_SIZE, MAX_TOKENS, create_app
from ._pricing import PRICED, UNKNOWN_MODEL, MissingExtraError, Price, price_usage
from ._server import DEFAULT_DB, DEFAULT_HOST, DEFAULT_PORT, Collector, serve
from ._store import GROUPS, EventStore, connect_readonly, summarise

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PORT",
    "GROUPS",
    "MAX_TOKENS",
    "PRICED",
    "UNKNOWN_MODEL",
    "Collector",
    "EventStore",
    "MissingExtraError",
    "Price",
    "connect_readonly",
    "create_app",
    "price_usage",
    "serve",
    "summarise",
]
