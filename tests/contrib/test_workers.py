"""Real multi-worker servers: every event from every worker stored once, SIGTERM delivers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fluxgate_async.testing import FakeCollector, Reply

from ..conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
BATCH = 24
IMPORT_TOKENS = 999_999


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_serving(server: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1]
        try:
            if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the server did not start within 60 s")


def _record_until_two_workers_answered(base: str) -> tuple[list[int], set[int]]:
    """Concurrent requests, half to a `def` endpoint, until both workers have answered."""
    sent: list[int] = []
    workers: set[int] = set()

    def post(n: int) -> int:
        path = "sync" if n % 2 else "async"
        with httpx.Client(timeout=10) as http:  # a connection each: spread over the workers
            answer = http.post(f"{base}/{path}/{n}").json()
        assert answer["queued"] is True
        worker: int = answer["worker"]
        return worker

    with ThreadPoolExecutor(8) as pool:
        for batch in range(10):
            numbers = range(batch * BATCH, (batch + 1) * BATCH)
            workers.update(pool.map(post, numbers))
            sent.extend(numbers)
            if len(workers) == 2:
                break
    return sent, workers


def _serve(command: list[str], collector: FakeCollector, **env: str) -> tuple[list[int], str]:
    """Run the server, record through it, SIGTERM it; the events sent and its stderr."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", *[part.format(port=port) for part in command]],
        cwd=ROOT,
        env={
            **os.environ,
            "FLUXGATE_API_KEY": API_KEY,
            "FLUXGATE_ENDPOINT": collector.url,
            "PYTHONPATH": str(ROOT),
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_serving(server, base)
        sent, workers = _record_until_two_workers_answered(base)
        assert len(workers) == 2
        assert len(collector.events) < len(sent)  # the slow collector: events still queued
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, stderr
    return sent, stderr


def _assert_stored_once(collector: FakeCollector, sent: list[int]) -> None:
    tokens = sorted(event["usage"]["inputTokens"] for event in collector.events)
    assert tokens == sorted(sent)
    assert len({event["metadata"]["worker"] for event in collector.events}) == 2
    keys = [request.idempotency_key for request in collector.requests]
    assert len(set(keys)) == len(keys)


def test_uvicorn_with_two_workers_stores_every_event_once(
    threaded_collector: FakeCollector,
) -> None:
    """Uvicorn with two workers: both workers and both kinds of endpoint, SIGTERM delivers."""
    threaded_collector.responder = lambda _: Reply(delay=0.2)
    command = ["uvicorn", "tests.contrib.workers_app:app", "--workers", "2"]
    command += ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    sent, _ = _serve(command, threaded_collector)
    _assert_stored_once(threaded_collector, sent)


def test_gunicorn_preload_workers_never_send_the_masters_events(
    threaded_collector: FakeCollector,
) -> None:
    """Gunicorn --preload forks two workers from a master that queued an event at import."""
    threaded_collector.responder = lambda _: Reply(delay=0.2)
    command = ["gunicorn", "tests.contrib.workers_app:app", "--preload", "--workers", "2"]
    command += ["--worker-class", "uvicorn_worker.UvicornWorker", "--bind", "127.0.0.1:{port}"]
    command += ["--graceful-timeout", "30", "--log-level", "warning"]
    sent, stderr = _serve(command, threaded_collector, RECORD_AT_IMPORT=str(IMPORT_TOKENS))
    _assert_stored_once(threaded_collector, sent)  # and not the master's event
    assert IMPORT_TOKENS not in sent
    assert "FluxGate: 1 event(s) still queued at exit were never sent" in stderr
