"""A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl from the machine's binaries.

pytest-postgresql was considered and not used: it runs `initdb` and `pg_ctl`
as the current user, and PostgreSQL refuses to run as root, which is what CI
runs as here. This runs them as the `postgres` user through `runuser` when
root, and as the current user otherwise.

Never skipped: missing binaries raise `PostgresUnavailableError`, which fails
the tests that need it with a message saying what to install. `make bench`
uses it too, for the PostgreSQL ingest row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

START_DEADLINE = 30.0
SERVER_USER = "postgres"
MEMORY = Path("/dev/shm")
"""A RAM-backed file system (tmpfs) on Linux: a throwaway cluster's files need no disk."""
MEMORY_NEEDED = 2 * 1024**3
"""Free space on `MEMORY` below which a cluster goes to disk: a suite's databases reach ~1.5 GB."""


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL server programs are missing, or the server would not start."""


def _find(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        msg = (
            f"PostgreSQL's {program} is not on PATH: the collector tests need the PostgreSQL "
            "server programs (Debian: apt-get install postgresql)"
        )
        raise PostgresUnavailableError(msg)
    # On Debian, PATH holds links into the version's own bin directory.
    return str(Path(found).resolve())


def _roomy(directory: Path) -> bool:
    """Whether `directory` can hold a test run's databases (a container's tmpfs may be tiny)."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    return shutil.disk_usage(directory).free >= MEMORY_NEEDED


class PostgresCluster:
    """A PostgreSQL server in a temporary directory, listening on 127.0.0.1:`port`.

    With `in_memory`, the directory is on tmpfs where the machine has one: each database a
    test creates copies a template of some 7 MB and 300 files, which a run creates by the
    hundred and then deletes. The benchmarks keep the default, the disk a server runs on.

    Without `autovacuum`, no background transaction runs beside the tests'. The store
    lists only events whose transaction is older than every running one (the listing
    horizon, see `fluxgate_async.collector._postgres`), and an autovacuum worker's
    ANALYZE of an earlier test's database holds that horizon back for its duration:
    a listing taken right after a write would miss the write at random.
    """

    def __init__(self, port: int, *, in_memory: bool = False, autovacuum: bool = True) -> None:
        self.port = port
        self.autovacuum = autovacuum
        self.pg_ctl = _find("pg_ctl")
        self.initdb = str(Path(self.pg_ctl).with_name("initdb"))
        parent = MEMORY if in_memory and _roomy(MEMORY) else None
        self.directory = Path(tempfile.mkdtemp(prefix="fluxgate-pg-", dir=parent))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._as_root = os.geteuid() == 0

    def _run(self, *command: str, timeout: float = START_DEADLINE) -> None:
        prefix = ["runuser", "-u", SERVER_USER, "--"] if self._as_root else []
        result = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            msg = f"{' '.join(command)} failed: {result.stdout}{result.stderr}{log}"
            raise PostgresUnavailableError(msg)

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        if self._as_root:
            shutil.chown(self.directory, SERVER_USER, SERVER_USER)
        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.restart()

    def restart(self) -> None:
        """Start the server on its port and data, and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"
        if not self.autovacuum:
            options += " -c autovacuum=off"
        self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` is a crash, as when the host goes away."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Delete its files; the server must be stopped."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The `postgresql://` URL of `database` on it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
