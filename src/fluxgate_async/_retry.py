"""When to try a failed POST again, and how long to wait first."""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC, datetime

from ._config import BACKOFF_BASE, BACKOFF_CAP, MAX_RETRY_AFTER

__all__ = ["RETRYABLE_STATUSES", "backoff_delay", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses that say "not now" rather than "not this": worth another attempt."""


def backoff_delay(retry: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before retry number `retry` (0 for the first): full jitter.

    Full jitter (a uniform draw up to the exponential bound) spreads the retries
    of many clients that failed together, so they do not hit the server in waves.
    """
    return random.uniform(0.0, min(cap, base * 2.0**retry))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait, or `None` if absent or unreadable.

    Takes both forms of RFC 9110: delay-seconds and an HTTP date. A date in the
    past means "now" (0); longer waits are capped at `MAX_RETRY_AFTER` (60 s), so
    that an event is never held much longer than its own deadlines.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
