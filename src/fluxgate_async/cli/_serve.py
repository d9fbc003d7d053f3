"""`fluxgate-async serve`: run the collector until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import sys

from ..collector import Collector, serve
from ._errors import CommandError

__all__ = ["run_serve"]


def run_serve(*, host: str, port: int, db: str, api_keys: list[str]) -> int:
    """Serve until stopped; return the exit status.

    Raises:
        CommandError: The database cannot be opened or the address listened on.
    """
    collector = Collector(db, host=host, port=port, api_keys=api_keys)

    def ready(running: Collector) -> None:
        auth = f"{len(api_keys)} API key(s) required" if api_keys else "no API key required"
        print(
            f"fluxgate-async collector listening on {running.base_url} "
            f"(database {db}, {auth}); Ctrl-C stops it",
            flush=True,
        )

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
