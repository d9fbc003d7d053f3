"""`fluxgate-async serve`: run the collector until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .._config import is_loopback
from ..collector import Collector, serve
from ._errors import CommandError

__all__ = ["exposure_warning", "run_serve"]


def exposure_warning(host: str, api_keys: list[str]) -> str:
    """The warning to print when `host` is reachable from other machines with no key; or ``."""
    if api_keys or is_loopback(host):
        return ""
    return (
        f"warning: {host} is reachable from other machines and no --api-key is set: "
        "anyone who can reach this port can write and read events"
    )


@web.middleware
async def log_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Print one line per request: method, path, status and milliseconds taken."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        took = (time.perf_counter() - started) * 1000
        print(f"{request.method} {request.path_qs} {status} {took:.1f} ms", flush=True)


def run_serve(
    *,
    host: str,
    port: int,
    db: str,
    api_keys: list[str],
    allow_anonymous: bool = False,
    quiet: bool = False,
) -> int:
    """Serve until stopped, printing a line per request unless `quiet`; return the exit status.

    Raises:
        CommandError: An API key is empty, `host` is beyond loopback with no key and no
            `--allow-anonymous`, the database cannot be opened, or the address cannot be
            listened on.
    """
    if exposure_warning(host, api_keys) and not allow_anonymous:
        msg = (
            f"refusing to serve {host} without an API key: anyone who can reach it could "
            "read and write events; give --api-key KEY, or --allow-anonymous to accept that"
        )
        raise CommandError(msg)
    try:
        collector = Collector(
            db, host=host, port=port, api_keys=api_keys, allow_anonymous=allow_anonymous
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if not quiet:
        collector.app.middlewares.append(log_request)

    def ready(running: Collector) -> None:
        auth = f"{len(api_keys)} API key(s) required" if api_keys else "no API key required"
        print(
            f"fluxgate-async collector listening on {running.base_url} "
            f"(database {db}, {auth}); Ctrl-C stops it",
            flush=True,
        )
        warning = exposure_warning(host, api_keys)
        if warning:
            print(warning, file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(collector, on_ready=ready))
    except sqlite3.Error as exc:
        msg = f"cannot open database {db!r}: {exc}"
        raise CommandError(msg) from None
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        msg = f"cannot listen on {host}:{port}: {reason or exc}"
        raise CommandError(msg) from None
    print("fluxgate-async collector stopped; database closed", file=sys.stderr, flush=True)
    return 0
