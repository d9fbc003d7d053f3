"""What the logger shows: never a piece of the API key, never an unbounded value."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from fluxgate_async import DropReason, FluxGate
from fluxgate_async._logging import hide_secret, scrub, shorten
from fluxgate_async.testing import FakeCollector, Reply

KEY = "fg_live_9f8e7d6c5b4a39281706abcd"


def pieces(secret: str, size: int = 8) -> set[str]:
    """Every run of `size` characters of `secret`."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def shows_a_piece(text: str, secret: str = KEY) -> bool:
    """Whether `text` holds 8 or more consecutive characters of `secret`."""
    return any(piece in text for piece in pieces(secret))


async def test_a_key_cut_mid_way_in_an_echoed_request_is_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 401 body echoing the request head, cut at 200 bytes mid-key: no key piece logged."""
    head = "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    padding = "x" * (200 - len(head) - len("Authorization: Bearer ") - len("fg_live_") - 12)
    echo = f"{head}{padding}Authorization: Bearer {KEY}\r\n"
    assert echo[:200].endswith(KEY[:20])  # the cut leaves the prefix and 12 secret characters
    async with FakeCollector() as collector:
        collector.responder = lambda _: Reply(status=401, body=echo)
        caplog.set_level(logging.DEBUG, logger="fluxgate_async")
        async with FluxGate(KEY, endpoint=collector.url) as fg:
            assert await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}}) is None
            fg.record_event_nowait({"usage": {"inputTokens": 1, "outputTokens": 1}})
            assert await fg.flush(5)
    assert "HTTP 401" in caplog.text
    assert not shows_a_piece(caplog.text)


def test_any_eight_character_piece_is_masked_whole() -> None:
    """A 12-character piece anywhere in text is masked as one, shorter ones are left."""
    hide_secret(KEY)
    text = f"a{KEY[10:22]}b and {KEY[3:10]} and {KEY}"
    masked = scrub(text)
    assert masked == f"a***b and {KEY[3:10]} and ***"


def test_authorization_and_bearer_values_are_scrubbed_from_server_text() -> None:
    """Another token quoted by a server is masked too: the header's value, not its name."""
    assert scrub("Authorization: Bearer other-token-123, next") == "Authorization: Bearer ***, next"
    assert scrub('{"authorization": "Basic dXNlcjpwYXNz"}') == '{"authorization": "Basic ***"}'
    assert scrub("got bearer abc.def.ghi") == "got bearer ***"


async def test_reprs_stats_and_on_error_show_no_piece_of_the_key() -> None:
    """repr(client), repr(config), stats and on_error arguments never carry the key."""
    seen: list[Any] = []
    async with FakeCollector() as collector:
        collector.responder = lambda _: Reply(status=401, body=f"bad key {KEY}")
        async with FluxGate(
            KEY, endpoint=collector.url, on_error=lambda *args: seen.append(args)
        ) as fg:
            fg.record_event_nowait({"usage": {"inputTokens": 1, "outputTokens": 1}})
            assert await fg.flush(5)
            shown = [repr(fg), repr(fg.config), repr(fg.stats), repr(seen)]
    assert seen[0][1] == "http_401"
    assert not any(shows_a_piece(text) for text in shown)


async def test_a_huge_value_is_cut_in_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """A 5 MB invalid status is refused in a log line of a few hundred characters."""
    async with FluxGate(KEY, endpoint="http://127.0.0.1:9/api/events") as fg:
        huge = "S" * 5_000_000
        ev = {"usage": {"inputTokens": 1, "outputTokens": 1}, "status": huge}
        assert fg.record_event_nowait(ev) is False
        assert fg.stats.dropped == {DropReason.INVALID_EVENT: 1}
    line = next(r.getMessage() for r in caplog.records if "status must be" in r.getMessage())
    assert len(line) < 1000
    assert "(4,999,702 more characters)" in line


def test_shorten_says_how_much_it_left_out() -> None:
    """Text over the limit is cut with a count; shorter text is unchanged."""
    assert shorten("abc", 5) == "abc"
    assert shorten("abcdefgh", 5) == "abcde... (3 more characters)"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_client_collected_with_events_pending_warns_with_no_logging_configured() -> None:
    """Forgetting aclose() with events queued prints a WARNING on stderr, not only a hidden one."""
    result = _run(
        f"""
        from fluxgate_async import FluxGate
        fg = FluxGate({KEY!r}, endpoint="http://127.0.0.1:9/api/events")
        fg.record_event_nowait({{"usage": {{"inputTokens": 1, "outputTokens": 1}}}})
        del fg
        print("after")
        """
    )
    assert "FluxGate: client collected with 1 event(s) still pending, now lost" in result.stderr
    assert result.stdout == "after\n"


def test_a_client_alive_at_exit_with_events_queued_warns() -> None:
    """A module-level client whose events were never sent says so at exit."""
    result = _run(
        f"""
        from fluxgate_async import FluxGate
        fg = FluxGate({KEY!r}, endpoint="http://127.0.0.1:9/api/events")
        for n in range(3):
            fg.record_event_nowait({{"usage": {{"inputTokens": n, "outputTokens": 1}}}})
        """
    )
    assert "FluxGate: 3 event(s) still queued at exit were never sent" in result.stderr


async def test_a_closed_client_says_nothing_at_exit() -> None:
    """Nothing pending, nothing said: the exit warning is only for lost events."""
    result = _run(
        f"""
        import asyncio
        from fluxgate_async import FluxGate
        async def main():
            down = "http://127.0.0.1:9/api/events"
            async with FluxGate({KEY!r}, endpoint=down, max_retries=0) as fg:
                fg.record_event_nowait({{"usage": {{"inputTokens": 1, "outputTokens": 1}}}})
        asyncio.run(main())
        """
    )
    assert "at exit" not in result.stderr
    assert DropReason.SHUTDOWN not in result.stderr
