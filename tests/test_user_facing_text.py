"""User-facing text speaks of the project alone, never of how it is built.

User-facing text is what a user reads: README.md, the pages in docs/, the docstrings of the
public names (which `help()` and the API reference show) and the command line's help.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import fluxgate_async
from fluxgate_async.cli._main import _parser

ROOT = Path(__file__).resolve().parent.parent

INTERNAL_VOCABULARY = {
    # The TypeScript SDK is "the TypeScript SDK" or `@fluxgate/sdk` to a user.
    r"\bseeds?\b": "the reference implementation the project started from",
    r"\bworkshop\b": "how the project is built",
    r"\bwork ?trees?\b": "git worktrees of the developers",
    r"`?\b(?:docs|main|feature|hardening)\b`? branch\b": "a development branch",
    r"\bthe lead\b": "a developer's role",
    r"\bissues? ?#?\d+\b": "a tracker entry",
    r"\b(?:this|a|by a|previous|next) session(?:'s)? (?:of work|notes?|log)\b": "a work session",
    r"\bfiled by\b": "a tracker entry",
    r"\btests/": "a path in the test suite",
    r"\btest_docs\b": "the docs test module",
    r"\bharness\b": "test-harness notes",
    r"\bdocs tests?\b": "test-harness notes",
    r"\{\.pending\}": "test-harness markup",
    r"\b(?:TODO|FIXME|XXX)\b": "a note to developers",
}
"""Each pattern (case-insensitive except the last) and what it gives away."""

_PATTERNS = [
    (re.compile(p, 0 if p.startswith(r"\b(?:TODO") else re.IGNORECASE), why)
    for p, why in INTERNAL_VOCABULARY.items()
]


def _public_modules() -> Iterator[str]:
    yield fluxgate_async.__name__
    for info in pkgutil.walk_packages(fluxgate_async.__path__, "fluxgate_async."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield info.name


def _docstrings() -> Iterator[tuple[str, str]]:
    """`(name, docstring)` of every public module, its public names and their public members."""
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        yield module_name, inspect.getdoc(module) or ""
        names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        for name in names:
            value = getattr(module, name)
            if inspect.ismodule(value):
                continue
            yield f"{module_name}.{name}", inspect.getdoc(value) or ""
            if inspect.isclass(value):
                for member, attribute in vars(value).items():
                    if not member.startswith("_"):
                        yield f"{module_name}.{name}.{member}", inspect.getdoc(attribute) or ""


def _cli_help() -> Iterator[tuple[str, str]]:
    parser = _parser()
    yield "fluxgate-async --help", parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield f"fluxgate-async {command} --help", sub.format_help()


def _texts() -> Iterator[tuple[str, str]]:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        yield str(page.relative_to(ROOT)), page.read_text()
    yield from _docstrings()
    yield from _cli_help()


def find_internal_vocabulary(text: str) -> list[str]:
    """The internal words in `text`, each with what it gives away."""
    return [f"{m[0]!r} ({why})" for pattern, why in _PATTERNS for m in pattern.finditer(text)]


@pytest.mark.parametrize(("where", "text"), list(_texts()), ids=lambda value: value[:60])
def test_user_facing_text_has_no_internal_vocabulary(where: str, text: str) -> None:
    """README, docs pages, public docstrings and CLI help never use the project's internal words."""
    assert find_internal_vocabulary(text) == [], where


@pytest.mark.parametrize(
    "text",
    [
        "This is the seed's Direct Integration.",
        "Every sample is run by tests/test_docs.py.",
        "A fence written {.pending} is not run.",
        "Measured on the docs branch, three runs.",
        "Before the changes (the `docs` branch) and after.",
        "See issue 15.",
        "TODO: document this",
    ],
)
def test_internal_vocabulary_is_found(text: str) -> None:
    """Each kind of internal word is caught."""
    assert find_internal_vocabulary(text) != []


def test_user_words_that_look_alike_pass() -> None:
    """The users' own words (a session id, an HTTP session, a todo list) are not flagged."""
    text = (
        "Set session_id per user session; the client closes its HTTP session. "
        "A todo app records its events; the collector issues an id to each."
    )
    assert find_internal_vocabulary(text) == []
