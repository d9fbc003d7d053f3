"""The `fluxgate_async` logger: where every message goes, and the API keys it never shows.

Keys are masked by a filter on the logger itself, not by each call site, so a
message, an argument or a traceback that happens to contain a key (an
exception echoing a header, a server quoting the request) is masked too. Not
only the whole key: any piece of 8 or more of its characters, because text cut
at a byte limit can end in the middle of a key.
"""

from __future__ import annotations

import logging
import re
import sys

__all__ = ["hide_secret", "log", "quote", "scrub", "shorten", "show_debug_logs"]

log = logging.getLogger("fluxgate_async")

_MASK = "***"
# Shorter strings (test keys such as "k") would mask ordinary words all over
# the log; real API keys are far longer. It is also the shortest piece of a key
# that is masked.
_MIN_SECRET_LENGTH = 8
# A value quoted in a log line is cut to this many characters: enough to
# recognise it, not enough for a 50 MB value to become a 50 MB log line.
_QUOTE_CHARS = 300
# The last guard: no message the logger emits is longer than this.
_MESSAGE_CHARS = 4000
# `Authorization: <anything>` and `Bearer <token>`, wherever server text quotes them.
_CREDENTIALS = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?|bearer\s+)[^\s\"',;}]+"
)


def shorten(text: str, limit: int = _QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _shown(value: object) -> str:
    # repr() of a user's object may raise: the message must still be built.
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def quote(value: object) -> str:
    """`repr(value)`, cut to a few hundred characters, and safe when `__repr__` raises."""
    return shorten(_shown(value))


class _SecretFilter(logging.Filter):
    """Masks registered secrets, and any 8-character piece of them, in every record."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._pieces: re.Pattern[str] | None = None

    def add(self, secret: str) -> None:
        if secret in self._secrets:
            return
        self._secrets.add(secret)
        pieces = {
            secret[start : start + _MIN_SECRET_LENGTH]
            for secret in self._secrets
            for start in range(len(secret) - _MIN_SECRET_LENGTH + 1)
        }
        # A lookahead finds every position where a piece starts, overlapping
        # ones included, so that a longer piece is masked whole.
        alternatives = "|".join(re.escape(p) for p in sorted(pieces))
        self._pieces = re.compile(f"(?=({alternatives}))")

    def scrub(self, text: str) -> str:
        text = _CREDENTIALS.sub(lambda m: m[1] + _MASK, text)
        if self._pieces is None:
            return text
        spans: list[list[int]] = []
        for match in self._pieces.finditer(text):
            start, end = match.start(), match.start() + _MIN_SECRET_LENGTH
            if spans and start <= spans[-1][1]:
                spans[-1][1] = end
            else:
                spans.append([start, end])
        for start, end in reversed(spans):
            text = text[:start] + _MASK + text[end:]
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        # Runs only for records that pass the level check: nothing on the hot path.
        message = record.getMessage()
        masked = shorten(self.scrub(message), _MESSAGE_CHARS)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            masked = self.scrub(text)
            if masked != text:
                # Handlers that format exc_info themselves would show the key: give
                # them the masked text only.
                record.exc_text, record.exc_info = masked, None
        return True


_secrets = _SecretFilter()
log.addFilter(_secrets)


def hide_secret(secret: str) -> None:
    """Mask `secret`, and any piece of 8 or more of its characters, from now on.

    It applies to everything the `fluxgate_async` logger emits and to what
    `scrub` returns. Strings under 8 characters are not masked: they are test
    keys, and masking them would garble ordinary words.
    """
    if len(secret) >= _MIN_SECRET_LENGTH:
        _secrets.add(secret)


def scrub(text: str) -> str:
    """`text` with API keys, pieces of them and `Authorization`/`Bearer` values masked."""
    return _secrets.scrub(text)


_debug_handler: logging.Handler | None = None


def show_debug_logs() -> None:
    """Log at DEBUG, shown on stderr when the application configured no logging.

    `debug=True` promises visible output even in an app that configured no
    logging; an app that did configure logging keeps its own handlers.
    """
    global _debug_handler  # noqa: PLW0603 - one handler per process, installed once
    log.setLevel(logging.DEBUG)
    if _debug_handler is None and not log.hasHandlers():
        _debug_handler = logging.StreamHandler(sys.stderr)
        _debug_handler.setFormatter(logging.Formatter("[fluxgate] %(levelname)s %(message)s"))
        log.addHandler(_debug_handler)
