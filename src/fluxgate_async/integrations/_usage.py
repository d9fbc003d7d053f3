"""Reading token counts off the SDKs' usage objects, which any field of may lack.

An SDK types only the usage fields it knew when it was released; newer ones
reach older SDKs as plain dicts (openai and anthropic keep unknown fields as
they came), so every step of a path reads an attribute or a key alike.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["count", "count_parent", "extra_counts"]


def count(obj: Any, *path: str) -> int | None:
    """The non-negative int at `obj.path[0].path[1]...`, or `None` if any step is missing.

    Each step reads an attribute, or a key of a dict (a field the SDK does not
    type yet). OpenAI-compatible hosts fill usage objects loosely (missing
    details, `null` counts, floats); a value that is not a count reads as missing.

    Example:
        >>> count({"details": {"cached_tokens": 3}}, "details", "cached_tokens")
        3
        >>> count(None, "prompt_tokens") is None
        True
    """
    for name in path:
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if obj is None:
            return None
    if type(obj) is int:  # what the SDKs give: the checks below, for that type alone
        return obj if obj >= 0 else None
    if (
        isinstance(obj, bool)
        or not isinstance(obj, int | float)
        or not math.isfinite(obj)
        or obj < 0
    ):
        return None
    return int(obj)


def count_parent(obj: Any, name: str) -> Any:
    """`obj.name`, or `obj[name]` for a dict: one step of a `count` path, read once for several.

    Example:
        >>> count_parent({"details": {"cached_tokens": 3}}, "details")
        {'cached_tokens': 3}
    """
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def extra_counts(**counts: int | None) -> dict[str, Any]:
    """The counts that are known and non-zero, for the event's metadata."""
    return {key: value for key, value in counts.items() if value}
