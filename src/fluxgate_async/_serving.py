"""Starting an `aiohttp.web` app on a host and port, for the servers this package ships.

`FakeCollector` and the local collector both listen on loopback, usually on port
0 (a free port chosen by the system), and need to know the port they got.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["start_app"]


async def start_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    handler_cancellation: bool = False,
) -> tuple[web.AppRunner, int]:
    """Serve `app` on `host:port` and return its runner and the port actually bound.

    Raises:
        OSError: The address cannot be listened on (port in use, unknown host);
            nothing is left running.
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        handler_cancellation=handler_cancellation,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound
