"""`fluxgate-async outbox`: what an outbox holds, and delivering it by hand."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._client import FluxGate
from .._outbox import DATABASE_NAME, OutboxSummary, open_database, summarise
from ._errors import CommandError

__all__ = ["run_outbox", "show_outbox"]


def _read(path: Path) -> OutboxSummary:
    if not (path / DATABASE_NAME).is_file():
        msg = f"no outbox at {path} (no {DATABASE_NAME} in it)"
        raise CommandError(msg)
    try:
        conn = open_database(path)
    except (OSError, sqlite3.Error) as exc:
        msg = f"cannot read the outbox at {path}: {exc}"
        raise CommandError(msg) from None
    try:
        return summarise(conn, path)
    finally:
        conn.close()


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _as_json(path: Path, summary: OutboxSummary) -> dict[str, Any]:
    return {
        "path": str(path),
        "events": summary.events,
        "bytes": summary.bytes,
        "oldest": (
            None
            if summary.oldest is None
            else datetime.fromtimestamp(summary.oldest, UTC).isoformat().replace("+00:00", "Z")
        ),
        "byReason": summary.by_reason,
        "liveClients": sum(summary.owners.values()),
        "endedClients": sum(not alive for alive in summary.owners.values()),
    }


def show_outbox(path: Path, fmt: str) -> None:
    """Print what the outbox at `path` holds: count, size, oldest, reasons, owners.

    Raises:
        CommandError: There is no outbox at `path`, or it cannot be read.
    """
    summary = _read(path)
    shown = _as_json(path, summary)
    if fmt == "json":
        print(json.dumps(shown))
        return
    if not summary.events:
        print(f"{path}: empty")
        return
    oldest = summary.oldest or time.time()
    print(
        f"{path}: {summary.events:,} event(s) pending, {summary.bytes:,} bytes, "
        f"oldest {shown['oldest']} ({_age(time.time() - oldest)} ago)"
    )
    print("last attempt:")
    for reason, count in summary.by_reason.items():
        print(f"  {reason}: {count:,}")
    live, ended = shown["liveClients"], shown["endedClients"]
    print(
        f"clients: {live} running (they deliver their own), "
        f"{ended} ended (their events go to the next client started on this path, or --flush)"
    )


async def run_outbox(
    path: Path,
    *,
    flush: bool,
    endpoint: str,
    api_key: str,
    timeout: float,
    max_retries: int,
    fmt: str,
) -> int:
    """Show the outbox; with `flush`, deliver what ended clients left in it first.

    Raises:
        CommandError: No outbox at `path`, it cannot be read, or a setting is invalid.
    """
    if not flush:
        await asyncio.to_thread(show_outbox, path, fmt)
        return 0
    await asyncio.to_thread(_read, path)  # says so if there is no outbox there
    try:
        client = FluxGate(
            api_key, endpoint=endpoint, timeout=timeout, max_retries=max_retries, outbox=path
        )
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    async with client:
        done = await client.flush()
    stats = client.stats
    print(
        f"delivered {stats.sent:,}, failed {stats.failed:,}, "
        f"expired {stats.dropped.get('expired', 0):,}, left {stats.kept:,}",
        file=sys.stderr,
    )
    await asyncio.to_thread(show_outbox, path, fmt)
    return 0 if done and not stats.failed and not stats.kept else 1
