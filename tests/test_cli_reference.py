"""The CLI reference page is written from the parsers, so every command and option is on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from docs_hooks import CLI_MARKER, on_page_markdown

from fluxgate_async.cli._main import _parser
from fluxgate_async.cli._reference import cli_reference

ROOT = Path(__file__).resolve().parent.parent


def test_every_command_and_option_is_in_the_reference() -> None:
    """Each subcommand has its section, and each of its options a row with its help text."""
    page = cli_reference()
    parser = _parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"serve", "send", "report", "outbox", "demo"}
    for name, sub in commands.choices.items():
        section = page.split(f"## fluxgate-async {name}\n", 1)[1].split("\n## ", 1)[0]
        assert sub.format_usage().strip() in section
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            shown = action.option_strings[-1] if action.option_strings else action.metavar
            assert f"`{shown}`" in section, (name, action.dest)
            if action.help:
                assert action.help.split("(")[0].strip() in section, (name, action.dest)


def test_the_reference_shows_defaults_and_choices() -> None:
    """Defaults are expanded from `%(default)s`, and choices are listed."""
    page = cli_reference()
    assert "| `--port` `PORT` | port (8787) |" in page
    assert "one of `model`" in page
    assert "%(default)s" not in page


def test_the_docs_page_gets_the_reference_at_build_time() -> None:
    """The CLI page holds the marker, which the site's hook replaces with the reference."""
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert CLI_MARKER in page
    built = on_page_markdown(page)
    assert CLI_MARKER not in built
    assert cli_reference() in built
