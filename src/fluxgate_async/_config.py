"""Settings: the defaults, the environment variables, and their resolution.

Every default lives here as a named constant, so that the docs, the client and
the tests read the same number.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from yarl import URL

if TYPE_CHECKING:
    from ._models import LLMEvent
    from ._wire import EventInput

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_OUTBOX_MAX_AGE",
    "DEFAULT_OUTBOX_MAX_BYTES",
    "DEFAULT_OUTBOX_MAX_EVENTS",
    "DEFAULT_TIMEOUT",
    "ENV_API_KEY",
    "ENV_ENABLED",
    "ENV_ENDPOINT",
    "ENV_OUTBOX",
    "FluxGateConfig",
]

log = logging.getLogger("fluxgate_async")

DEFAULT_ENDPOINT = "https://fluxgate.app/api/events"
"""Where events go unless `endpoint` or `FLUXGATE_ENDPOINT` says otherwise."""
DEFAULT_TIMEOUT = 5.0
"""Seconds one `record_event` call may take, retries included."""
DEFAULT_MAX_RETRIES = 2
"""Further attempts after the first, on connection errors and retryable statuses."""
DEFAULT_MAX_QUEUE_SIZE = 10_000
"""Events `record_event_nowait` may hold while they wait to be sent."""
DEFAULT_CONCURRENCY = 8
"""Background POSTs in flight at once."""
DEFAULT_CLOSE_TIMEOUT = 5.0
"""Seconds `aclose()` spends delivering what is queued before dropping the rest."""
ENV_API_KEY = "FLUXGATE_API_KEY"
"""Environment variable read when no `api_key` is given."""
ENV_ENDPOINT = "FLUXGATE_ENDPOINT"
"""Environment variable read when no `endpoint` is given."""
ENV_ENABLED = "FLUXGATE_ENABLED"
"""Environment variable read when `enabled` is not given: `0`, `false`, `no` or `off` disable."""
_FALSY = frozenset({"0", "false", "no", "off"})
ENV_OUTBOX = "FLUXGATE_OUTBOX"
"""Environment variable read when no `outbox` is given: the outbox directory."""
DEFAULT_OUTBOX_MAX_EVENTS = 1_000_000
"""Events an outbox may hold, all the clients sharing it together."""
DEFAULT_OUTBOX_MAX_BYTES = 1024 * 1024 * 1024
"""Bytes of events an outbox may hold (1 GiB), all the clients sharing it together."""
DEFAULT_OUTBOX_MAX_AGE = 7 * 24 * 3600.0
"""Seconds an event may wait in an outbox (a week) before it is dropped unsent (`expired`)."""

MAX_RESPONSE_BYTES = 64 * 1024
"""An answer larger than this is not read: the API's is a few hundred bytes."""
BACKOFF_BASE = 0.25
"""Seconds: the first retry waits up to this long, each further one twice as long."""
BACKOFF_CAP = 8.0
"""Seconds: the most any single backoff may wait."""
MAX_RETRY_AFTER = 60.0
"""Seconds: the most a `Retry-After` answer makes an event wait before its next attempt."""
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
"""Bytes: the largest encoded event sent; a larger one is refused, naming its biggest field."""


def _mask(_: str) -> str:
    return "'***'"


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine, so plain HTTP does not leave it."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@attrs.frozen
class FluxGateConfig:
    """The client's resolved settings, as `FluxGate.config` shows them.

    The API key is kept but never shown: the repr prints `'***'` in its place.
    """

    api_key: str = attrs.field(repr=_mask)
    endpoint: str
    timeout: float
    max_retries: int
    debug: bool
    enabled: bool = True
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    concurrency: int = DEFAULT_CONCURRENCY
    before_send: Callable[[LLMEvent], LLMEvent | None] | None = None
    on_error: Callable[[EventInput, str], object] | None = None
    outbox: str | None = None
    outbox_max_events: int = DEFAULT_OUTBOX_MAX_EVENTS
    outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES
    outbox_max_age: float = DEFAULT_OUTBOX_MAX_AGE

    @classmethod
    def resolve(
        cls,
        *,
        api_key: str | None,
        endpoint: str | None,
        timeout: float,
        max_retries: int,
        debug: bool,
        enabled: bool | None = None,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        concurrency: int = DEFAULT_CONCURRENCY,
        before_send: Callable[[LLMEvent], LLMEvent | None] | None = None,
        on_error: Callable[[EventInput, str], object] | None = None,
        outbox: str | os.PathLike[str] | None = None,
        outbox_max_events: int = DEFAULT_OUTBOX_MAX_EVENTS,
        outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES,
        outbox_max_age: float = DEFAULT_OUTBOX_MAX_AGE,
    ) -> FluxGateConfig:
        """Fill in from the environment and defaults, and check every setting.

        Raises:
            ValueError, TypeError: A setting is missing or invalid; the message names it.
        """
        key: object = api_key if api_key is not None else os.environ.get(ENV_API_KEY, "")
        if not isinstance(key, str):
            msg = f"api_key must be a str, got {type(key).__name__}"
            raise TypeError(msg)
        if not key.strip():
            msg = f"FluxGate requires an api_key (pass api_key= or set {ENV_API_KEY})"
            raise ValueError(msg)
        if any(char.isspace() or not char.isprintable() for char in key):
            # It could not be sent as a header, and the error would quote it.
            msg = "api_key must not contain spaces, newlines or other control characters"
            raise ValueError(msg)
        url = endpoint or os.environ.get(ENV_ENDPOINT) or DEFAULT_ENDPOINT
        _check_endpoint(url)
        _check_positive("timeout", timeout)
        _check_count("max_retries", max_retries, minimum=0)
        _check_count("max_queue_size", max_queue_size, minimum=1)
        _check_count("max_event_bytes", max_event_bytes, minimum=1)
        _check_count("concurrency", concurrency, minimum=1)
        _check_count("outbox_max_events", outbox_max_events, minimum=1)
        _check_count("outbox_max_bytes", outbox_max_bytes, minimum=1)
        _check_positive("outbox_max_age", outbox_max_age)
        directory = _outbox_path(outbox)
        hooks: tuple[tuple[str, object], ...] = (
            ("before_send", before_send),
            ("on_error", on_error),
        )
        for name, hook in hooks:
            if hook is not None and not callable(hook):
                msg = f"{name} must be callable, got {type(hook).__name__}"
                raise TypeError(msg)
        if enabled is None:
            enabled = os.environ.get(ENV_ENABLED, "1").strip().lower() not in _FALSY
        return cls(
            api_key=key,
            endpoint=url,
            timeout=float(timeout),
            max_retries=max_retries,
            debug=bool(debug),
            enabled=bool(enabled),
            max_queue_size=max_queue_size,
            max_event_bytes=max_event_bytes,
            concurrency=concurrency,
            before_send=before_send,
            on_error=on_error,
            outbox=directory,
            outbox_max_events=outbox_max_events,
            outbox_max_bytes=outbox_max_bytes,
            outbox_max_age=float(outbox_max_age),
        )


def _outbox_path(outbox: object) -> str | None:
    if outbox is None:
        outbox = os.environ.get(ENV_OUTBOX) or None
        if outbox is None:
            return None
    if not isinstance(outbox, str | os.PathLike):
        msg = f"outbox must be a directory path (str or os.PathLike), got {type(outbox).__name__}"
        raise TypeError(msg)
    path = os.fspath(outbox)
    if not isinstance(path, str) or not path.strip():
        msg = f"outbox must be a non-empty directory path, got {outbox!r}"
        raise ValueError(msg)
    if not hasattr(os, "register_at_fork"):
        msg = "outbox needs a POSIX system (Linux, macOS): it locks files with flock"
        raise ValueError(msg)
    return path


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        msg = f"{name} must be a {kind} int, got {value!r}"
        raise ValueError(msg)


def _check_positive(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        msg = f"{name} must be a positive number of seconds, got {value!r}"
        raise ValueError(msg)


def _check_endpoint(endpoint: str) -> None:
    try:
        url = URL(endpoint)
    except (TypeError, ValueError) as exc:
        msg = f"endpoint is not a valid URL: {endpoint!r}"
        raise ValueError(msg) from exc
    if url.scheme not in ("http", "https") or not url.host:
        msg = f"endpoint must be an http:// or https:// URL, got {endpoint!r}"
        raise ValueError(msg)
    if url.scheme == "http" and not is_loopback(url.host):
        log.warning(
            "FluxGate endpoint %s is plain http:// to another host: the API key "
            "will cross the network unencrypted; use https://",
            url.with_query(None).with_user(None),
        )
