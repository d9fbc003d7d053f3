"""Fixtures for the collector and CLI tests: databases, and collectors in their own process."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from .postgres import PostgresCluster

STARTUP_DEADLINE = 20.0
STOP_DEADLINE = 15.0


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m fluxgate_async ARGS` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "fluxgate_async", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CollectorProcess:
    """`fluxgate-async serve` running in a child process on a free port.

    With `db` None, no `--db` is passed: the collector finds it in its environment.
    """

    def __init__(
        self,
        db: str | Path | None,
        *args: str,
        env: dict[str, str] | None = None,
        log_requests: bool = False,
    ) -> None:
        self.db = db
        # No access log unless asked: nobody reads the pipe until the end, and a full pipe blocks.
        self.args = (*args, "--access-log") if log_requests else args
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/api/events"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start it and wait until `/healthz` answers."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fluxgate_async",
                "serve",
                "--port",
                str(self.port),
                *(() if self.db is None else ("--db", str(self.db))),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(self.env or {})},
        )
        deadline = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                pytest.fail(f"collector exited with {self.process.returncode}: {out}{err}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.kill()
        pytest.fail(f"collector did not answer /healthz within {STARTUP_DEADLINE}s")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        assert self.process is not None
        self.process.kill()
        self.process.communicate(timeout=STOP_DEADLINE)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send `sig` and wait for a clean exit; return the exit status, stdout and stderr."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.wait()

    def wait(self) -> tuple[int, str, str]:
        """Wait for it to exit; return the exit status, stdout and stderr."""
        assert self.process is not None
        out, err = self.process.communicate(timeout=STOP_DEADLINE)
        return self.process.returncode, out, err

    def get(self, path: str, token: str | None = None) -> Any:
        """GET `path` and return the JSON answer."""
        request = urllib.request.Request(f"{self.base_url}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A path for a fresh collector database."""
    return tmp_path / "events.sqlite"


@pytest.fixture
def collector_process(db: Path) -> Iterator[CollectorProcess]:
    """A started collector process without API keys; stopped after the test."""
    proc = CollectorProcess(db)
    proc.start()
    yield proc
    if proc.process is not None and proc.process.poll() is None:
        proc.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole run, on a free loopback port."""
    cluster = PostgresCluster(free_port(), in_memory=True, autovacuum=False)
    cluster.start()
    yield cluster
    cluster.stop("immediate")  # its data is thrown away: no checkpoint to wait for
    cluster.remove()


_databases = itertools.count()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """The URL of a fresh, empty PostgreSQL database for one test."""
    name = f"test_{os.getpid()}_{next(_databases)}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return postgres.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn: a SQLite file path, then a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "events.sqlite")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def served(database: str) -> Iterator[CollectorProcess]:
    """A collector process on each backend in turn; stopped after the test."""
    proc = CollectorProcess(database)
    proc.start()
    yield proc
    if proc.process is not None and proc.process.poll() is None:
        proc.stop()
