"""Which of the collector's API keys a request proves it knows, without timing leaks."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

__all__ = ["matching_key"]


def matching_key(
    keys: Iterable[str], sent: str, proof: Callable[[str], str] = lambda key: key
) -> str | None:
    """The key among `keys` whose `proof` is `sent`, or None.

    `sent` is compared with every key's proof, in constant time each: the time
    taken says nothing about any key, nor about which one matched.

    Args:
        keys: The API keys the collector accepts.
        sent: What the request carries: a key, or something derived from one.
        proof: What a request knowing `key` sends; the key itself unless given.
    """
    # Header bytes that are not UTF-8 arrive as surrogates: they match no key, but must encode.
    candidate = sent.encode("utf-8", "surrogateescape")
    found = None
    for key in keys:
        if hmac.compare_digest(candidate, proof(key).encode()):
            found = key
    return found
