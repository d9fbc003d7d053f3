"""Optional dependencies: importing one, or saying which extra of the package provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(ImportError):
    """A feature needs a package of one of the package's extras, and it is not installed."""


def require_extra(module: str, *, extra: str, needed_by: str) -> ModuleType:
    """Import `module`, a dependency of the extra `extra` that `needed_by` uses.

    Raises:
        MissingExtraError: It is not installed; the message says what to install.

    Example:
        >>> require_extra("no_such_sdk", extra="nosuch", needed_by="track_nosuch")
        Traceback (most recent call last):
        ...
        fluxgate_async._extras.MissingExtraError: track_nosuch needs the 'no-such-sdk' package: pip install 'fluxgate-async[nosuch]'
    """  # noqa: E501 - a doctest's expected line cannot be wrapped
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0].replace("_", "-")
        msg = f"{needed_by} needs the {package!r} package: pip install 'fluxgate-async[{extra}]'"
        raise MissingExtraError(msg) from exc
