"""The loopback server the benchmarks talk to, run in its own process.

It answers `POST /api/events` like the FluxGate API and
`POST /v1/chat/completions` like OpenAI, as cheaply as aiohttp allows, so that
what the benchmark measures is the client. Run as `python -m benchmarks._server`:
it prints its port on the first line of stdout and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from aiohttp import web

_ids = itertools.count(1)

CHAT_COMPLETION = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1764115200,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello!","refusal":null},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,'
    b'"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":'
    b'{"reasoning_tokens":0}},"system_fingerprint":"fp_bench"}'
)


async def _event(request: web.Request) -> web.Response:
    await request.read()
    body = b'{"id":"evt_%d","createdAt":"2026-11-26T00:00:00Z","cost":0.00042,"status":"SUCCESS"}'
    return web.Response(body=body % next(_ids), content_type="application/json")


async def _chat(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=CHAT_COMPLETION, content_type="application/json")


async def _serve() -> None:
    app = web.Application()
    app.router.add_post("/api/events", _event)
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


class ServerProcess:
    """Start the server in a child process for the length of a `with` block."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        """The events endpoint, to pass as `FluxGate(endpoint=...)`."""
        return f"{self.base_url}/api/events"

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._server"],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__(None, None, None)
            msg = f"benchmark server did not start: {line!r}"
            raise RuntimeError(msg)
        self.port = int(line)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    asyncio.run(_serve())
