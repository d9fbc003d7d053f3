"""Every Python sample in README.md, docs/ and the docstrings runs, so the docs cannot rot.

Pages (README.md and docs/):

- Each ```` ```python ```` fence is a complete program: the tests save it to a file of its
  own and run it in a fresh interpreter, as a reader who pasted it would. Other languages
  (`bash`, `text`, `typescript`) are not run.
- The interpreter gets the operating system's basics (`PATH`, `HOME`, ...) and only the
  variables the page tells its reader to set, in an `export NAME=...` line of a shell fence.
  Each such variable points at a loopback fake (see `docs_fakes.py`): `FLUXGATE_ENDPOINT` at a
  `FakeCollector`, `OPENAI_BASE_URL` and the like at a fake of that provider.
- A fence with a title (```` ```python title="app.py" ````, or `toml title="pyproject.toml"`)
  is a file the reader saves under that name: it is written beside each of the page's samples,
  so that they can import it or read it. A Python sample titled `test_*.py` is run with pytest.
- A sample fails if it exits non-zero, or prints a traceback, a warning or a client bug.
  A ```` ```text title="Output" ```` fence right after a sample is what it prints (stdout and
  stderr together), `...` standing for any text, as in doctest. Samples run in parallel,
  against one set of fakes.
- A fence written ```` ```python {.pending} ```` shows an API that is not released yet: it is
  rendered with a "coming soon" mark and not run.

pydantic's pytest-examples runs samples inside the test process, with the test's imports and
environment; a reader's run is a fresh interpreter with the page's variables only, so this
module runs them that way itself.

Docstrings: the samples of one docstring run in order, in a namespace of their own, in this
process, with the same fakes; `>>>` examples are run by doctest.
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from logging import ERROR
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

import fluxgate_async

from .docs_fakes import ThreadedServers

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SAMPLE_TIMEOUT = 180.0
"""Seconds one sample may run. Most take about three; importing LiteLLM alone takes ten, and
several times that under coverage on a busy two-core machine."""

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_TITLE = re.compile(r"""title=["']([^"']+)["']""")
_SHELLS = frozenset({"bash", "sh", "shell", "console"})
_EXPORT = re.compile(r"^\s*(?:\$\s*)?export\s+([A-Za-z_][A-Za-z0-9_]*)=", re.MULTILINE)
# What the operating system gives every program; the rest comes from the page.
_BASE_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
# On stderr: something went wrong even if the program exited with 0.
_PROBLEM = re.compile(
    r"Traceback|Exception ignored|Unclosed|\b[A-Z]\w*Warning: |unexpected error|bug while"
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
    title: str = ""
    """The file name the page tells the reader to save it as, if any."""

    @property
    def runs(self) -> bool:
        """Whether the tests run it."""
        return self.language == "python" and "pending" not in self.classes

    @property
    def where(self) -> str:
        """`page:line`, for test ids and failure messages."""
        try:
            page = self.path.relative_to(ROOT)
        except ValueError:
            page = self.path
        return f"{page}:{self.line}"


def _parse_info(info: str) -> tuple[str, frozenset[str], str]:
    # `python {.pending}`, `{.python .pending}` and `python title="app.py"` are all fences.
    title_match = _TITLE.search(info)
    info = _TITLE.sub("", info)
    head, _, attributes = info.strip().partition("{")
    classes = [word[1:] for word in attributes.rstrip("} ").split() if word.startswith(".")]
    language = head.strip() or (classes.pop(0) if classes else "")
    return language, frozenset(classes), title_match[1] if title_match else ""


def extract_samples(text: str, path: Path) -> list[Sample]:
    """Return the fenced code blocks of a Markdown text, in order."""
    samples = []
    for match in _FENCE.finditer(text):
        language, classes, title = _parse_info(match["info"])
        line = text.count("\n", 0, match.start("code")) + 1
        code = textwrap.dedent(match["code"])
        samples.append(Sample(path, line, language, classes, code, title))
    return samples


def page_environment(samples: list[Sample]) -> frozenset[str]:
    """The variables a page tells its reader to set: `export NAME=...` in its shell fences."""
    return frozenset(
        name for s in samples if s.language in _SHELLS for name in _EXPORT.findall(s.code)
    )


@attrs.frozen
class PageSample:
    """A sample to run, with what its page provides: variables to set and files to save."""

    sample: Sample
    environment: frozenset[str]
    files: tuple[Sample, ...]
    output: str | None = None
    """What the page says it prints, if it says."""


@attrs.frozen
class Run:
    """How a sample's program ended, and what it printed (stdout and stderr, interleaved)."""

    returncode: int
    output: str

    @property
    def problem(self) -> str:
        """Why the run failed, or `""`."""
        if self.returncode != 0:
            return f"exit status {self.returncode}"
        found = _PROBLEM.search(self.output)
        return f"{found[0]!r} in its output" if found else ""


def page_samples(path: Path) -> list[PageSample]:
    """The samples of a page that run, with the environment and files the page gives."""
    return page_samples_of(path.read_text(), path)


def page_samples_of(text: str, path: Path = ROOT / "page.md") -> list[PageSample]:
    """The samples of a page's text that run, with the environment and files the page gives."""
    samples = extract_samples(text, path)
    environment = page_environment(samples)
    files = tuple(s for s in samples if s.title and "pending" not in s.classes)
    items = []
    for n, sample in enumerate(samples):
        after = samples[n + 1] if n + 1 < len(samples) else None
        if sample.runs:
            shown = (
                after.code
                if after and (after.language, after.title) == ("text", "Output")
                else None
            )
            items.append(PageSample(sample, environment, files, shown))
    return items


def matches(expected: str, output: str) -> bool:
    """Whether `output` is what the page shows, `...` standing for any text."""
    return doctest.OutputChecker().check_output(expected, output, doctest.ELLIPSIS)


def sample_environment(names: frozenset[str], values: dict[str, str]) -> dict[str, str]:
    """The environment of a sample's interpreter: the system's basics and the page's variables."""
    unknown = sorted(names - values.keys())
    if unknown:
        pytest.fail(f"the page sets {unknown}, which the docs tests cannot point at a fake")
    if "FLUXGATE_API_KEY" in names and "FLUXGATE_ENDPOINT" not in names:
        # The samples would record to the real API instead of a fake.
        pytest.fail("the page sets FLUXGATE_API_KEY but not FLUXGATE_ENDPOINT")
    env = {name: os.environ[name] for name in _BASE_ENVIRONMENT if name in os.environ}
    # Coverage measures the samples' runs of the package too.
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    env.update({name: values[name] for name in names})
    return env


def run_page_sample(item: PageSample, env: dict[str, str], workdir: Path) -> Run:
    """Save the sample (and the page's titled files) in `workdir` and run it on its own."""
    workdir.mkdir(parents=True)
    for file in item.files:
        (workdir / file.title).write_text(file.code)
    sample = item.sample
    name = sample.title or "sample.py"
    # Blank lines first, so that a traceback's line numbers are the page's.
    (workdir / name).write_text("\n" * (sample.line - 1) + sample.code)
    # A client left open warns with ResourceWarning, which Python hides by default.
    command = [sys.executable, "-W", "default::ResourceWarning", name]
    if name.startswith("test_"):
        # The reader's project has pytest and pytest-asyncio; this environment has more pytest
        # plugins (hypothesis, schemathesis, LangSmith's), whose loading alone takes seconds.
        env = {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-p", "pytest_asyncio.plugin", "-W", "error", name]
    try:
        done = subprocess.run(
            command,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SAMPLE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # Even with text=True, what was printed before the timeout comes as bytes.
        printed = (exc.stdout or b"").decode(errors="replace")
        return Run(-1, f"{printed}\ntimed out after {SAMPLE_TIMEOUT} s")
    return Run(done.returncode, done.stdout)


def _page_sample(value: object) -> PageSample:
    """The `item` parameter of a page sample test."""
    assert isinstance(value, PageSample)
    return value


def _page_sample_params() -> Iterator[Any]:
    for path in PAGES:
        for item in page_samples(path):
            yield pytest.param(item, id=item.sample.where)


@pytest.fixture(scope="session")
def docs_servers() -> Iterator[ThreadedServers]:
    """One set of loopback fakes for every sample of the run."""
    with ThreadedServers() as servers:
        yield servers


@pytest.fixture(scope="session")
def sample_runs(
    request: pytest.FixtureRequest,
    docs_servers: ThreadedServers,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[Run]]]:
    """Start every selected page sample at once, a few at a time; each test waits for its own."""
    selected = [
        _page_sample(item.callspec.params["item"])
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_page_sample_runs"
    ]
    values = docs_servers.environment()
    base = tmp_path_factory.mktemp("samples")
    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 1) + 1)) as pool:
        runs = {
            item.sample.where: pool.submit(
                run_page_sample,
                item,
                sample_environment(item.environment, values),
                base / f"{n}",
            )
            for n, item in enumerate(selected)
        }
        yield runs
        for future in runs.values():
            future.cancel()


@pytest.mark.parametrize("item", list(_page_sample_params()))
def test_page_sample_runs(item: PageSample, sample_runs: dict[str, Future[Run]]) -> None:
    """Each Python sample of a page runs on its own, as saved to a file, and ends cleanly."""
    run = sample_runs[item.sample.where].result(timeout=SAMPLE_TIMEOUT * 4)
    assert not run.problem, f"{item.sample.where}: {run.problem}\n{run.output}"
    if item.output is not None:
        assert matches(item.output, run.output), f"{item.sample.where} printed:\n{run.output}"


def test_page_samples_are_clean_python(tmp_path: Path) -> None:
    """Pyflakes finds no undefined name, unused import or top-level `await` in any page sample."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    for path in PAGES:
        for item in page_samples(path):
            name = re.sub(r"\W", "_", item.sample.where)
            # Blank lines first, so that ruff reports the page's line numbers.
            (tmp_path / f"{name}.py").write_text("\n" * (item.sample.line - 1) + item.sample.code)
    result = subprocess.run(
        [ruff, "check", "--isolated", "--no-cache", "--select=F,E9", "--target-version=py311", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_page_environment_is_what_the_page_exports() -> None:
    """Only `export NAME=` lines of shell fences set a sample's variables."""
    text = textwrap.dedent(
        """\
        ```bash
        export FLUXGATE_API_KEY=...   # your key
        $ export OPENAI_API_KEY=sk-...
        FLUXGATE_ENDPOINT=x python app.py
        ```

        ```text
        export NOT_A_SETTING=1
        ```
        """
    )
    samples = extract_samples(text, Path("p.md"))
    assert page_environment(samples) == {"FLUXGATE_API_KEY", "OPENAI_API_KEY"}


def test_a_sample_sees_only_the_variables_its_page_sets(tmp_path: Path) -> None:
    """A variable the page does not tell its reader to set is not there when the sample runs."""
    os.environ.setdefault("FLUXGATE_DOCS_PROBE", "leaked")
    try:
        code = "import os\nprint(sorted(k for k in os.environ if k.startswith('FLUXGATE')))\n"
        sample = Sample(Path("p.md"), 1, "python", frozenset(), code)
        names = frozenset({"FLUXGATE_API_KEY", "FLUXGATE_ENDPOINT"})
        env = sample_environment(names, {"FLUXGATE_API_KEY": "k", "FLUXGATE_ENDPOINT": "e"})
        run = run_page_sample(PageSample(sample, names, ()), env, tmp_path / "run")
    finally:
        del os.environ["FLUXGATE_DOCS_PROBE"]
    assert run.problem == ""
    assert run.output == "['FLUXGATE_API_KEY', 'FLUXGATE_ENDPOINT']\n"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"FLUXGATE_API_KEY"}, "sets FLUXGATE_API_KEY but not FLUXGATE_ENDPOINT"),
        ({"AWS_SECRET"}, "the page sets ['AWS_SECRET'], which the docs tests cannot point"),
    ],
)
def test_a_page_environment_the_tests_cannot_fake_fails(names: set[str], message: str) -> None:
    """A page that would send samples to a real service, or set an unknown variable, fails."""
    with pytest.raises(pytest.fail.Exception, match=re.escape(message)):
        sample_environment(frozenset(names), {"FLUXGATE_API_KEY": "k"})


def test_a_failing_page_sample_fails_with_its_page_line(tmp_path: Path) -> None:
    """A sample that raises fails its run, and the traceback names the Markdown line."""
    [sample] = extract_samples(
        "Text.\n\n```python\nok = 1\nraise ValueError(ok)\n```\n", ROOT / "p.md"
    )
    run = run_page_sample(PageSample(sample, frozenset(), ()), {}, tmp_path / "run")
    assert run.problem == "exit status 1"
    assert "line 5, in <module>" in run.output


def test_a_warning_on_stderr_fails_a_sample_that_exits_cleanly(tmp_path: Path) -> None:
    """A sample that exits with 0 but leaves a warning on stderr still fails."""
    code = "import warnings\nwarnings.warn('unclosed thing', ResourceWarning, stacklevel=1)\n"
    sample = Sample(Path("p.md"), 1, "python", frozenset(), code)
    run = run_page_sample(PageSample(sample, frozenset(), ()), {}, tmp_path / "run")
    assert run.returncode == 0
    assert "ResourceWarning" in run.problem


def test_titled_files_are_saved_beside_the_sample_and_tests_run_with_pytest(
    tmp_path: Path,
) -> None:
    """A page's `title="app.py"` file can be imported, and a `test_*.py` sample runs as tests."""
    text = textwrap.dedent(
        """\
        ```toml title="pyproject.toml"
        [tool.pytest.ini_options]
        asyncio_mode = "auto"
        asyncio_default_fixture_loop_scope = "function"
        ```

        ```python title="app.py"
        async def answer() -> int:
            return 42
        ```

        ```python title="test_app.py"
        from app import answer


        async def test_answer() -> None:
            assert await answer() == 41
        ```
        """
    )
    samples = extract_samples(text, tmp_path / "p.md")
    assert [s.title for s in samples] == ["pyproject.toml", "app.py", "test_app.py"]
    item = PageSample(samples[2], frozenset(), tuple(samples))
    run = run_page_sample(item, {"PATH": os.environ["PATH"]}, tmp_path / "run")
    assert run.problem == "exit status 1"
    assert "1 failed" in run.output


def test_a_page_shows_what_a_sample_prints() -> None:
    """A text fence titled Output right after a sample is its expected output, `...` and all."""
    text = textwrap.dedent(
        """\
        ```python
        print("id evt_123 stored")
        ```

        ```text title="Output"
        id evt_... stored
        ```

        ```python
        print(1)
        ```

        ```text
        not an output: no title
        ```
        """
    )
    [first, second] = page_samples_of(text)
    assert first.output == "id evt_... stored\n"
    assert second.output is None
    assert matches(first.output, "id evt_123 stored\n")
    assert not matches(first.output, "id 123 stored\n")


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


# Docstrings --------------------------------------------------------------------------------


def run_samples(samples: list[Sample]) -> None:
    """Run the samples of one docstring in order, in one namespace."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with asyncio.Runner() as runner:
        for sample in samples:
            # Leading newlines make tracebacks point at the source file's own lines.
            source = "\n" * (sample.line - 1) + sample.code
            code = compile(source, str(sample.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if code.co_flags & inspect.CO_COROUTINE:
                runner.run(eval(code, namespace))
            else:
                exec(code, namespace)


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


# google-genai subclasses aiohttp's ClientSession, which aiohttp deprecates; not ours to fix.
@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
@pytest.mark.parametrize("docstrings", list(_docstrings_with_samples()))
def test_docstring_samples_run(
    docstrings: list[list[Sample]],
    docs_servers: ThreadedServers,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each docstring's Python samples run on their own, as the reference pages show them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLUXGATE_ENABLED", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    for name, value in docs_servers.environment().items():
        monkeypatch.setenv(name, value)
    for samples in docstrings:
        run_samples(samples)
    # Samples may show failures the client logs as warnings; an ERROR is a bug in the client.
    errors = [r for r in caplog.records if r.name == "fluxgate_async" and r.levelno >= ERROR]
    assert errors == []


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


@pytest.mark.parametrize("module", list(_modules()), ids=lambda m: m.__name__)
def test_docstring_examples_run(module: ModuleType) -> None:
    """The `>>>` examples in the docstrings, which the reference pages show, hold."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
