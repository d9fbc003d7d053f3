"""MkDocs hook: render the SDK coverage tables where a page says `<!-- sdk-coverage -->`."""

from __future__ import annotations

from typing import Any

from fluxgate_async.integrations._coverage import markdown

MARKER = "<!-- sdk-coverage -->"


def on_page_markdown(text: str, **_: Any) -> str:
    """Replace the marker with the tables, generated from `fluxgate_async.integrations`."""
    return text.replace(MARKER, markdown()) if MARKER in text else text
