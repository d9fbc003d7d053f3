"""FluxGate.record_event against a real loopback server: the seed's cases and its fixes."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import gc
import json
import logging
import re
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses
from yarl import URL

import fluxgate_async
from fluxgate_async import (
    AiEventMetadata,
    AiEventUsage,
    CreateAiEventResponse,
    FluxGate,
    LLMEvent,
)
from fluxgate_async._config import DEFAULT_ENDPOINT
from fluxgate_async._serving import start_app
from fluxgate_async.testing import FakeCollector, Reply

from .conftest import API_KEY

SIMPLE = {"usage": {"inputTokens": 100, "outputTokens": 50}}


# --- construction (seed cases 1-4) -------------------------------------------------------


def test_missing_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key given and none in FLUXGATE_API_KEY raises at construction, naming both."""
    monkeypatch.delenv("FLUXGATE_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"requires an api_key.*FLUXGATE_API_KEY"):
        FluxGate()
    with pytest.raises(ValueError, match="requires an api_key"):
        FluxGate("")


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without options the endpoint is the public API and the timeout 5 seconds."""
    monkeypatch.delenv("FLUXGATE_ENDPOINT", raising=False)
    fg = FluxGate("k")
    assert fg.config.endpoint == DEFAULT_ENDPOINT == "https://fluxgate.app/api/events"
    assert fg.config.timeout == 5.0
    assert fg.config.max_retries == 2


def test_config_reports_every_setting_given(tmp_path: Path) -> None:
    """`config` holds each setting as it was passed, the hooks and the outbox included."""

    def before_send(event: LLMEvent) -> LLMEvent:
        return event

    def on_error(_event: object, _reason: str) -> None:
        pass

    fg = FluxGate(
        API_KEY,
        endpoint="https://example.com/e",
        timeout=2.5,
        debug=True,
        max_retries=4,
        max_queue_size=7,
        max_event_bytes=5000,
        concurrency=3,
        before_send=before_send,
        on_error=on_error,
        enabled=False,
        outbox=tmp_path,
        outbox_max_events=9,
        outbox_max_bytes=99_999,
        outbox_max_age=60,
    )
    config = fg.config
    assert config.api_key == API_KEY
    assert config.endpoint == "https://example.com/e"
    assert (config.timeout, config.debug, config.max_retries) == (2.5, True, 4)
    assert (config.max_queue_size, config.max_event_bytes, config.concurrency) == (7, 5000, 3)
    assert config.before_send is before_send
    assert config.on_error is on_error
    assert config.enabled is False
    assert config.outbox == str(tmp_path)
    assert (config.outbox_max_events, config.outbox_max_bytes, config.outbox_max_age) == (
        9,
        99_999,
        60.0,
    )


def test_custom_endpoint_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit endpoint wins; otherwise key and endpoint come from the environment."""
    monkeypatch.setenv("FLUXGATE_API_KEY", "env-key")
    monkeypatch.setenv("FLUXGATE_ENDPOINT", "https://env.example.com/api/events")
    assert FluxGate().config.endpoint == "https://env.example.com/api/events"
    assert FluxGate().config.api_key == "env-key"
    custom = FluxGate(endpoint="https://custom.example.com")
    assert custom.config.endpoint == "https://custom.example.com"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": float("nan")}, "timeout must be a positive number"),
        ({"timeout": "5"}, "timeout must be a positive number of seconds, got '5'"),
        ({"timeout": True}, "timeout must be a positive number of seconds, got True"),
        ({"max_retries": -1}, "max_retries must be a non-negative int"),
        ({"max_retries": True}, "max_retries must be a non-negative int"),
        ({"endpoint": "ftp://example.com"}, "endpoint must be an http:// or https:// URL"),
        ({"endpoint": "not a url"}, "endpoint must be an http"),
        ({"endpoint": "http://[::1"}, "endpoint is not a valid URL"),
    ],
)
def test_invalid_settings_name_the_setting(kwargs: dict[str, Any], message: str) -> None:
    """Out-of-range settings fail at construction with the setting's name."""
    with pytest.raises(ValueError, match=re.escape(message)):
        FluxGate("k", **kwargs)


def test_non_string_api_key_is_refused() -> None:
    """A key of the wrong type is a TypeError naming api_key."""
    with pytest.raises(TypeError) as raised:
        FluxGate(1234)  # type: ignore[arg-type]
    assert str(raised.value) == "api_key must be a str, got int"


def test_plain_http_to_another_host_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Plain http:// off this machine is a warning, without the key, credentials or query."""
    with caplog.at_level(logging.WARNING, logger="fluxgate_async"):
        FluxGate(API_KEY, endpoint="http://who:pw@collector.example.com/api/events?t=secret")
        FluxGate(API_KEY, endpoint="http://127.0.0.1:9/api/events")
        FluxGate(API_KEY, endpoint="http://localhost:9/api/events")
        FluxGate(API_KEY, endpoint="http://[::1]:9/api/events")
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage() == (
        "FluxGate endpoint http://collector.example.com/api/events is plain http:// to another "
        "host: the API key will cross the network unencrypted; use https://"
    )
    assert API_KEY not in caplog.text


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("localhost", False),
        ("LocalHost", False),
        ("api.localhost", False),
        ("Api.LOCALHOST", False),
        ("127.0.0.2", False),
        ("[::1]", False),
        ("notlocalhost", True),
        ("localhost.example.com", True),
        ("10.0.0.1", True),
        ("[::2]", True),
    ],
)
def test_plain_http_warns_unless_the_host_is_this_machine(
    caplog: pytest.LogCaptureFixture, host: str, warned: bool
) -> None:
    """Loopback addresses and `localhost` names (any case) keep the key on this machine."""
    with caplog.at_level(logging.WARNING, logger="fluxgate_async"):
        FluxGate(API_KEY, endpoint=f"http://{host}:9/api/events")
    assert bool(caplog.records) is warned


def test_repr_and_config_hide_the_key() -> None:
    """Neither the client's repr nor its config's shows the API key."""
    fg = FluxGate(API_KEY, endpoint="https://example.com/e")
    assert API_KEY not in repr(fg)
    assert API_KEY not in repr(fg.config)
    assert "api_key='***'" in repr(fg.config)
    assert repr(fg) == "<FluxGate endpoint='https://example.com/e' open>"


# --- what goes on the wire (seed cases 5, 6, 10, 11) -------------------------------------


async def test_posts_the_event_with_the_seed_headers(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """The event is POSTed as JSON with bearer auth, our User-Agent and an Idempotency-Key."""
    event = {
        "usage": {
            "inputTokens": 100,
            "outputTokens": 50,
            "model": "gpt-4",
            "provider": "openai",
            "latencyInMs": 1000,
        },
        "status": "SUCCESS",
        "metadata": {"feature": "chat", "user": "user-123"},
    }
    answer = await fg.record_event(event)
    assert isinstance(answer, CreateAiEventResponse)
    assert answer.id == "evt_1"
    assert answer.cost == 0.00042
    (request,) = collector.requests
    assert (request.method, request.path) == ("POST", "/api/events")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["User-Agent"] == f"fluxgate-async/{fluxgate_async.__version__}"
    assert re.fullmatch(r"[0-9a-f-]{36}", request.idempotency_key or "")
    assert request.json == event


async def test_status_defaults_to_success_without_touching_the_input(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """A missing status is sent as SUCCESS and the caller's mapping is left as it was."""
    event: dict[str, Any] = {"usage": {"inputTokens": 100, "outputTokens": 50}}
    await fg.record_event(event)
    assert collector.requests[0].json["status"] == "SUCCESS"
    assert "status" not in event


async def test_status_with_error_message_is_sent_as_an_object(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """Both status forms reach the server in the seed's shape."""
    collector.reply_with(
        Reply(body={"id": "123", "createdAt": "2026-05-05T00:00:00Z", "cost": None})
    )
    answer = await fg.record_event(
        LLMEvent(AiEventUsage(100, 0), status="ERROR", error_message="API call failed")
    )
    assert answer == CreateAiEventResponse("123", "2026-05-05T00:00:00Z", None)
    await fg.record_event(
        {"usage": {"inputTokens": 1, "outputTokens": 0}, "status": {"status": "BLOCKED"}}
    )
    assert collector.requests[0].json["status"] == {
        "status": "ERROR",
        "errorMessage": "API call failed",
    }
    assert collector.requests[1].json["status"] == "BLOCKED"


async def test_each_event_gets_its_own_idempotency_key(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """Two recordings of the same event are two events: two different keys."""
    event = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(feature="f"))
    await fg.record_event(event)
    await fg.record_event(event)
    keys = {r.idempotency_key for r in collector.requests}
    assert len(keys) == 2
    assert len(collector.events) == 2


# --- failures give None, within the deadline (seed cases 7-9, fixed) ----------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=500, body={"id": "event-123", "createdAt": "x", "cost": 0.001}),
        Reply(status=404, body={"error": "no such route"}),
        Reply(body="<html><body>Bad Gateway</body></html>"),
        Reply(body=b""),
        Reply(body="invalid json"),
        Reply(body=[{"id": "evt_1"}]),
        Reply(body={"createdAt": "2026-05-05T00:00:00Z", "cost": 0.1}),
        Reply(body={"id": 42, "createdAt": "x"}),
        Reply(body=b"\xff\xfe"),
        Reply(body="[" * 100_000),
        Reply(body=b" " * (64 * 1024 + 1)),
        Reply(status=302, headers={"Location": "http://127.0.0.1:1/"}),
    ],
    ids=[
        "500-with-json",
        "404",
        "html",
        "empty",
        "garbage",
        "json-array",
        "no-id",
        "int-id",
        "not-utf8",
        "deeply-nested",
        "oversized",
        "redirect",
    ],
)
async def test_unusable_answers_return_none_and_log_why(
    collector: FakeCollector, reply: Reply, caplog: pytest.LogCaptureFixture
) -> None:
    """Non-2xx, non-JSON, non-object or id-less answers give None and a logged reason."""
    collector.reply_with(reply)
    async with FluxGate(API_KEY, endpoint=collector.url, max_retries=0) as fg:
        with caplog.at_level(logging.WARNING, logger="fluxgate_async"):
            assert await fg.record_event(SIMPLE) is None
    assert "not recorded" in caplog.text
    assert len(collector.requests) == 1


async def test_a_server_that_never_answers_times_out_on_time(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A hanging server gives None within `timeout` plus a small margin."""
    collector.responder = lambda _: Reply(delay=30)
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=0.3) as fg:
        started = time.monotonic()
        assert await fg.record_event(SIMPLE) is None
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.8
    assert "no answer within 0.3s" in caplog.text


async def test_unreachable_server_gives_none_after_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused connection is retried, then reported as None with the reason."""
    async with FluxGate(API_KEY, endpoint="http://127.0.0.1:9/api/events", timeout=2) as fg:
        assert await fg.record_event(SIMPLE) is None
    assert "after 3 attempts" in caplog.text
    assert API_KEY not in caplog.text


async def test_invalid_mapping_gives_none_with_the_field_named(
    fg: FluxGate, collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad input is not sent; the log says which field is wrong."""
    assert await fg.record_event({"usage": {"inputTokens": -5, "outputTokens": 1}}) is None
    assert await fg.record_event({"usage": {"inputTokens": 1}}) is None
    assert await fg.record_event("not an event") is None  # type: ignore[arg-type]
    assert collector.requests == []
    assert "invalid event" in caplog.text
    assert "usage.inputTokens: must be a non-negative int, got -5" in caplog.text
    assert "usage.outputTokens: required field missing" in caplog.text


async def test_unexpected_errors_are_contained(
    fg: FluxGate,
    collector: FakeCollector,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a bug below record_event comes out as None and a log line, never an exception."""

    def buggy(*_args: object) -> None:
        raise RuntimeError(f"boom with {API_KEY}")

    monkeypatch.setattr("fluxgate_async._client.check_event", buggy)
    assert await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}}) is None
    assert "unexpected error" in caplog.text
    assert "boom with ***" in caplog.text
    assert API_KEY not in caplog.text
    assert collector.requests == []


async def test_a_mapping_that_raises_while_read_is_an_invalid_event(
    fg: FluxGate, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's mapping that raises when read is refused as invalid, with its message."""

    class Exploding(dict[str, Any]):
        def keys(self) -> Any:
            raise RuntimeError("boom")

    assert await fg.record_event(Exploding(usage={})) is None
    assert fg.record_event_nowait(Exploding(usage={})) is False
    assert fg.stats.dropped == {"invalid_event": 1}
    assert "invalid event, not recorded: boom" in caplog.text


# --- retries ------------------------------------------------------------------------------


async def test_retry_then_success_keeps_one_idempotency_key(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """A 503 then a dropped connection then success: three attempts, one key, one event."""
    collector.reply_with(Reply(status=503, retry_after=0), Reply(drop=True))
    answer = await fg.record_event(SIMPLE)
    assert answer is not None
    assert len(collector.requests) == 3
    assert len({r.idempotency_key for r in collector.requests}) == 1
    assert len(collector.events) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried(
    fg: FluxGate, collector: FakeCollector, status: int
) -> None:
    """Each of the transient statuses gets another attempt."""
    collector.reply_with(Reply(status=status, retry_after=0))
    assert await fg.record_event(SIMPLE) is not None
    assert [r.idempotency_key for r in collector.requests].count(
        collector.requests[0].idempotency_key
    ) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_other_client_errors_are_not_retried(
    fg: FluxGate, collector: FakeCollector, status: int
) -> None:
    """A 4xx other than 408/429 means the request itself is wrong: one attempt only."""
    collector.reply_with(Reply(status=status))
    assert await fg.record_event(SIMPLE) is None
    assert len(collector.requests) == 1


async def test_max_retries_bounds_the_attempts(collector: FakeCollector) -> None:
    """With max_retries=1 a persistently failing server sees exactly two attempts."""
    collector.responder = lambda _: Reply(status=500, retry_after=0)
    async with FluxGate(API_KEY, endpoint=collector.url, max_retries=1) as fg:
        assert await fg.record_event(SIMPLE) is None
    assert len(collector.requests) == 2


async def test_retry_after_seconds_is_honoured(fg: FluxGate, collector: FakeCollector) -> None:
    """The second attempt waits at least the Retry-After the server asked for."""
    collector.reply_with(Reply(status=429, retry_after=0.4))
    assert await fg.record_event(SIMPLE) is not None
    first, second = collector.requests
    assert second.received_at - first.received_at >= 0.4


async def test_retry_after_http_date_is_honoured(collector: FakeCollector) -> None:
    """An HTTP-date Retry-After is waited for too."""
    when = datetime.now(UTC) + timedelta(seconds=2)
    collector.reply_with(
        Reply(status=503, retry_after=email.utils.format_datetime(when, usegmt=True))
    )
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=4) as fg:
        assert await fg.record_event(SIMPLE) is not None
    first, second = collector.requests
    # HTTP dates have whole seconds, so the wait is between one and two seconds.
    assert second.received_at - first.received_at >= 0.9


async def test_retry_after_past_the_deadline_gives_up_at_once(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Waiting longer than the time left is pointless: None now, not at the deadline."""
    collector.reply_with(Reply(status=503, retry_after=30))
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=1.5) as fg:
        started = time.monotonic()
        assert await fg.record_event(SIMPLE) is None
        assert time.monotonic() - started < 0.5
    assert "would pass the deadline" in caplog.text
    assert len(collector.requests) == 1


# --- cancellation ---------------------------------------------------------------------------


async def test_cancellation_propagates_while_waiting_for_the_server(
    collector: FakeCollector,
) -> None:
    """Cancelling the caller cancels the call: CancelledError is never swallowed."""
    collector.responder = lambda _: Reply(delay=30)
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=10) as fg:
        task = asyncio.create_task(fg.record_event(SIMPLE))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancellation_propagates_during_backoff(collector: FakeCollector) -> None:
    """A caller cancelled while the client sleeps before a retry is cancelled too."""
    collector.reply_with(Reply(status=503, retry_after=5))
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=10) as fg:
        task = asyncio.create_task(fg.record_event(SIMPLE))
        await asyncio.sleep(0.3)
        assert len(collector.requests) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- logging (seed case 12) and secrets -----------------------------------------------------


async def test_debug_logs_each_send_and_answer_without_the_key(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """debug=True logs initialisation, the body sent and the answer; never the key."""
    collector.reply_with(Reply(status=401, body=f"invalid key {API_KEY}"))
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url, debug=True) as fg:
            await fg.record_event(SIMPLE)
            await fg.record_event(SIMPLE)
    text = caplog.text
    assert "FluxGate initialised" in text
    assert "sending event" in text
    assert '"inputTokens":100' in text
    assert "recorded: CreateAiEventResponse" in text
    assert "HTTP 401" in text
    assert API_KEY not in text


def test_the_debug_line_at_construction_names_the_settings_in_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, a new client says where it sends, its timeout and its retries, once."""
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        FluxGate(API_KEY, endpoint="https://example.com/e", timeout=2.5, max_retries=4)
    assert _messages(caplog, logging.DEBUG) == [
        "FluxGate initialised: endpoint=https://example.com/e timeout=2.5s max_retries=4"
    ]


def test_debug_output_reaches_stderr_without_any_logging_setup() -> None:
    """In a program that configured no logging, debug=True still prints to stderr."""
    code = f"""
import asyncio
from fluxgate_async import FluxGate
async def main():
    async with FluxGate({API_KEY!r}, endpoint="http://127.0.0.1:9/e", debug=True, timeout=0.5,
                        max_retries=0) as fg:
        print(await fg.record_event({{"usage": {{"inputTokens": 1, "outputTokens": 2}}}}))
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "None"
    assert "[fluxgate] DEBUG FluxGate initialised" in done.stderr
    assert "[fluxgate] DEBUG FluxGate: sending event" in done.stderr
    assert "not recorded" in done.stderr
    assert API_KEY not in done.stderr


# --- lifecycle --------------------------------------------------------------------------------


async def test_closed_is_false_until_aclose_then_true(collector: FakeCollector) -> None:
    """`closed` is a bool: False for a new client, True once `aclose()` has been called."""
    fg = FluxGate(API_KEY, endpoint=collector.url)
    assert fg.closed is False
    await fg.aclose()
    assert fg.closed is True


async def test_aclose_twice_and_use_after_close(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing is idempotent; recording afterwards gives None with a warning; re-entering fails."""
    fg = FluxGate(API_KEY, endpoint=collector.url)
    assert await fg.record_event(SIMPLE) is not None
    await fg.aclose()
    await fg.aclose()
    assert fg.closed
    assert repr(fg).endswith("closed>")
    assert await fg.record_event(SIMPLE) is None
    assert "closed client" in caplog.text
    with pytest.raises(RuntimeError) as raised:
        async with fg:
            pass
    assert str(raised.value) == "this FluxGate client is closed; create a new one"


async def test_one_session_is_reused_for_keep_alive(collector: FakeCollector) -> None:
    """Successive events reuse the pooled connection rather than reconnecting."""
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        for _ in range(3):
            await fg.record_event(SIMPLE)
    peers = {r.peer for r in collector.requests}
    assert len(collector.requests) == 3
    assert len(peers) == 1


async def test_unclosed_client_warns_when_collected(collector: FakeCollector) -> None:
    """Dropping a client with an open session emits ResourceWarning."""
    fg = FluxGate(API_KEY, endpoint=collector.url)
    await fg.record_event(SIMPLE)
    with pytest.warns(ResourceWarning, match="never closed"):
        del fg  # nothing else refers to it: collected here
    await asyncio.sleep(0.05)  # let the loop close the orphaned session


def test_half_built_client_does_not_crash_when_collected() -> None:
    """A constructor that raised leaves nothing that fails or warns in __del__."""
    with pytest.raises(ValueError, match="api_key"):
        FluxGate("")
    gc.collect()


_ADVICE = "use `async with FluxGate(...)` or `await fg.aclose()` before the event loop ends"


@contextlib.contextmanager
def _all_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning given in the block, none turned into an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


async def test_a_client_collected_with_its_session_open_says_it_was_never_closed(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """One ResourceWarning from the client's own line, with the advice; no log line."""
    fg = FluxGate(API_KEY, endpoint=collector.url)
    assert await fg.record_event(SIMPLE) is not None
    client = id(fg)
    with _all_warnings() as caught:
        del fg  # nothing else refers to it: collected here
    [warning] = caught
    assert warning.category is ResourceWarning
    assert str(warning.message) == f"FluxGate client was never closed: {_ADVICE}"
    assert id(warning.source) == client  # tracemalloc shows where the client was made
    assert Path(warning.filename).name == "_client.py"
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    await asyncio.sleep(0.05)  # let the loop close the orphaned session


async def test_a_client_collected_with_events_pending_says_how_many_are_lost(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Three events still queued or in flight: the count in a ResourceWarning and a WARNING."""
    collector.responder = lambda _: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, concurrency=1, timeout=20)
    for _ in range(3):
        assert fg.record_event_nowait(SIMPLE)
    await asyncio.sleep(0.1)
    with _all_warnings() as caught:
        del fg  # nothing else refers to it: collected here
    [warning] = caught
    lost = f"client collected with 3 event(s) still pending, now lost: {_ADVICE}"
    assert warning.category is ResourceWarning
    assert str(warning.message) == f"FluxGate {lost}"
    assert _messages(caplog, logging.WARNING) == [f"FluxGate: {lost}"]
    await asyncio.sleep(0.05)  # the abandoned senders unwind


async def test_a_client_collected_with_events_in_its_outbox_says_where_they_wait(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Events kept on disk are not lost: an INFO line names the outbox, no WARNING."""
    collector.responder = lambda _: Reply(delay=30)
    fg = FluxGate(API_KEY, endpoint=collector.url, outbox=tmp_path, timeout=20)
    for _ in range(2):
        assert fg.record_event_nowait(SIMPLE)
    outbox = fg._pipeline._outbox  # type: ignore[union-attr]
    assert outbox is not None
    await asyncio.wrap_future(outbox.sync())
    with caplog.at_level(logging.INFO, logger="fluxgate_async"), _all_warnings() as caught:
        del fg  # nothing else refers to it: collected here
    [warning] = caught
    assert warning.category is ResourceWarning
    assert str(warning.message) == f"FluxGate client was never closed: {_ADVICE}"
    assert _messages(caplog, logging.INFO) == [
        "FluxGate: client collected with 2 event(s) still pending, kept in the outbox"
        f" at {tmp_path} for the next start"
    ]
    assert _messages(caplog, logging.WARNING) == []
    assert outbox._thread is not None
    await asyncio.to_thread(outbox._thread.join, 10)  # closed by the collection


def _report_to(app: list[object], event: object, reason: str) -> None:
    app.append((event, reason))


async def test_a_client_collected_in_a_reference_cycle_counts_the_events_still_to_be_built(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Collected by the cycle collector, the events of tracked calls not yet built count as lost."""
    app: list[object] = []
    fg = FluxGate(
        API_KEY,
        endpoint="http://127.0.0.1:9/api/events",
        on_error=functools.partial(_report_to, app),
    )
    app.append(fg)  # the app holds the client, whose callback holds the app
    fg._record_soon(lambda: LLMEvent(AiEventUsage(5, 0)))
    fg._record_soon(lambda: LLMEvent(AiEventUsage(6, 0)))
    with _all_warnings() as caught:
        del fg, app  # only the cycle refers to them now
        gc.collect()
    lost = f"client collected with 2 event(s) still pending, now lost: {_ADVICE}"
    assert [str(warning.message) for warning in caught] == [f"FluxGate {lost}"]
    assert _messages(caplog, logging.WARNING) == [f"FluxGate: {lost}"]


async def test_a_closed_or_unused_client_is_collected_without_a_word(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Closed, or never used (no connection opened): no warning and no log line."""
    async with FluxGate(API_KEY, endpoint=collector.url) as closed:
        assert await closed.record_event(SIMPLE) is not None
    unused = FluxGate(API_KEY, endpoint=collector.url)
    with _all_warnings() as caught:
        del closed, unused  # nothing else refers to them: collected here
    assert caught == []
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


async def test_borrowed_session_is_used_and_left_open(collector: FakeCollector) -> None:
    """A session passed in carries the requests and is still open after aclose."""
    async with aiohttp.ClientSession(headers={"X-Owner": "host-app"}) as session:
        async with FluxGate(API_KEY, endpoint=collector.url, session=session) as fg:
            assert await fg.record_event(SIMPLE) is not None
        (request,) = collector.requests
        assert request.headers["X-Owner"] == "host-app"  # sent through the borrowed session
        assert not session.closed
        async with session.get(collector.url) as resp:  # still usable by its owner
            assert resp.status == 405


def test_client_works_across_two_event_loops(threaded_collector: FakeCollector) -> None:
    """The same client records from two asyncio.run calls in a row, with no warnings."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)
    first = asyncio.run(fg.record_event(SIMPLE))
    second = asyncio.run(fg.record_event(SIMPLE))
    assert first is not None
    assert second is not None
    assert first.id != second.id
    asyncio.run(fg.aclose())
    assert len(threaded_collector.events) == 2


def test_loop_shutdown_closes_a_forgotten_session(threaded_collector: FakeCollector) -> None:
    """A client never closed still has its sockets closed when asyncio.run ends its loop."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)
    asyncio.run(fg.record_event(SIMPLE))
    assert fg._transport is not None
    assert not fg._transport.has_open_session
    del fg
    gc.collect()  # no ResourceWarning: nothing is left open


# --- cases only a mock can produce -------------------------------------------------------------


async def test_truncated_answer_is_retried_with_the_same_key(collector: FakeCollector) -> None:
    """A body cut mid-way (ClientPayloadError) counts as a connection failure and is retried."""
    # aioresponses fails the first attempt; the retry passes through to the real server.
    with aioresponses(passthrough_unmatched=True) as mocked:
        mocked.post(collector.url, exception=aiohttp.ClientPayloadError("truncated"))
        async with FluxGate(API_KEY, endpoint=collector.url) as fg:
            answer = await fg.record_event(SIMPLE)
        attempts = mocked.requests[("POST", URL(collector.url))]
    assert len(attempts) == 2
    failed = attempts[0]
    assert answer is not None
    assert answer.id == "evt_1"
    (delivered,) = collector.requests
    assert failed.kwargs["headers"]["Idempotency-Key"] == delivered.idempotency_key
    assert json.loads(failed.kwargs["data"]) == delivered.json


async def test_os_level_errors_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    """An OSError from the socket layer gives None and a logged reason."""
    url = "https://fluxgate.test/api/events"
    with aioresponses() as mocked:
        mocked.post(url, exception=OSError("network is unreachable"), repeat=True)
        async with FluxGate(API_KEY, endpoint=url, max_retries=0) as fg:
            assert await fg.record_event(SIMPLE) is None
    assert "network is unreachable" in caplog.text


async def test_unserialisable_extra_gives_none_naming_the_field(
    fg: FluxGate, collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """An extra value JSON cannot hold is reported, not sent, not raised."""
    bad = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra={"blob": b"\x00"}))
    assert await fg.record_event(bad) is None
    assert "metadata.blob: bytes is not JSON; pass a str" in caplog.text
    assert collector.requests == []


async def test_a_failing_session_close_does_not_break_shutdown(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while closing the HTTP session is one WARNING with its cause, never raised."""
    fg = FluxGate(API_KEY, endpoint=collector.url)
    await fg.record_event(SIMPLE)
    assert fg._transport is not None
    real_close = fg._transport.aclose

    async def failing_close() -> None:
        await real_close()
        raise OSError("socket already gone")

    monkeypatch.setattr(fg._transport, "aclose", failing_close)
    await fg.aclose()
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == "FluxGate: error while closing the HTTP session"
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "socket already gone"  # the cause, with its traceback


@pytest.mark.parametrize(
    ("chunks", "recorded"),
    [([b'{"id": "evt_c", ', b'"createdAt": "t", "cost": 1}'], True), ([b" " * 40_000] * 2, False)],
    ids=["small", "oversized"],
)
async def test_chunked_answers_are_read_up_to_the_limit(
    chunks: list[bytes], recorded: bool
) -> None:
    """An answer without Content-Length is read chunk by chunk and cut off past 64 KiB."""

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/api/events", chunked)
    runner, port = await start_app(app, "127.0.0.1", 0, shutdown_timeout=1.0)
    try:
        async with FluxGate(API_KEY, endpoint=f"http://127.0.0.1:{port}/api/events") as fg:
            answer = await fg.record_event(SIMPLE)
    finally:
        await runner.cleanup()
    assert (answer is not None) is recorded


async def test_tracebacks_in_debug_logs_never_show_the_key(
    fg: FluxGate, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception that quotes the key, logged with its traceback, is masked too."""

    def buggy(*_args: object) -> None:
        raise RuntimeError(f"headers were {{'Authorization': 'Bearer {API_KEY}'}}")

    monkeypatch.setattr("fluxgate_async._client.check_event", buggy)
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        assert await fg.record_event({"usage": {"inputTokens": 1, "outputTokens": 1}}) is None
    assert "unexpected error details" in caplog.text
    assert "Bearer ***" in caplog.text
    assert "Traceback" in caplog.text
    assert API_KEY not in caplog.text


@pytest.mark.parametrize("key", ["sk-abc\n", "sk abc", "sk-\x00abc"])
def test_api_key_with_whitespace_or_control_characters_is_refused(key: str) -> None:
    """A key that cannot travel in a header is a configuration error that does not quote it."""
    message = "api_key must not contain spaces, newlines or other control characters"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FluxGate(key)


async def test_short_test_keys_do_not_garble_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """A one-letter test key is not masked out of every word of every message."""
    FluxGate("k")
    with caplog.at_level(logging.WARNING, logger="fluxgate_async"):
        logging.getLogger("fluxgate_async").warning("keep this working")
    assert "keep this working" in caplog.text


async def test_the_closed_client_warning_is_for_a_closed_client_only(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Sent, invalid and disabled calls say nothing of closing; a call after aclose says it once."""
    closed_warning = "FluxGate: record_event called on a closed client; event not recorded"

    def closed_warnings() -> int:
        return [r.getMessage() for r in caplog.records].count(closed_warning)

    async with FluxGate(API_KEY, endpoint=collector.url, enabled=False) as off:
        assert await off.record_event(SIMPLE) is None
    fg = FluxGate(API_KEY, endpoint=collector.url)
    assert await fg.record_event(SIMPLE) is not None
    assert await fg.record_event({"usage": {"inputTokens": -1, "outputTokens": 1}}) is None
    assert closed_warnings() == 0
    await fg.aclose()
    assert await fg.record_event(SIMPLE) is None
    assert closed_warnings() == 1


async def test_repr_says_closed_and_disabled() -> None:
    """The repr shows both states, exactly, for enabled and disabled clients."""
    on = FluxGate(API_KEY, endpoint="https://example.com/e")
    off = FluxGate(API_KEY, endpoint="https://example.com/e", enabled=False)
    assert repr(on) == "<FluxGate endpoint='https://example.com/e' open>"
    assert repr(off) == "<FluxGate endpoint='https://example.com/e' open, disabled>"
    await on.aclose()
    await off.aclose()
    assert repr(on) == "<FluxGate endpoint='https://example.com/e' closed>"
    assert repr(off) == "<FluxGate endpoint='https://example.com/e' closed, disabled>"


def test_a_session_closed_under_a_running_loop_is_replaced(
    threaded_collector: FakeCollector,
) -> None:
    """A loop whose async generators were shut down, then used again, gets a fresh session."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)
    transport = fg._transport
    assert transport is not None

    def session_open() -> bool:
        return transport.has_open_session

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(fg.record_event(SIMPLE)) is not None
        loop.run_until_complete(loop.shutdown_asyncgens())  # closes the client's session
        assert not session_open()
        # asyncio warns that the new session's closing hook comes after its shutdown.
        with pytest.warns(ResourceWarning, match="after loop.shutdown_asyncgens"):
            assert loop.run_until_complete(fg.record_event(SIMPLE)) is not None
        assert session_open()
        loop.run_until_complete(fg.aclose())  # which closes it
        assert not session_open()
    finally:
        loop.close()
    assert len(threaded_collector.events) == 2


def test_ended_event_loops_are_not_kept_alive(threaded_collector: FakeCollector) -> None:
    """A client used from one asyncio.run after another lets the ended loops be collected."""
    fg = FluxGate(API_KEY, endpoint=threaded_collector.url)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def record() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert await fg.record_event(SIMPLE) is not None

    for _ in range(3):
        asyncio.run(record())
    gc.collect()
    assert [ref() is None for ref in loops] == [True, True, False]
    asyncio.run(fg.aclose())


# --- a key given by the caller ------------------------------------------------------------


async def test_a_caller_given_key_is_sent_and_a_repeat_is_stored_once(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """The same request reported twice under its own key, queued or awaited, is stored once."""
    assert fg.record_event_nowait(SIMPLE, idempotency_key="span-0af7651916cd43dd")
    assert fg.record_event_nowait(SIMPLE, idempotency_key="span-0af7651916cd43dd")
    assert await fg.flush(5)
    answer = await fg.record_event(SIMPLE, idempotency_key="span-0af7651916cd43dd")

    keys = [request.idempotency_key for request in collector.requests]
    assert keys == ["span-0af7651916cd43dd"] * 3
    assert len(collector.events) == 1
    assert answer is not None
    assert fg.stats.sent == 2


@pytest.mark.parametrize(
    "key",
    ["", " lead", "tab\tin", "caf\u00e9", "x" * 256, 42],
    # Plain ids: mutmut hands node ids back to pytest, which cannot match escaped ones.
    ids=["empty", "leading-space", "tab", "non-ascii", "too-long", "not-a-str"],
)
async def test_an_unusable_caller_key_refuses_the_event_naming_it(
    collector: FakeCollector, key: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A key that cannot go in a header is refused, counted and reported, and nothing is sent."""
    refused: list[tuple[object, str]] = []
    async with FluxGate(
        API_KEY,
        endpoint=collector.url,
        on_error=lambda event, reason: refused.append((event, reason)),
    ) as fg:
        assert not fg.record_event_nowait(SIMPLE, idempotency_key=key)
        assert await fg.record_event(SIMPLE, idempotency_key=key) is None
        assert fg.stats.dropped == {"invalid_event": 1}
    assert refused == [(SIMPLE, "invalid_event")]
    assert collector.requests == []
    assert "idempotency_key must be 1 to 255 visible ASCII characters" in caplog.text


@pytest.mark.parametrize("key", ["k", "x" * 255], ids=["one-character", "255-characters"])
async def test_caller_keys_at_the_length_limits_are_sent(
    fg: FluxGate, collector: FakeCollector, key: str
) -> None:
    """A key of 1 or of 255 characters is within the limits: sent as given, queued or awaited."""
    assert fg.record_event_nowait(SIMPLE, idempotency_key=key)
    assert await fg.flush(5)
    assert await fg.record_event(SIMPLE, idempotency_key=key) is not None
    assert [request.idempotency_key for request in collector.requests] == [key, key]
    assert fg.stats.dropped == {}


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("", "''"),
        ("caf\u00e9", "'caf\u00e9'"),
        ("x" * 254 + " ", repr("x" * 254 + " ")),
        ("x" * 256, "str"),
        (42, "int"),
    ],
    ids=["empty", "non-ascii", "255-with-a-space", "too-long", "not-a-str"],
)
async def test_the_unusable_key_warning_shows_the_key_or_only_its_type(
    fg: FluxGate, key: Any, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The WARNING quotes a short string key; a longer one or another type only by type name."""
    assert await fg.record_event(SIMPLE, idempotency_key=key) is None
    assert _messages(caplog, logging.WARNING) == [
        "FluxGate: idempotency_key must be 1 to 255 visible ASCII characters,"
        f" got {shown}; event not recorded"
    ]


async def test_a_caller_key_from_another_thread_is_kept(
    fg: FluxGate, collector: FakeCollector
) -> None:
    """A tracing callback on another thread hands its span's key over with the event."""
    await asyncio.to_thread(fg.record_event_nowait, SIMPLE, idempotency_key="otel-thread-key")
    assert await fg.flush(5)
    assert [request.idempotency_key for request in collector.requests] == ["otel-thread-key"]


# --- what record_event logs, line by line ---------------------------------------------------


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def _debug_cause(caplog: pytest.LogCaptureFixture, message: str) -> BaseException:
    """The exception whose traceback the one DEBUG line saying `message` carries."""
    [record] = [r for r in caplog.records if r.getMessage() == message]
    assert record.levelno == logging.DEBUG
    assert record.exc_info is not None
    assert record.exc_info[1] is not None
    return record.exc_info[1]


async def test_a_refused_event_is_one_warning_with_its_key_and_the_answer(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 is not retried: 'event <key> not recorded: HTTP 401: <body>', once."""
    collector.reply_with(Reply(status=401, body="unknown key"))
    async with FluxGate(API_KEY, endpoint=collector.url) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: HTTP 401: 'unknown key'"
    ]


async def test_retries_given_up_say_how_many_attempts_were_made(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Three 503s with max_retries=2: the WARNING ends '(after 3 attempts)'."""
    collector.reply_with(*[Reply(status=503, body="busy", retry_after=0.01)] * 3)
    async with FluxGate(API_KEY, endpoint=collector.url, max_retries=2) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert len(collector.requests) == 3
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: HTTP 503: 'busy' (after 3 attempts)"
    ]


async def test_a_retry_that_would_pass_the_deadline_is_not_waited_for(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry-After 5 s within a 1 s timeout: given up at once, and the WARNING says why."""
    collector.reply_with(Reply(status=503, body="busy", retry_after=5))
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=1) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert len(collector.requests) == 1
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: HTTP 503: 'busy'; "
        "retry in 5.00s would pass the deadline"
    ]


async def test_no_answer_within_the_timeout_is_one_warning_with_the_timeout(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A hanging server: 'event <key> not recorded: no answer within 0.3s'."""
    collector.responder = lambda _: Reply(delay=30)
    async with FluxGate(API_KEY, endpoint=collector.url, timeout=0.3) as fg:
        assert await fg.record_event(SIMPLE) is None
    key = collector.requests[0].idempotency_key
    assert _messages(caplog, logging.WARNING) == [
        f"FluxGate: event {key} not recorded: no answer within 0.3s"
    ]


async def test_debug_names_the_key_the_endpoint_the_body_and_the_answer(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG: 'sending event <key> to <endpoint>: <body>', then '<key> recorded: <answer>'."""
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url) as fg:
            answer = await fg.record_event(SIMPLE)
    assert answer is not None
    request = collector.requests[0]
    key = request.idempotency_key
    debug = _messages(caplog, logging.DEBUG)
    assert f"FluxGate: sending event {key} to {collector.url}: {request.body!r}" in debug
    assert f"FluxGate: event {key} recorded: {answer}" in debug


async def test_debug_names_each_retry_with_its_key_the_cause_and_the_delay(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, before each retry: 'event <key>: <what went wrong>; retrying in <delay>s'."""
    collector.reply_with(Reply(status=503, body="busy", retry_after=0.01))
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url) as fg:
            assert await fg.record_event(SIMPLE) is not None
    key = collector.requests[0].idempotency_key
    retries = [m for m in _messages(caplog, logging.DEBUG) if "retrying" in m]
    assert retries == [f"FluxGate: event {key}: HTTP 503: 'busy'; retrying in 0.01s"]


def _raise_key_error(_event: LLMEvent) -> LLMEvent | None:
    raise KeyError("metadata")


def _return_text(_event: LLMEvent) -> LLMEvent | None:
    return "not an event"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("event", "settings", "warning"),
    [
        (
            {"usage": {"inputTokens": 1}},
            {},
            "invalid event, not recorded: usage.outputTokens: required field missing",
        ),
        (
            LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra={"blob": b"x"})),
            {},
            "invalid event, not recorded: metadata.blob: bytes is not JSON; pass a str",
        ),
        (
            LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(feature="f" * 2000)),
            {"max_event_bytes": 1000},
            "event too large, not recorded: event of 2,089 bytes is over max_event_bytes"
            " (1,000); its biggest field is metadata.feature (2,002 bytes)",
        ),
        (
            SIMPLE,
            {"before_send": _return_text},
            "before_send must return an LLMEvent or None, got str; event dropped",
        ),
        (SIMPLE, {"before_send": _raise_key_error}, "before_send raised; event dropped"),
    ],
    ids=["invalid-mapping", "not-json", "too-large", "before-send-junk", "before-send-raised"],
)
async def test_an_event_refused_before_sending_is_one_warning_saying_why(
    collector: FakeCollector,
    caplog: pytest.LogCaptureFixture,
    event: Any,
    settings: dict[str, Any],
    warning: str,
) -> None:
    """Queued or awaited, an event refused before it is sent gives one WARNING each, saying why."""
    async with FluxGate(API_KEY, endpoint=collector.url, **settings) as fg:
        assert not fg.record_event_nowait(event)
        assert await fg.record_event(event) is None
    assert _messages(caplog, logging.WARNING) == [f"FluxGate: {warning}"] * 2
    assert collector.requests == []


async def test_a_raising_before_send_is_logged_with_its_traceback(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """The WARNING for a before_send that raised carries the exception, to find the bug by."""
    async with FluxGate(API_KEY, endpoint=collector.url, before_send=_raise_key_error) as fg:
        assert await fg.record_event(SIMPLE) is None
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    assert "KeyError: 'metadata'" in caplog.text


async def test_an_event_dropped_by_before_send_is_a_debug_line_only(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """before_send returning None drops on purpose: a DEBUG line each, no WARNING."""
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        async with FluxGate(API_KEY, endpoint=collector.url, before_send=lambda _e: None) as fg:
            assert not fg.record_event_nowait(SIMPLE)
            assert await fg.record_event(SIMPLE) is None
    dropped = [m for m in _messages(caplog, logging.DEBUG) if "before_send" in m]
    assert dropped == ["FluxGate: before_send dropped an event"] * 2
    assert _messages(caplog, logging.WARNING) == []


async def test_a_bug_below_record_event_is_an_error_line_and_details_at_debug(
    fg: FluxGate, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception: one ERROR with its message; its traceback only at DEBUG."""

    def buggy(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("fluxgate_async._client.check_event", buggy)
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        assert await fg.record_event(SIMPLE) is None
    assert _messages(caplog, logging.ERROR) == [
        "FluxGate: unexpected error, event not recorded: boom"
    ]
    assert (
        repr(_debug_cause(caplog, "FluxGate: unexpected error details")) == "RuntimeError('boom')"
    )
    assert re.search(r"RuntimeError: boom", caplog.text)


async def test_a_bug_below_record_event_nowait_is_an_error_line_and_details_at_debug(
    collector: FakeCollector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while queueing: False, one ERROR, its traceback at DEBUG, on_error told."""

    def buggy(*_args: object) -> bool:
        raise RuntimeError("boom")

    lost: list[tuple[object, str]] = []
    fg = FluxGate(
        API_KEY, endpoint=collector.url, on_error=lambda event, reason: lost.append((event, reason))
    )
    monkeypatch.setattr("fluxgate_async._delivery.Pipeline.submit", buggy)
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        assert fg.record_event_nowait(SIMPLE) is False
    await fg.aclose()
    assert lost == [(SIMPLE, "internal_error")]
    assert _messages(caplog, logging.ERROR) == [
        "FluxGate: unexpected error, event not queued: boom"
    ]
    assert (
        repr(_debug_cause(caplog, "FluxGate: unexpected error details")) == "RuntimeError('boom')"
    )
    assert fg.stats.dropped == {"internal_error": 1}


async def test_a_bug_that_also_stops_the_count_still_returns_false(
    fg: FluxGate, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queueing and counting both broken: False, the ERROR, and at DEBUG why it went uncounted."""

    def buggy(*_args: object) -> bool:
        raise RuntimeError("boom")

    def uncountable(*_args: object) -> None:
        raise RuntimeError("count broken")

    monkeypatch.setattr("fluxgate_async._delivery.Pipeline.submit", buggy)
    monkeypatch.setattr("fluxgate_async._delivery.Pipeline.drop", uncountable)
    with caplog.at_level(logging.DEBUG, logger="fluxgate_async"):
        assert fg.record_event_nowait(SIMPLE) is False
    assert _messages(caplog, logging.ERROR) == [
        "FluxGate: unexpected error, event not queued: boom"
    ]
    cause = _debug_cause(caplog, "FluxGate: could not count the event")
    assert repr(cause) == "RuntimeError('count broken')"


async def test_a_value_changed_after_the_event_was_built_is_refused_naming_the_field(
    fg: FluxGate, collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A list filled with bytes after the LLMEvent was made: None, and one WARNING naming it."""
    items: list[object] = []
    bad = LLMEvent(AiEventUsage(1, 0), metadata=AiEventMetadata(extra={"items": items}))
    items.append(b"late")
    assert await fg.record_event(bad) is None
    assert _messages(caplog, logging.WARNING) == [
        "FluxGate: invalid event, not recorded: metadata.items[0]: bytes is not JSON; pass a str"
    ]
    assert collector.requests == []
