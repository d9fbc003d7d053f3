"""Parse the command line and run one command, turning user mistakes into one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .. import __version__
from .._config import ENV_API_KEY, ENV_ENDPOINT
from ..collector._pricing import MissingExtraError
from ..collector._server import DEFAULT_DB, DEFAULT_HOST, DEFAULT_PORT
from ..collector._store import GROUPS
from ._demo import run_demo
from ._errors import CommandError
from ._outbox import run_outbox
from ._report import run_report
from ._send import run_send
from ._serve import run_serve

__all__ = ["main"]

PROG = "fluxgate-async"
ENV_API_KEYS = "FLUXGATE_API_KEYS"
"""Comma-separated API keys `serve` accepts, when no `--api-key` is given."""
ENV_DB = "FLUXGATE_DB"
"""The database `serve` and `report` use when no `--db` is given."""
LOCAL_ENDPOINT = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/api/events"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other error; `--help` shows the full usage.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        msg = f"must be a port number from 0 to 65535, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


_DB_HELP = (
    f"SQLite file, or postgresql://user@host:port/dbname (default: ${ENV_DB}, then {DEFAULT_DB})"
)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Record LLM usage to FluxGate, or to a local collector."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run a local collector", description="Run a local FluxGate collector."
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port (%(default)s)")
    serve.add_argument("--db", help=_DB_HELP)
    serve.add_argument(
        "--api-key",
        action="append",
        default=None,
        help=f"an API key to require; repeatable (default: ${ENV_API_KEYS}, comma-separated; "
        "none means any request is accepted, on loopback or with --allow-anonymous)",
    )
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve a --host other than loopback with no API key, letting anyone who can "
        "reach the port read and write events (refused without this flag)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="print a line for each request: method, path, status and milliseconds "
        "(written by a thread of its own, off the event loop)",
    )

    send = commands.add_parser(
        "send",
        help="send events through the client",
        description="Send one event from flags, or many from a JSON-lines file (- for stdin).",
    )
    send.add_argument(
        "--endpoint", help=f"where events go (default: ${ENV_ENDPOINT}, then {LOCAL_ENDPOINT})"
    )
    send.add_argument("--api-key", help=f"API key (default: ${ENV_API_KEY}, then 'local')")
    send.add_argument("--timeout", type=float, default=5.0, help="seconds per event (%(default)s)")
    send.add_argument(
        "--file",
        metavar="PATH",
        help="JSON lines, one event per line in the API's shape; - is stdin",
    )
    send.add_argument(
        "--concurrency", type=_positive_int, default=16, help="events in flight (%(default)s)"
    )
    event = send.add_argument_group("one event from flags")
    event.add_argument("--input-tokens", type=int, help="prompt tokens")
    event.add_argument("--output-tokens", type=int, help="completion tokens")
    event.add_argument("--cached-tokens", type=int, help="prompt tokens read from a cache")
    event.add_argument("--model", help="the model, e.g. gpt-4o")
    event.add_argument("--provider", help="the provider, e.g. openai")
    event.add_argument("--latency-ms", type=float, help="how long the call took")
    event.add_argument("--streamed", action="store_true", help="the answer was streamed")
    event.add_argument("--status", help="SUCCESS (default), ERROR, MAX_TOKENS, ...")
    event.add_argument("--error-message", help="why the call failed (status ERROR unless --status)")
    event.add_argument("--feature", help="the feature of your app the call was for")
    event.add_argument("--step", help="the step of a multi-step feature")
    event.add_argument("--user", help="the end user's id")
    event.add_argument("--session-id", help="the end user's session")
    event.add_argument("--conversation-id", help="the conversation the call belongs to")

    report = commands.add_parser(
        "report",
        help="calls, tokens and cost from a collector's database",
        description="Print calls, tokens and cost from a collector's database.",
    )
    report.add_argument("--db", help=_DB_HELP)
    report.add_argument("--by", choices=list(GROUPS), default="model", help="group (%(default)s)")
    report.add_argument("--since", help="only events from this ISO 8601 date or time on")
    report.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        help="table (the default), json or csv; with --events, json (JSON lines, the default) "
        "or csv",
    )
    report.add_argument(
        "--events",
        action="store_true",
        help="export every event, oldest first, instead of the summary",
    )

    outbox = commands.add_parser(
        "outbox",
        help="show or deliver the events waiting in an outbox",
        description="Show what an outbox directory holds (count, size, oldest, why the last "
        "attempt failed), or with --flush deliver what clients that ended left in it.",
    )
    outbox.add_argument("path", metavar="PATH", help="the outbox directory (FluxGate(outbox=...))")
    outbox.add_argument(
        "--flush",
        action="store_true",
        help="deliver the events of clients that ended, with their original keys, then show "
        "what is left; running clients' events stay theirs",
    )
    outbox.add_argument(
        "--endpoint",
        help=f"where --flush delivers (default: ${ENV_ENDPOINT}, then {LOCAL_ENDPOINT})",
    )
    outbox.add_argument("--api-key", help=f"API key for --flush (default: ${ENV_API_KEY})")
    outbox.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per attempt (%(default)s)"
    )
    outbox.add_argument(
        "--max-retries",
        type=int,
        default=10,
        help="further attempts per event after a connection error or a 408, 429 or 5xx "
        "(%(default)s)",
    )
    outbox.add_argument(
        "--format", choices=["table", "json"], default="table", help="text or one JSON object"
    )

    commands.add_parser(
        "demo",
        help="run the whole loop locally",
        description="Start a collector on a free port with a temporary database, record a "
        "simulated workload through the client, stop, and print the report.",
    )
    return parser


def _db(args: argparse.Namespace) -> str:
    db: str = args.db or os.environ.get(ENV_DB) or DEFAULT_DB
    return db


def _run(args: argparse.Namespace) -> int:
    # Each command imports its extra dependencies itself, so a missing one breaks only it.
    if args.command == "serve":
        keys = args.api_key
        if keys is None:
            keys = [k.strip() for k in os.environ.get(ENV_API_KEYS, "").split(",") if k.strip()]
        return run_serve(
            host=args.host,
            port=args.port,
            db=_db(args),
            api_keys=keys,
            allow_anonymous=args.allow_anonymous,
            access_log=args.access_log,
        )
    if args.command == "send":
        endpoint = args.endpoint or os.environ.get(ENV_ENDPOINT) or LOCAL_ENDPOINT
        api_key = args.api_key or os.environ.get(ENV_API_KEY) or "local"
        return asyncio.run(run_send(args, endpoint=endpoint, api_key=api_key))
    if args.command == "report":
        if args.events and args.format == "table":
            msg = "--events writes json (JSON lines) or csv, not a table"
            raise CommandError(msg)
        fmt = args.format or ("json" if args.events else "table")
        return run_report(db=_db(args), by=args.by, since=args.since, fmt=fmt, events=args.events)
    if args.command == "outbox":
        api_key = args.api_key or os.environ.get(ENV_API_KEY)
        if args.flush and not api_key:
            msg = f"--flush needs an API key: --api-key or ${ENV_API_KEY}"
            raise CommandError(msg)
        return asyncio.run(
            run_outbox(
                Path(args.path),
                flush=args.flush,
                endpoint=args.endpoint or os.environ.get(ENV_ENDPOINT) or LOCAL_ENDPOINT,
                api_key=api_key or "",
                timeout=args.timeout,
                max_retries=args.max_retries,
                fmt=args.format,
            )
        )
    return asyncio.run(run_demo())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `fluxgate-async` command line with `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 success, 1 failure, 2 usage mistake, 130 interrupted.
    """
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (CommandError, MissingExtraError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
