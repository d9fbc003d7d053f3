"""The command line's reference page, written from its own parsers so that it cannot drift."""

from __future__ import annotations

import argparse

from ._main import PROG, _parser

__all__ = ["cli_reference"]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option_table(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> list[str]:
    formatter = parser._get_formatter()
    rows = ["| option | meaning |", "| --- | --- |"]
    for action in actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{name}`" for name in action.option_strings)
        if action.nargs != 0:
            shown = f"`{formatter._format_args(action, action.dest.upper())}`"
            names = f"{names} {shown}" if names else shown  # a positional has no option name
        meaning = formatter._expand_help(action) if action.help else ""
        if action.choices is not None:
            meaning += f"; one of {', '.join(f'`{c}`' for c in action.choices)}"
        rows.append(f"| {names} | {_cell(meaning)} |")
    return rows


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for group in parser._action_groups:
        if not any(not isinstance(a, argparse._HelpAction) for a in group._group_actions):
            continue
        title = group.title or ""
        if title == "positional arguments":
            title = "arguments"
        if title not in {"", "options"} or (title == "options" and lines):
            lines += ["", f"**{title[0].upper()}{title[1:]}**", ""]
        lines += _option_table(parser, group._group_actions)
    return lines


def cli_reference() -> str:
    """The Markdown of the CLI reference: every command, its usage and its options."""
    parser = _parser()
    lines = [
        parser.description or "",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
    ]
    for name, sub in _subcommands(parser).items():
        lines += [
            "",
            f"## {PROG} {name}",
            "",
            sub.description or "",
            "",
            "```text",
            sub.format_usage().strip(),
            "```",
            "",
            *_options(sub),
        ]
    return "\n".join(lines) + "\n"
