"""What every row shares: its settings, the event it sends, and how a row says "not here"."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from fluxgate_async import AiEventMetadata, AiEventUsage, FluxGate, LLMEvent
from fluxgate_async._transport import USER_AGENT

API_KEY = "bench-key"

EVENT = LLMEvent(
    AiEventUsage(
        input_tokens=1200,
        output_tokens=300,
        cached_tokens=200,
        model="gpt-4o",
        provider="openai",
        latency_in_ms=830.5,
    ),
    metadata=AiEventMetadata(feature="chat", user="user-123", session_id="session-456"),
)

REFERENCE_HEADERS = {
    "Content-Type": "application/json",
    "Authorization": f"Bearer {API_KEY}",
    "User-Agent": USER_AGENT,
    "Idempotency-Key": "00000000-0000-4000-8000-000000000000",
}
"""What the bare aiohttp reference sends: the client's headers, with one constant key."""
"""A typical event: full usage, a feature, a user and a session."""


@dataclass(frozen=True)
class Settings:
    """What a row needs to run: where the loopback server is, and how long to measure."""

    base_url: str
    """`http://127.0.0.1:<port>` of the benchmark server (see `_server`)."""
    quick: bool = False
    """Tiny counts: checks that a row still runs, measures nothing worth reading."""
    rounds: int = 5
    """Client and reference runs alternate this many times; the medians are compared."""

    @property
    def events_url(self) -> str:
        """The events endpoint, to pass as `FluxGate(endpoint=...)`."""
        return f"{self.base_url}/api/events"

    def count(self, full: int, quick: int) -> int:
        """`full`, or `quick` in quick mode."""
        return quick if self.quick else full


def background_client(endpoint: str, **options: Any) -> Any:
    """A `FluxGate` for the background rows, after `require`-ing their API.

    Typed `Any` because these rows use options and methods of background
    delivery, which a build without it does not have: the rows check at run time
    (`require`) and print n/a instead.
    """
    require(FluxGate, "record_event_nowait", "flush")
    return FluxGate(API_KEY, endpoint=endpoint, **options)


class UnavailableError(Exception):
    """The API a row measures is not in this build: the row prints n/a."""


def require(obj: object, *names: str) -> None:
    """Raise `UnavailableError` unless `obj` has every attribute in `names`."""
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise UnavailableError(", ".join(missing))


def optional_import(name: str) -> ModuleType:
    """Import `name`, or raise `UnavailableError` if it (or what it needs) is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UnavailableError(f"{name}: {exc}") from None
