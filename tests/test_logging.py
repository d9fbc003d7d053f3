"""What the logger shows: never a piece of the API key, never an unbounded value."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fluxgate_async import DropReason, FluxGate, _logging
from fluxgate_async._logging import _SecretFilter, hide_secret, scrub, shorten
from fluxgate_async.testing import FakeCollector, Reply


@pytest.fixture
def key() -> str:
    """A key no earlier test registered, so each test exercises the masking from scratch."""
    return f"fg_live_{secrets.token_hex(12)}"


def pieces(secret: str, size: int = 8) -> set[str]:
    """Every run of `size` characters of `secret`."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def shows_a_piece(text: str, secret: str) -> bool:
    """Whether `text` holds 8 or more consecutive characters of `secret`."""
    return any(piece in text for piece in pieces(secret))


async def test_a_key_cut_mid_way_in_an_echoed_request_is_masked(
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 401 body echoing the request head, cut at 200 bytes mid-key: no key piece logged."""
    head = "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    padding = "x" * (200 - len(head) - len("Authorization: Bearer ") - len("fg_live_") - 12)
    echo = f"{head}{padding}Authorization: Bearer {key}\r\n"
    assert echo[:200].endswith(key[:20])  # the cut leaves the prefix and 12 secret characters
    async with FakeCollector() as collector:
        collector.responder = lambda _: Reply(status=401, body=echo)
        caplog.set_level(logging.DEBUG, logger="fluxgate_async")
        async with FluxGate(key, endpoint=collector.url) as fg:
            assert await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}}) is None
            fg.record_event_nowait({"usage": {"inputTokens": 1, "outputTokens": 1}})
            assert await fg.flush(5)
    assert "HTTP 401" in caplog.text
    assert not shows_a_piece(caplog.text, key)


def test_any_eight_character_piece_is_masked_whole(key: str) -> None:
    """A 12-character piece anywhere in text is masked as one, shorter ones are left."""
    hide_secret(key)
    # "<" and ">" are not hex: they can never extend the piece into a longer one.
    text = f"<{key[10:22]}> and {key[3:10]} and {key}"
    masked = scrub(text)
    assert masked == f"<***> and {key[3:10]} and ***"


def test_the_first_and_last_eight_characters_are_masked_alone(key: str) -> None:
    """Each end of the key is a piece of its own; seven characters are not."""
    hide_secret(key)
    assert scrub(f"<{key[:8]}> <{key[-8:]}>") == "<***> <***>"
    assert scrub(f"<{key[:7]}> <{key[-7:]}>") == f"<{key[:7]}> <{key[-7:]}>"


def test_two_pieces_side_by_side_are_masked_as_one(key: str) -> None:
    """Pieces that touch are one masked run, so the mask does not tell where a piece ends."""
    hide_secret(key)
    assert scrub(f"[{key[:8]}{key[-8:]}]") == "[***]"


def test_an_eight_character_secret_is_masked_and_a_shorter_one_is_not() -> None:
    """Eight characters is the shortest secret masked; shorter ones would garble words."""
    eight, seven = secrets.token_hex(4), secrets.token_hex(4)[:7]
    hide_secret(eight)
    hide_secret(seven)
    assert scrub(f"{eight} {seven}") == f"*** {seven}"


def test_a_filter_with_no_secret_yet_masks_only_credentials() -> None:
    """Before any key is registered only bearer tokens are masked; the first key then is."""
    fresh = _SecretFilter()
    assert fresh.scrub("plain text, bearer abcdef") == "plain text, bearer ***"
    fresh.add("0123456789")
    assert fresh.scrub("plain 0123456789 text") == "plain *** text"


def bare_logger(monkeypatch: pytest.MonkeyPatch) -> logging.Logger:
    """The package logger as in an application that configured no logging at all.

    Called inside the test: pytest attaches its capture handlers when the test starts.
    """
    logger = logging.getLogger("fluxgate_async")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(_logging, "_debug_handler", None)
    return logger


def test_debug_prints_tagged_lines_on_stderr_when_nothing_is_configured(
    key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """debug=True adds one stderr handler, once, whose lines say they come from FluxGate."""
    logger = bare_logger(monkeypatch)
    FluxGate(key, endpoint="http://127.0.0.1:9/api/events", debug=True)
    FluxGate(key, endpoint="http://127.0.0.1:9/api/events", debug=True)
    logger.debug("hello %s", "there")
    assert capsys.readouterr().err.splitlines()[-1] == "[fluxgate] DEBUG hello there"
    assert len(logger.handlers) == 1


def test_debug_keeps_the_applications_own_handlers(
    key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An app that configured logging gets DEBUG records in its handler, not a second copy."""
    logger = bare_logger(monkeypatch)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    FluxGate(key, endpoint="http://127.0.0.1:9/api/events", debug=True)
    logger.debug("hello")
    assert logger.handlers == [handler]
    assert seen[-1] == "hello"
    assert capsys.readouterr().err == ""


def test_authorization_and_bearer_values_are_scrubbed_from_server_text() -> None:
    """Another token quoted by a server is masked too: the header's value, not its name."""
    assert scrub("Authorization: Bearer other-token-123, next") == "Authorization: Bearer ***, next"
    assert scrub('{"authorization": "Basic dXNlcjpwYXNz"}') == '{"authorization": "Basic ***"}'
    assert scrub("got bearer abc.def.ghi") == "got bearer ***"


async def test_reprs_stats_and_on_error_show_no_piece_of_the_key(key: str) -> None:
    """repr(client), repr(config), stats and on_error arguments never carry the key."""
    seen: list[Any] = []
    async with FakeCollector() as collector:
        collector.responder = lambda _: Reply(status=401, body=f"bad key {key}")
        async with FluxGate(
            key, endpoint=collector.url, on_error=lambda *args: seen.append(args)
        ) as fg:
            fg.record_event_nowait({"usage": {"inputTokens": 1, "outputTokens": 1}})
            assert await fg.flush(5)
            shown = [repr(fg), repr(fg.config), repr(fg.stats), repr(seen)]
    assert seen[0][1] == "http_401"
    assert not any(shows_a_piece(text, key) for text in shown)


async def test_a_huge_value_is_cut_in_the_log_line(
    key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5 MB invalid status is refused in a log line of a few hundred characters."""
    async with FluxGate(key, endpoint="http://127.0.0.1:9/api/events") as fg:
        huge = "S" * 5_000_000
        ev = {"usage": {"inputTokens": 1, "outputTokens": 1}, "status": huge}
        assert fg.record_event_nowait(ev) is False
        assert fg.stats.dropped == {DropReason.INVALID_EVENT: 1}
    line = next(r.getMessage() for r in caplog.records if "status must be" in r.getMessage())
    assert len(line) < 1000
    assert "(4,999,702 more characters)" in line


def test_shorten_says_how_much_it_left_out() -> None:
    """Text over the limit is cut with a count; text up to the limit is unchanged."""
    assert shorten("abc", 5) == "abc"
    assert shorten("abcde", 5) == "abcde"
    assert shorten("abcdefgh", 5) == "abcde... (3 more characters)"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_client_collected_with_events_pending_warns_with_no_logging_configured(key: str) -> None:
    """Forgetting aclose() with events queued prints a WARNING on stderr, not only a hidden one."""
    result = _run(
        f"""
        from fluxgate_async import FluxGate
        fg = FluxGate({key!r}, endpoint="http://127.0.0.1:9/api/events")
        fg.record_event_nowait({{"usage": {{"inputTokens": 1, "outputTokens": 1}}}})
        del fg
        print("after")
        """
    )
    assert "FluxGate: client collected with 1 event(s) still pending, now lost" in result.stderr
    assert result.stdout == "after\n"


def test_a_client_alive_at_exit_with_events_queued_warns(key: str) -> None:
    """A module-level client whose events were never sent says so at exit."""
    result = _run(
        f"""
        from fluxgate_async import FluxGate
        fg = FluxGate({key!r}, endpoint="http://127.0.0.1:9/api/events")
        for n in range(3):
            fg.record_event_nowait({{"usage": {{"inputTokens": n, "outputTokens": 1}}}})
        """
    )
    assert [line for line in result.stderr.splitlines() if "at exit" in line] == [
        "FluxGate: 3 event(s) still queued at exit were never sent: await fg.aclose() "
        "(or use `async with FluxGate(...)`) before the program ends"
    ]


def test_a_client_alive_at_exit_with_nothing_queued_says_nothing(key: str) -> None:
    """A client never closed but with nothing left to send: no word at exit."""
    result = _run(
        f"""
        from fluxgate_async import FluxGate
        fg = FluxGate({key!r}, endpoint="http://127.0.0.1:9/api/events")
        """
    )
    assert "at exit" not in result.stderr


def test_a_client_alive_at_exit_with_an_outbox_says_where_its_events_are_kept(
    key: str, tmp_path: Path
) -> None:
    """With an outbox, events queued at exit are kept on disk: an INFO line says so, no WARNING."""
    result = _run(
        f"""
        import logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        from fluxgate_async import FluxGate
        fg = FluxGate({key!r}, endpoint="http://127.0.0.1:9/api/events", outbox={str(tmp_path)!r})
        for n in range(3):
            fg.record_event_nowait({{"usage": {{"inputTokens": n, "outputTokens": 1}}}})
        """
    )
    assert [line for line in result.stderr.splitlines() if "at exit" in line] == [
        f"INFO FluxGate: 3 event(s) still queued at exit are kept in the outbox at {tmp_path}; "
        "the next client started on it delivers them"
    ]
    assert "WARNING" not in result.stderr


async def test_a_closed_client_says_nothing_at_exit(key: str) -> None:
    """Nothing pending, nothing said: the exit warning is only for lost events."""
    result = _run(
        f"""
        import asyncio
        from fluxgate_async import FluxGate
        async def main():
            down = "http://127.0.0.1:9/api/events"
            async with FluxGate({key!r}, endpoint=down, max_retries=0) as fg:
                fg.record_event_nowait({{"usage": {{"inputTokens": 1, "outputTokens": 1}}}})
        asyncio.run(main())
        """
    )
    assert "at exit" not in result.stderr
    assert DropReason.SHUTDOWN not in result.stderr
