"""Every Python sample in README.md, docs/ and the docstrings runs, so the docs cannot rot.

The convention, also stated in `docs/index.md` for contributors:

- A ```` ```python ```` fence is run; other languages (`bash`, `text`, `typescript`) are not.
- The samples of one page run in order in one namespace, like a REPL session, so a page
  may build on its earlier samples. Top-level `await` works, as in `python -m asyncio`.
- The samples of one docstring (which the reference pages render) run the same way, in a
  namespace of their own: each docstring's example is complete on its own. `>>>`
  examples in docstrings are run by doctest.
- `FLUXGATE_ENDPOINT` points at a `FakeCollector` started for the page and
  `FLUXGATE_API_KEY` is set, so `FluxGate()` works with no arguments; likewise
  `AsyncOpenAI()`, `AsyncAnthropic()` and `genai.Client()` reach a loopback fake
  of their API through `OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL` and
  `GOOGLE_GEMINI_BASE_URL` (chat completions, the Responses API, messages and
  content), and so do the agent frameworks built on those SDKs.
- A fence written ```` ```python {.pending} ```` shows an API that is not released yet:
  it is rendered with a "coming soon" mark and not run.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import importlib
import inspect
import json
import pkgutil
import re
import textwrap
import threading
from collections.abc import Iterator
from logging import ERROR
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import attrs
import pytest
from aiohttp import web

import fluxgate_async
from fluxgate_async._serving import start_app
from fluxgate_async.testing import FakeCollector

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@attrs.frozen
class Sample:
    """One fenced code block of a page."""

    path: Path
    line: int
    """Line of the first line of code, counted from 1."""
    language: str
    classes: frozenset[str]
    code: str

    @property
    def runs(self) -> bool:
        """Whether the tests run it."""
        return self.language == "python" and "pending" not in self.classes


def _parse_info(info: str) -> tuple[str, frozenset[str]]:
    # Both `python {.pending}` and `{.python .pending}` spell the same fence.
    head, _, attributes = info.strip().partition("{")
    classes = [word[1:] for word in attributes.rstrip("} ").split() if word.startswith(".")]
    language = head.strip() or (classes.pop(0) if classes else "")
    return language, frozenset(classes)


def extract_samples(text: str, path: Path) -> list[Sample]:
    """Return the fenced code blocks of a Markdown text, in order."""
    samples = []
    for match in _FENCE.finditer(text):
        language, classes = _parse_info(match["info"])
        line = text.count("\n", 0, match.start("code")) + 1
        code = textwrap.dedent(match["code"])
        samples.append(Sample(path, line, language, classes, code))
    return samples


_CHAT = {
    "id": "chatcmpl-docs",
    "object": "chat.completion",
    "created": 1764115200,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}
_RESPONSE = {
    "id": "resp_docs",
    "object": "response",
    "created_at": 1764115200,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_docs",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    },
}
_MESSAGE = {
    "id": "msg_docs",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}
_MESSAGE_STREAM = [
    ("message_start", {"type": "message_start", "message": {**_MESSAGE, "content": []}}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 3},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
_CONTENT = {
    "candidates": [
        {"content": {"parts": [{"text": "Hello!"}], "role": "model"}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 15},
    "modelVersion": "gemini-2.5-flash",
}


async def _sse(request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        body = data if isinstance(data, str) else json.dumps(data)
        await response.write(f"{head}data: {body}\n\n".encode())
    await response.write_eof()
    return response


async def _openai_chat(request: web.Request) -> web.StreamResponse:
    if not (await request.json()).get("stream"):
        return web.json_response(_CHAT)
    chunk = {**_CHAT, "object": "chat.completion.chunk", "usage": None}
    delta = {"index": 0, "delta": {"content": "Hello!"}, "finish_reason": "stop"}
    return await _sse(
        request,
        [
            (None, {**chunk, "choices": [delta]}),
            (None, {**chunk, "choices": [], "usage": _CHAT["usage"]}),
            (None, "[DONE]"),
        ],
    )


async def _openai_responses(request: web.Request) -> web.Response:
    return web.json_response(_RESPONSE)


async def _anthropic_messages(request: web.Request) -> web.StreamResponse:
    if not (await request.json()).get("stream"):
        return web.json_response(_MESSAGE)
    return await _sse(request, list(_MESSAGE_STREAM))


async def _gemini_content(request: web.Request) -> web.Response:
    return web.json_response(_CONTENT)


async def _gemini_stream(request: web.Request) -> web.StreamResponse:
    return await _sse(request, [(None, _CONTENT)])


class ThreadedServers:
    """A `FakeCollector` and a fake of OpenAI, Anthropic and Gemini, in their own thread and loop.

    The samples call `asyncio.run()`, each with a loop of its own, so the servers
    must keep answering while none of those loops is running. The provider fake
    answers every call with one fixed, well-formed answer.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.collector: FakeCollector | None = None
        self._providers: web.AppRunner | None = None
        self.providers_url = ""

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    @property
    def events_url(self) -> str:
        """The FakeCollector's endpoint."""
        assert self.collector is not None
        return self.collector.url

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self.collector = FakeCollector()
        await self.collector.start()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _openai_chat)
        app.router.add_post("/v1/responses", _openai_responses)
        app.router.add_post("/v1/messages", _anthropic_messages)
        app.router.add_post("/{version}/models/{model}:generateContent", _gemini_content)
        app.router.add_post("/{version}/models/{model}:streamGenerateContent", _gemini_stream)
        self._providers, port = await start_app(app, "127.0.0.1", 0, shutdown_timeout=1.0)
        self.providers_url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self.collector is not None:
            await self.collector.aclose()
        if self._providers is not None:
            await self._providers.cleanup()


def _point_at(servers: ThreadedServers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the environment the samples read: FluxGate's, and the provider SDKs'."""
    monkeypatch.delenv("FLUXGATE_ENABLED", raising=False)
    monkeypatch.setenv("FLUXGATE_ENDPOINT", servers.events_url)
    monkeypatch.setenv("FLUXGATE_API_KEY", "docs-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{servers.providers_url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", servers.providers_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-docs")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", servers.providers_url)
    monkeypatch.setenv("GOOGLE_API_KEY", "g-docs")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)


def run_samples(samples: list[Sample]) -> None:
    """Run the samples of one page in order, in one namespace."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with asyncio.Runner() as runner:
        for sample in samples:
            # Leading newlines make tracebacks point at the Markdown file's own lines.
            source = "\n" * (sample.line - 1) + sample.code
            code = compile(source, str(sample.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if code.co_flags & inspect.CO_COROUTINE:
                runner.run(eval(code, namespace))
            else:
                exec(code, namespace)


def _pages_with_samples() -> Iterator[Any]:
    for path in PAGES:
        samples = [s for s in extract_samples(path.read_text(), path) if s.runs]
        if samples:
            yield pytest.param(samples, id=str(path.relative_to(ROOT)))


def _modules() -> Iterator[ModuleType]:
    yield fluxgate_async
    for info in pkgutil.walk_packages(fluxgate_async.__path__, "fluxgate_async."):
        if not info.name.endswith(".__main__"):  # importing it runs the command line
            yield importlib.import_module(info.name)


def docstring_samples(source: str, path: Path) -> list[list[Sample]]:
    """Return the fenced code blocks of each docstring of a module's source, in source order.

    A docstring is a string standing alone as a statement: a module's, a class's,
    a function's or an attribute's. Lines are counted in the source file.
    """
    docstrings = sorted(
        (node.lineno, node.value.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )
    groups = []
    for first_line, text in docstrings:
        # The text starts on the line of its opening quotes.
        samples = [
            attrs.evolve(sample, line=first_line + sample.line - 1)
            for sample in extract_samples(text, path)
        ]
        if samples:
            groups.append(samples)
    return groups


def _docstrings_with_samples() -> Iterator[Any]:
    for module in _modules():
        path = Path(inspect.getfile(module))
        groups = [
            [s for s in samples if s.runs] for samples in docstring_samples(path.read_text(), path)
        ]
        groups = [samples for samples in groups if samples]
        if groups:
            yield pytest.param(groups, id=module.__name__)


def _run_against_fakes(
    groups: list[list[Sample]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Run each group of samples in a namespace of its own, against one set of fake servers."""
    monkeypatch.chdir(tmp_path)
    with ThreadedServers() as servers:
        _point_at(servers, monkeypatch)
        for samples in groups:
            run_samples(samples)
    # Samples may show failures the client logs as warnings; an ERROR is a bug in the client.
    errors = [r for r in caplog.records if r.name == "fluxgate_async" and r.levelno >= ERROR]
    assert errors == []


# google-genai subclasses aiohttp's ClientSession, which aiohttp deprecates; not ours to fix.
_genai_warning = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)


@_genai_warning
@pytest.mark.parametrize("samples", list(_pages_with_samples()))
def test_page_samples_run(
    samples: list[Sample],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each page's Python samples run without error, and the client logs no error of its own."""
    _run_against_fakes([samples], monkeypatch, tmp_path, caplog)


@_genai_warning
@pytest.mark.parametrize("docstrings", list(_docstrings_with_samples()))
def test_docstring_samples_run(
    docstrings: list[list[Sample]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each docstring's Python samples run on their own, as the reference pages show them."""
    _run_against_fakes(docstrings, monkeypatch, tmp_path, caplog)


def test_every_python_fence_of_the_package_is_a_docstring_sample() -> None:
    """The docstring extractor finds every ```python fence in the package's source."""
    for module in _modules():
        path = Path(inspect.getfile(module))
        source = path.read_text()
        found = [
            s
            for samples in docstring_samples(source, path)
            for s in samples
            if s.language == "python"
        ]
        assert len(found) == source.count("```python"), module.__name__


def test_a_failing_docstring_sample_fails_with_its_source_line() -> None:
    """A docstring sample that raises fails the run, and the traceback names the module's line."""
    source = textwrap.dedent(
        '''\
        """A module.

        ```python
        import math
        ```
        """


        def area(radius: float) -> float:
            """Return the area of a disc.

            Example:
                ```python
                ok = 1
                raise ValueError(ok)
                ```
            """
            return math.pi * radius**2
        '''
    )
    groups = docstring_samples(source, Path("m.py"))
    assert [[(s.line, s.code) for s in samples] for samples in groups] == [
        [(4, "import math\n")],
        [(14, "ok = 1\nraise ValueError(ok)\n")],
    ]
    with pytest.raises(ValueError, match="1") as info:
        run_samples(groups[1])
    assert info.traceback[-1].lineno + 1 == 15


def test_readme_quickstart_reaches_the_collector(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first sample records its event and prints the API's answer."""
    first = next(s for s in extract_samples(PAGES[0].read_text(), PAGES[0]) if s.runs)
    with ThreadedServers() as servers:
        _point_at(servers, monkeypatch)
        run_samples([first])
        assert servers.collector is not None
        assert len(servers.collector.events) == 1
        assert servers.collector.events[0]["usage"]["inputTokens"] == 100
    assert "CreateAiEventResponse(id='evt_1'" in capsys.readouterr().out


def test_extract_samples_reads_languages_markers_and_indentation() -> None:
    """The extractor runs plain python fences only, and dedents fences inside blocks."""
    text = textwrap.dedent(
        """\
        Intro.

        ```python
        x = 1
        ```

        ```python {.pending}
        fg.record_event_nowait(event)
        ```

        ```bash
        make test
        ```

        !!! note
            ```python
            y = x + 1
            ```
        """
    )
    samples = extract_samples(text, Path("page.md"))
    assert [(s.language, s.runs, s.line) for s in samples] == [
        ("python", True, 4),
        ("python", False, 8),
        ("bash", False, 12),
        ("python", True, 17),
    ]
    assert samples[3].code == "y = x + 1\n"


def test_a_failing_sample_fails_with_its_page_line() -> None:
    """A sample that raises fails the run, and the traceback names the Markdown line."""
    samples = extract_samples(
        "Text.\n\n```python\nok = 1\nraise ValueError(ok)\n```\n", Path("p.md")
    )
    with pytest.raises(ValueError, match="1") as info:
        run_samples(samples)
    assert info.traceback[-1].lineno + 1 == 5


def test_top_level_await_shares_the_page_namespace() -> None:
    """A later sample sees the names an earlier one defined, with top-level await."""
    text = (
        "```python\nasync def f() -> int:\n    return 41\n```\n\n"
        "```python\nresult = await f() + 1\nassert result == 42\n```\n"
    )
    run_samples(extract_samples(text, Path("p.md")))
    with pytest.raises(AssertionError):
        run_samples(extract_samples(text.replace("42", "43"), Path("p.md")))


@pytest.mark.parametrize("module", list(_modules()), ids=lambda m: m.__name__)
def test_docstring_examples_run(module: ModuleType) -> None:
    """The `>>>` examples in the docstrings, which the reference pages show, hold."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
