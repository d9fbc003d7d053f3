"""`Collector`: the collector app served on a TCP port, started and stopped from asyncio."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from .._config import is_loopback
from .._serving import start_app
from ._app import DEFAULT_MAX_BODY_SIZE, create_app

__all__ = ["DEFAULT_DB", "DEFAULT_HOST", "DEFAULT_PORT", "SHUTDOWN_TIMEOUT", "Collector", "serve"]

DEFAULT_HOST = "127.0.0.1"
"""Where `fluxgate-async serve` listens: this machine only."""
DEFAULT_PORT = 8787
"""The port `fluxgate-async serve` listens on."""
DEFAULT_DB = "fluxgate.sqlite"
"""The database file `serve` and `report` use, in the current directory."""
SHUTDOWN_TIMEOUT = 10.0
"""Seconds requests in flight get to finish when the collector stops."""


class Collector:
    """A running local collector: FluxGate's API on `host:port`, events in a SQLite file.

    Example:
        ```python
        import asyncio

        from fluxgate_async import FluxGate
        from fluxgate_async.collector import Collector


        async def main() -> None:
            async with (
                Collector("events.sqlite", port=0) as collector,
                FluxGate("any-key", endpoint=collector.url) as fg,
            ):
                print(collector.url)  # the free port it found
                print(await fg.record_event({"usage": {"inputTokens": 10, "outputTokens": 5}}))


        asyncio.run(main())
        ```

    Args:
        db: The SQLite file; created when missing.
        host: The address to listen on.
        port: The port; 0 picks a free one (see `port` once started).
        api_keys: When not empty, requests must carry one of these as a Bearer token.
        max_body_size: Bytes; a larger request body gets 413.
        allow_anonymous: Serve a `host` other than loopback with no `api_keys`,
            letting anyone who can reach the port read and write events.

    Raises:
        ValueError: An API key is empty, or `host` is not loopback while there is
            no API key and `allow_anonymous` is false.
        MissingExtraError: `genai-prices` is not installed.
    """

    def __init__(
        self,
        db: str | Path,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        api_keys: Iterable[str] = (),
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        allow_anonymous: bool = False,
    ) -> None:
        self._runner: web.AppRunner | None = None
        keys = tuple(api_keys)
        # Its GET routes return users' metadata: open to the network only when asked for.
        if not keys and not allow_anonymous and not is_loopback(host):
            msg = (
                f"refusing to serve {host!r} without an API key: anyone who can reach it "
                "could read and write events; pass api_keys, or allow_anonymous=True"
            )
            raise ValueError(msg)
        self._app = create_app(db, api_keys=keys, max_body_size=max_body_size)
        self.host = host
        """The address it listens on."""
        self.port = port
        """The port it listens on; the real one once started."""

    def __repr__(self) -> str:
        state = "running" if self._runner is not None else "stopped"
        return f"<Collector http://{self.host}:{self.port} {state}>"

    @property
    def app(self) -> web.Application:
        """The `aiohttp.web` application it serves; add middlewares before `start()`."""
        return self._app

    @property
    def base_url(self) -> str:
        """`http://host:port`, where `/healthz` and `/api/...` live."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The events endpoint, to pass as `FluxGate(endpoint=...)`."""
        return f"{self.base_url}/api/events"

    async def start(self) -> None:
        """Open the database and start listening.

        Raises:
            OSError: The address cannot be listened on (port in use, unknown host).
            sqlite3.Error: The database cannot be opened.
        """
        self._runner, self.port = await start_app(
            self._app, self.host, self.port, shutdown_timeout=SHUTDOWN_TIMEOUT
        )

    async def aclose(self) -> None:
        """Stop accepting, let requests in flight finish, close the database; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def serve(
    collector: Collector, *, on_ready: Callable[[Collector], object] | None = None
) -> None:
    """Run `collector` until SIGINT or SIGTERM, then shut it down cleanly.

    Requests in flight finish (for up to `SHUTDOWN_TIMEOUT` seconds) and the
    database is closed before this returns.

    Args:
        collector: A collector not yet started.
        on_ready: Called once it listens, e.g. to print its URL.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with collector:
            if on_ready is not None:
                on_ready(collector)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
