"""`fluxgate-async outbox PATH`: what an outbox holds, and `--flush` delivering it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fluxgate_async import AiEventUsage, FluxGate, LLMEvent
from fluxgate_async.cli import main
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY


def _leave(path: Path, collector: FakeCollector, count: int) -> None:
    """A client that records `count` events FluxGate does not answer, and closes out of time."""

    async def run() -> None:
        collector.responder = lambda _request: Reply(delay=30)
        fg = FluxGate(API_KEY, endpoint=collector.url, outbox=path, timeout=20)
        for n in range(count):
            fg.record_event_nowait(LLMEvent(AiEventUsage(n, 1)))
        await fg.aclose(timeout=0.2)
        collector.responder = None

    asyncio.run(run())


def test_shows_count_size_oldest_reasons_and_owners(
    threaded_collector: FakeCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table names the count, bytes, oldest, why the last attempt failed, ended clients."""
    _leave(tmp_path, threaded_collector, 3)
    assert main(["outbox", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}: 3 event(s) pending, " in out
    assert "oldest 20" in out
    assert "  not tried: " in out or "  timeout: " in out
    assert "clients: 0 running (they deliver their own), 1 ended" in out


def test_json_is_one_object(
    threaded_collector: FakeCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json prints the same figures as one JSON object."""
    _leave(tmp_path, threaded_collector, 2)
    assert main(["outbox", str(tmp_path), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["events"], shown["liveClients"], shown["endedClients"]) == (2, 0, 1)
    assert shown["bytes"] > 0
    assert shown["oldest"].endswith("Z")
    assert sum(shown["byReason"].values()) == 2


def test_flush_delivers_with_the_original_keys_and_leaves_it_empty(
    threaded_collector: FakeCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--flush sends what ended clients left, each stored once, then shows an empty outbox."""
    _leave(tmp_path, threaded_collector, 4)
    args = ["outbox", str(tmp_path), "--flush", "--endpoint", threaded_collector.url]
    assert main([*args, "--api-key", API_KEY]) == 0
    captured = capsys.readouterr()
    assert "delivered 4, failed 0, expired 0, left 0" in captured.err
    assert f"{tmp_path}: empty" in captured.out
    stored = sorted(event["usage"]["inputTokens"] for event in threaded_collector.events)
    assert stored == [0, 1, 2, 3]


def test_flush_that_cannot_deliver_everything_exits_1(
    threaded_collector: FakeCollector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event the API refuses for good is counted failed, and the exit status says so."""
    _leave(tmp_path, threaded_collector, 1)
    threaded_collector.reply_with(Reply(status=422))
    args = ["outbox", str(tmp_path), "--flush", "--endpoint", threaded_collector.url]
    assert main([*args, "--api-key", API_KEY]) == 1
    assert "delivered 0, failed 1, expired 0, left 0" in capsys.readouterr().err


def test_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No outbox at PATH, or --flush without a key: one line, exit status 1."""
    monkeypatch.delenv("FLUXGATE_API_KEY", raising=False)
    assert main(["outbox", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"fluxgate-async outbox: error: no outbox at {tmp_path} (no outbox.sqlite3 in it)\n"
    )
    assert main(["outbox", str(tmp_path), "--flush"]) == 1
    assert capsys.readouterr().err == (
        "fluxgate-async outbox: error: --flush needs an API key: --api-key or $FLUXGATE_API_KEY\n"
    )


def test_an_empty_outbox_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An outbox whose events were all delivered prints one line."""

    async def run() -> None:
        async with FluxGate(API_KEY, endpoint="http://127.0.0.1:9/api/events", outbox=tmp_path):
            pass

    asyncio.run(run())
    assert main(["outbox", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path}: empty\n"
