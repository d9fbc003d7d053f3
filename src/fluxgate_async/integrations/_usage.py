"""Reading token counts off the SDKs' usage objects, which any field of may lack."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["count", "extra_counts"]


def count(obj: Any, *path: str) -> int | None:
    """The non-negative int at `obj.path[0].path[1]...`, or `None` if any step is missing.

    OpenAI-compatible hosts fill usage objects loosely (missing details, `null`
    counts, floats); a value that is not a count reads as missing.

    Example:
        >>> count(None, "prompt_tokens") is None
        True
    """
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    if (
        isinstance(obj, bool)
        or not isinstance(obj, int | float)
        or not math.isfinite(obj)
        or obj < 0
    ):
        return None
    return int(obj)


def extra_counts(**counts: int | None) -> dict[str, Any]:
    """The counts that are known and non-zero, for the event's metadata."""
    return {key: value for key, value in counts.items() if value}
