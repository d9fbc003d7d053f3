"""`fluxgate-async send`: events from flags or JSON lines, through the real client."""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import re
import sys
from pathlib import Path
from typing import IO, Any

from .._client import FluxGate
from .._models import CreateAiEventResponse
from .._wire import answer_to_json, to_event
from ..collector._pricing import require
from ._errors import CommandError

__all__ = ["run_send"]

_CHUNK_BYTES = 64 * 1024
_EVENT_PREFIX = re.compile(r"^event \S+ not recorded: ")
_line: contextvars.ContextVar[int] = contextvars.ContextVar("fluxgate_send_line", default=0)
_REFUSED = re.compile(r"Cannot connect to host|ClientConnectorError|Connection refused")
_NOT_FOUND = re.compile(r"\bHTTP 404\b")


def explain(reason: str, endpoint: str) -> str:
    """The client's reason for a failure, in the words of someone running the command."""
    if _REFUSED.search(reason):
        return (
            f"nothing answers at {endpoint}: start a collector with `fluxgate-async serve`, "
            "or give --endpoint"
        )
    if _NOT_FOUND.search(reason):
        return (
            f"{endpoint} answered 404 Not Found: the events endpoint ends in /api/events, "
            "e.g. http://127.0.0.1:8787/api/events"
        )
    return reason


class _Reasons(logging.Handler):
    """Keeps the client's last warning for each line, so failures can say why."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(logging.WARNING)
        self.by_line: dict[int, str] = {}
        self._endpoint = endpoint

    def emit(self, record: logging.LogRecord) -> None:
        # The client logs inside the task sending the line, so the context says which.
        message = record.getMessage().removeprefix("FluxGate: ")
        self.by_line[_line.get()] = explain(_EVENT_PREFIX.sub("", message), self._endpoint)


def _event_from_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    usage = {
        "inputTokens": args.input_tokens,
        "outputTokens": args.output_tokens,
        "cachedTokens": args.cached_tokens,
        "model": args.model,
        "provider": args.provider,
        "latencyInMs": args.latency_ms,
        "isStreamed": True if args.streamed else None,
    }
    metadata = {
        "feature": args.feature,
        "step": args.step,
        "user": args.user,
        "sessionId": args.session_id,
        "conversationId": args.conversation_id,
    }
    if all(value is None for value in (*usage.values(), *metadata.values())):
        return None
    event: dict[str, Any] = {"usage": {k: v for k, v in usage.items() if v is not None}}
    if args.error_message is not None:
        event["status"] = {"status": args.status or "ERROR", "errorMessage": args.error_message}
    elif args.status is not None:
        event["status"] = args.status
    metadata = {k: v for k, v in metadata.items() if v is not None}
    if metadata:
        event["metadata"] = metadata
    return event


def _answer_json(answer: CreateAiEventResponse, line: int | None) -> str:
    out: dict[str, Any] = {} if line is None else {"line": line}
    answer_json = answer_to_json(answer)
    # The answer's `status` says how the event was priced, not how the call went: an ERROR
    # event answered UNKNOWN_MODEL is recorded but not priced. Named for what it is here.
    if "status" in answer_json:
        answer_json["pricing"] = answer_json.pop("status")
    return json.dumps({**out, **answer_json})


async def run_send(args: argparse.Namespace, *, endpoint: str, api_key: str) -> int:
    """Send what the flags or `--file` say; print each answer and a summary of failures.

    Raises:
        CommandError: No event was given, or the file cannot be read, or a setting is invalid.
    """
    single = _event_from_flags(args)
    if (single is None) == (args.file is None):
        msg = "give one event with --input-tokens/--output-tokens/..., or --file PATH (- for stdin)"
        raise CommandError(msg)
    try:
        client = FluxGate(api_key, endpoint=endpoint, timeout=args.timeout)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    reasons = _Reasons(endpoint)
    logger = logging.getLogger("fluxgate_async")
    logger.addHandler(reasons)
    try:
        async with client:
            if single is not None:
                return await _send_one(client, single, reasons)
            return await _send_lines(client, args.file, args.concurrency, reasons)
    finally:
        logger.removeHandler(reasons)


async def _send_one(client: FluxGate, event: dict[str, Any], reasons: _Reasons) -> int:
    try:
        to_event(event)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"invalid event: {exc}") from None
    answer = await client.record_event(event)
    if answer is None:
        raise CommandError(f"event not recorded: {reasons.by_line.get(0, 'unknown reason')}")
    print(_answer_json(answer, None))
    return 0


def _open(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    try:
        return Path(path).open(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise CommandError(msg) from None


def _count_lines(path: str) -> int | None:
    # Only a regular file can be read twice; counting a pipe would consume it.
    if path == "-" or not Path(path).is_file():
        return None
    with Path(path).open("rb") as handle:
        return sum(1 for line in handle if line.strip())


async def _send_lines(client: FluxGate, path: str, concurrency: int, reasons: _Reasons) -> int:
    rich_progress = require("rich.progress")
    source = _open(path)
    total = _count_lines(path)
    lines: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize=concurrency * 4)
    failures: dict[int, str] = {}
    sent = 0
    progress = rich_progress.Progress(
        *rich_progress.Progress.get_default_columns(),
        rich_progress.MofNCompleteColumn(),
        console=require("rich.console").Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("sending", total=total)

    async def read() -> None:
        number = 0
        try:
            # A chunk of lines at a time, off the loop: stdin may be a slow pipe.
            while chunk := await asyncio.to_thread(source.readlines, _CHUNK_BYTES):
                for text in chunk:
                    number += 1
                    if text.strip():
                        await lines.put((number, text))
        finally:
            for _ in range(concurrency):
                await lines.put(None)

    async def send() -> None:
        nonlocal sent
        while (item := await lines.get()) is not None:
            number, text = item
            _line.set(number)
            sent += 1
            event, problem = _parse_line(text)
            answer = None if problem else await client.record_event(event)
            if answer is None:
                failures[number] = problem or reasons.by_line.get(number, "not recorded")
            else:
                print(_answer_json(answer, number), flush=False)
            progress.advance(task)

    try:
        with progress:
            await asyncio.gather(read(), *(send() for _ in range(concurrency)))
    except UnicodeDecodeError as exc:
        raise CommandError(f"cannot read {path}: not UTF-8 text ({exc.reason})") from None
    finally:
        if source is not sys.stdin:
            source.close()
    sys.stdout.flush()
    return _summarise(sent, failures)


def _parse_line(text: str) -> tuple[Any, str]:
    """The line's event, or why there is none."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON: {exc}"
    try:
        return to_event(value), ""
    except (TypeError, ValueError) as exc:
        return None, f"invalid event: {exc}"


def _summarise(sent: int, failures: dict[int, str]) -> int:
    recorded = sent - len(failures)
    events = "event" if sent == 1 else "events"
    print(f"sent {sent} {events}: {recorded} recorded, {len(failures)} failed", file=sys.stderr)
    for number in sorted(failures)[:20]:
        print(f"  line {number}: {failures[number]}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
    return 1 if failures else 0
