"""End to end: the real client against `fluxgate-async serve` running in its own process."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from fluxgate_async import AiEventMetadata, AiEventUsage, FluxGate, LLMEvent

from .conftest import CollectorProcess, run_cli


def _event(n: int = 0, **usage: Any) -> LLMEvent:
    return LLMEvent(
        AiEventUsage(
            input_tokens=100 + n,
            output_tokens=50,
            **{"model": "gpt-4o", "provider": "openai"} | usage,
        ),
        metadata=AiEventMetadata(feature="chat", user=f"user-{n % 3}"),
    )


async def _post(
    url: str, body: bytes | io.BytesIO, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers or {}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_client_records_priced_and_unpriced_events(served: CollectorProcess) -> None:
    """A known model is priced; an unknown one is stored with cost null and status UNKNOWN_MODEL."""
    async with FluxGate("any-key", endpoint=served.url) as fg:
        priced = await fg.record_event(_event())
        unpriced = await fg.record_event(_event(model="acme-internal-7b", provider="acme"))
    assert priced is not None
    assert priced.status == "SUCCESS"
    assert priced.cost == pytest.approx((100 * 2.5 + 50 * 10) / 1_000_000)
    assert priced.id.startswith("evt_")
    assert priced.created_at
    assert unpriced is not None
    assert (unpriced.cost, unpriced.status) == (None, "UNKNOWN_MODEL")
    stored = served.get("/api/events")["events"]
    assert [e["id"] for e in stored] == [priced.id, unpriced.id]
    assert stored[0]["event"]["usage"] == {
        "inputTokens": 100,
        "outputTokens": 50,
        "model": "gpt-4o",
        "provider": "openai",
    }


async def test_acknowledged_events_survive_kill_9_and_restart(database: str) -> None:
    """Every event the collector acknowledged is in the database after SIGKILL and a restart."""
    first = CollectorProcess(database)
    first.start()
    async with FluxGate("k", endpoint=first.url) as fg:
        answers = await asyncio.gather(*(fg.record_event(_event(n)) for n in range(200)))
    first.kill()
    acknowledged = {a.id for a in answers if a is not None}
    assert len(acknowledged) == 200
    second = CollectorProcess(database)
    second.start()
    try:
        stored = second.get("/api/events?limit=1000")["events"]
        assert {e["id"] for e in stored} == acknowledged
        async with FluxGate("k", endpoint=second.url) as fg:
            assert await fg.record_event(_event()) is not None
        assert len(second.get("/api/events?limit=1000")["events"]) == 201
    finally:
        second.stop()


async def test_repeated_idempotency_key_returns_first_answer(served: CollectorProcess) -> None:
    """A retried request gets the first answer again and stores nothing new."""
    collector_process = served
    headers = {"Idempotency-Key": "retry-me", "Content-Type": "application/json"}
    body = json.dumps({"usage": {"inputTokens": 10, "outputTokens": 5, "model": "gpt-4o"}})
    first = await _post(collector_process.url, body.encode(), headers)
    second = await _post(collector_process.url, body.encode(), headers)
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    assert len(collector_process.get("/api/events")["events"]) == 1


async def test_api_keys_are_enforced(db: Path) -> None:
    """With keys configured, a missing or wrong Bearer key gets 401 and the right one 200."""
    proc = CollectorProcess(db, "--api-key", "key-one", "--api-key", "key-two")
    proc.start()
    try:
        body = b'{"usage": {"inputTokens": 1, "outputTokens": 1}}'
        status, answer = await _post(proc.url, body)
        assert status == 401
        assert "API key" in answer["error"]
        assert (await _post(proc.url, body, {"Authorization": "Bearer key-three"}))[0] == 401
        assert (await _post(proc.url, body, {"Authorization": "Basic key-two"}))[0] == 401
        async with FluxGate("wrong-key", endpoint=proc.url, max_retries=0) as fg:
            assert await fg.record_event(_event()) is None
        async with FluxGate("key-two", endpoint=proc.url) as fg:
            assert await fg.record_event(_event()) is not None
        assert len(proc.get("/api/events", token="key-one")["events"]) == 1
    finally:
        code, out, _ = proc.stop()
    assert code == 0
    assert "key-one" not in out
    assert "2 API key(s) required" in out
    assert f"fluxgate-async dashboard: {proc.base_url}/\n" in out


async def test_api_keys_from_the_environment(db: Path) -> None:
    """FLUXGATE_API_KEYS, comma-separated, configures the keys when no --api-key is given."""
    proc = CollectorProcess(db, env={"FLUXGATE_API_KEYS": "env-one, env-two"})
    proc.start()
    try:
        async with FluxGate("env-two", endpoint=proc.url) as fg:
            assert await fg.record_event(_event()) is not None
        async with FluxGate("other", endpoint=proc.url, max_retries=0) as fg:
            assert await fg.record_event(_event()) is None
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def refusing_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector process for all the bad-body cases: none of them may store anything."""
    proc = CollectorProcess(tmp_path_factory.mktemp("bad-bodies") / "events.sqlite")
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"\x00\xffnot json at all", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"usage": {"inputTokens": 1e999, "outputTokens": 1}}', "usage.inputTokens"),
        (b'{"usage": {"inputTokens": ' + b"9" * 5000 + b', "outputTokens": 1}}', "not valid JSON"),
        (
            b'{"usage": {"inputTokens": 10000000000000000000000, "outputTokens": 1}}',
            "usage.inputTokens",
        ),
        (b'{"usage": {"inputTokens": 1, "outputTokens": 1, "latencyInMs": NaN}}', "not valid JSON"),
        (b'{"usage": {"inputTokens": "100", "outputTokens": 1}}', "usage.inputTokens"),
        (b'{"usage": {"inputTokens": 1, "outputTokens": -1}}', "usage.outputTokens"),
        (b'{"usage": {"inputTokens": 1, "outputTokens": 1}, "status": "MAYBE"}', "status"),
        (b'{"usage": {"inputTokens": 1, "outputTokens": 1}, "colour": "red"}', "colour"),
        (b'{"usage": {"inputTokens": 1, "outputTokens": 1, "tokenz": 3}}', "tokenz"),
        (
            b'{"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": {"user": 7}}',
            "metadata.user",
        ),
        (b'{"metadata": {}}', "usage"),
        (b"[1, 2, 3]", "list"),
    ],
)
async def test_bad_bodies_get_400_naming_the_problem(
    refusing_collector: CollectorProcess, body: bytes, names: str
) -> None:
    """Garbage, deep nesting, huge numbers and wrong types get 400, say why, and store nothing."""
    status, answer = await _post(refusing_collector.url, body)
    assert status == 400
    assert names in answer["error"]
    assert refusing_collector.get("/api/events")["events"] == []
    assert refusing_collector.get("/healthz") == {"status": "ok"}


async def test_a_10_mb_body_gets_413(collector_process: CollectorProcess) -> None:
    """A body over the size limit is refused with 413 and the collector keeps serving."""
    padding = "x" * (10 * 1024 * 1024)
    body = json.dumps({"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": {"p": padding}})
    status, answer = await _post(collector_process.url, io.BytesIO(body.encode()))
    assert status == 413
    assert "over 1048576 bytes" in answer["error"]
    assert (await _post(collector_process.url, b"{}"))[0] == 400
    assert collector_process.get("/api/events")["events"] == []


async def test_sql_injection_strings_are_stored_verbatim(served: CollectorProcess) -> None:
    """SQL-looking strings and NUL characters are data: stored and reported exactly."""
    collector_process = served
    evil = "x'); DROP TABLE events; --\x00 and after a NUL"
    quote = "Robert\"'); DELETE FROM events WHERE ('1'='1"
    event = LLMEvent(
        AiEventUsage(1, 2, model=evil, provider=quote),
        metadata=AiEventMetadata(feature=evil, user=quote, extra={"note": "' OR 1=1 --"}),
    )
    async with FluxGate("k", endpoint=collector_process.url) as fg:
        assert await fg.record_event(event) is not None
        assert await fg.record_event(_event()) is not None
    stored = collector_process.get("/api/events")["events"]
    assert len(stored) == 2
    assert stored[0]["event"]["usage"]["model"] == evil
    assert stored[0]["event"]["metadata"] == {"feature": evil, "user": quote, "note": "' OR 1=1 --"}
    by_feature = collector_process.get("/api/summary?group_by=feature")["rows"]
    assert {row["feature"] for row in by_feature} == {evil, "chat"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_cleanly_and_closes_the_database(db: Path, sig: int) -> None:
    """SIGTERM or SIGINT: exit status 0, the database closed (its WAL file removed)."""
    proc = CollectorProcess(db)
    proc.start()
    async with FluxGate("k", endpoint=proc.url) as fg:
        assert await fg.record_event(_event()) is not None
    assert db.with_name(db.name + "-wal").exists()
    code, _, err = proc.stop(sig)
    assert code == 0
    assert "database closed" in err
    assert not db.with_name(db.name + "-wal").exists()


async def test_shutdown_under_load_loses_no_acknowledged_event(database: str) -> None:
    """SIGTERM while events stream in: every event acknowledged before it stopped is stored."""
    proc = CollectorProcess(database)
    proc.start()
    acknowledged: set[str] = set()
    hundred = asyncio.Event()
    async with FluxGate("k", endpoint=proc.url, max_retries=0, timeout=5.0) as fg:

        async def sender(n: int) -> None:
            for i in range(100):
                answer = await fg.record_event(_event(n * 100 + i))
                if answer is None:
                    return  # the collector has stopped
                acknowledged.add(answer.id)
                if len(acknowledged) >= 100:
                    hundred.set()

        senders = [asyncio.create_task(sender(n)) for n in range(8)]
        async with asyncio.timeout(30):
            await hundred.wait()
            assert proc.process is not None
            proc.process.send_signal(signal.SIGTERM)
            await asyncio.gather(*senders)
    code, _, err = proc.wait()
    assert code == 0
    assert "database closed" in err
    assert 100 <= len(acknowledged) < 800
    restarted = CollectorProcess(database)
    restarted.start()
    try:
        stored = restarted.get("/api/events?limit=1000")["events"]
    finally:
        restarted.stop()
    assert acknowledged <= {e["id"] for e in stored}


def test_port_in_use_is_one_clear_line(db: Path) -> None:
    """Serving on a busy port fails with exit status 1 and one line, no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--db", str(db))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"fluxgate-async serve: error: cannot listen on 127.0.0.1:{port}: address already in use"
    )


async def test_two_instances_on_one_postgres_one_killed_under_load(pg_url: str) -> None:
    """Each key sent to two collectors sharing PostgreSQL; one SIGKILLed midway: nothing lost."""
    one, two = CollectorProcess(pg_url), CollectorProcess(pg_url)
    one.start()
    two.start()
    answered: dict[str, set[str]] = {}
    killed = asyncio.Event()
    body = json.dumps({"usage": {"inputTokens": 10, "outputTokens": 5, "model": "gpt-4o"}})

    async def post(session: aiohttp.ClientSession, url: str, key: str) -> None:
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status == 200:
                    answered.setdefault(key, set()).add((await resp.json())["id"])
        except aiohttp.ClientError:
            assert killed.is_set()  # only the killed instance may stop answering

    async def sender(session: aiohttp.ClientSession, n: int) -> None:
        for i in range(60):
            key = f"key-{n}-{i}"
            await asyncio.gather(post(session, one.url, key), post(session, two.url, key))
            if len(answered) >= 150 and not killed.is_set():
                killed.set()
                await asyncio.to_thread(one.kill)

    try:
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.timeout(120):
            await asyncio.gather(*(sender(session, n) for n in range(8)))
        assert killed.is_set()
        assert len(answered) == 480  # the survivor answered every key
        assert all(len(ids) == 1 for ids in answered.values())  # one id per key, both instances
        conn = await asyncpg.connect(pg_url)
        try:
            rows = await conn.fetch("SELECT idempotency_key, id FROM fluxgate_events")
        finally:
            await conn.close()
        stored = {json.loads(row[0]): row[1] for row in rows}
        assert len(rows) == len(stored) == 480
        assert stored == {key: next(iter(ids)) for key, ids in answered.items()}
    finally:
        two.stop()
        if one.process is not None and one.process.poll() is None:
            one.kill()
