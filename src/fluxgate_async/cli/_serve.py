"""`fluxgate-async serve`: run the collector until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import logging.handlers
import queue
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from .._config import is_loopback
from ..collector import Collector, StoreUnavailableError, serve
from ..collector._store import describe_db
from ._errors import CommandError

__all__ = ["ACCESS_LOG", "exposure_warning", "run_serve"]

ACCESS_LOG = logging.getLogger("fluxgate_async.collector.access")
"""Where `serve --access-log` writes its line per request."""


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
    """Log one line per request to `ACCESS_LOG`: method, path, status and milliseconds taken."""
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
        ACCESS_LOG.info("%s %s %d %.1f ms", request.method, request.path_qs, status, took)


@contextlib.contextmanager
def access_log_to_stdout() -> Iterator[None]:
    """Write `ACCESS_LOG` to stdout from a thread of its own while in this block.

    The event loop only queues each record: a slow terminal or a full pipe holds
    up that thread, never a request. What is queued is written before this returns.
    """
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    to_queue = logging.handlers.QueueHandler(records)
    to_stdout = logging.StreamHandler(sys.stdout)
    listener = logging.handlers.QueueListener(records, to_stdout)
    ACCESS_LOG.addHandler(to_queue)
    ACCESS_LOG.setLevel(logging.INFO)
    ACCESS_LOG.propagate = False  # the lines are the output here, not log messages as well
    listener.start()
    try:
        yield
    finally:
        ACCESS_LOG.removeHandler(to_queue)
        listener.stop()


def run_serve(
    *,
    host: str,
    port: int,
    db: str,
    api_keys: list[str],
    allow_anonymous: bool = False,
    access_log: bool = False,
) -> int:
    """Serve until stopped, with a line per request if `access_log`; return the exit status.

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
    if access_log:
        collector.app.middlewares.append(log_request)

    def ready(running: Collector) -> None:
        auth = f"{len(api_keys)} API key(s) required" if api_keys else "no API key required"
        print(
            f"fluxgate-async collector listening on {running.base_url} "
            f"(database {describe_db(db)}, {auth}); Ctrl-C stops it",
            flush=True,
        )
        print(f"fluxgate-async dashboard: {running.base_url}/", flush=True)
        warning = exposure_warning(host, api_keys)
        if warning:
            print(warning, file=sys.stderr, flush=True)

    try:
        with access_log_to_stdout() if access_log else contextlib.nullcontext():
            asyncio.run(serve(collector, on_ready=ready))
    except StoreUnavailableError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        msg = f"cannot listen on {host}:{port}: {reason or exc}"
        raise CommandError(msg) from None
    print("fluxgate-async collector stopped; database closed", file=sys.stderr, flush=True)
    return 0
