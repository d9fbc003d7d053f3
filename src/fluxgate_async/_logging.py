"""The `fluxgate_async` logger: where every message goes, and the API keys it never shows.

Keys are masked by a filter on the logger itself, not by each call site, so a
message, an argument or a traceback that happens to contain a key (an
exception echoing a header, a server quoting the request) is masked too.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["hide_secret", "log", "show_debug_logs"]

log = logging.getLogger("fluxgate_async")

_MASK = "***"
# Shorter strings (test keys such as "k") would mask ordinary words all over
# the log; real API keys are far longer.
_MIN_SECRET_LENGTH = 8


class _SecretFilter(logging.Filter):
    """Replaces each registered secret with `***` in a record's message and traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        # Runs only for records that pass the level check: nothing on the hot path.
        message = record.getMessage()
        masked = self._mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            masked = self._mask(text)
            if masked != text:
                # Handlers that format exc_info themselves would show the key: give
                # them the masked text only.
                record.exc_text, record.exc_info = masked, None
        return True


_secrets = _SecretFilter()
log.addFilter(_secrets)


def hide_secret(secret: str) -> None:
    """Mask `secret` in everything the `fluxgate_async` logger emits from now on.

    Strings under 8 characters are not masked: they are test keys, and masking
    them would garble ordinary words.
    """
    if len(secret) >= _MIN_SECRET_LENGTH:
        _secrets.secrets.add(secret)


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
