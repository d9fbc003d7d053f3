"""What an event cost, from the `genai-prices` tables: provider, model and tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs

from .._extras import MissingExtraError, require_extra
from .._models import AiEventUsage

__all__ = ["PRICED", "UNKNOWN_MODEL", "MissingExtraError", "Price", "load_prices", "price_usage"]

PRICED = "SUCCESS"
"""Answer status of an event that was priced."""
UNKNOWN_MODEL = "UNKNOWN_MODEL"
"""Answer status of an event whose model `genai-prices` does not know: its cost is `null`."""


@attrs.frozen
class Price:
    """The cost of one event, or why there is none.

    Attributes:
        cost: US dollars, or `None` when the model is unknown.
        status: `SUCCESS` when priced, else `UNKNOWN_MODEL`.
        detail: Why the event could not be priced; empty when it was.
    """

    cost: float | None
    status: str
    detail: str = ""


def require(module: str, needed_by: str = "this command") -> Any:
    """Import `module`, a dependency of the `collector` extra that `needed_by` uses.

    Raises:
        MissingExtraError: It is not installed; the message says how to install it.
    """
    return require_extra(module, extra="collector", needed_by=needed_by)


@functools.cache
def load_prices() -> Callable[..., Any]:
    """Import the price tables once; call at start-up so a missing extra fails early.

    Raises:
        MissingExtraError: `genai-prices` is not installed.
    """
    prices = require("genai_prices", needed_by="the local collector, to price events,")

    def calc(usage: AiEventUsage, model: str, provider: str | None) -> Any:
        # inputTokens counts every prompt token, cached ones included (OpenAI's and
        # Gemini's convention); a larger cached count cannot be priced as such.
        cached = min(usage.cached_tokens or 0, usage.input_tokens)
        tokens = prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=cached or None,
        )
        return prices.calc_price(tokens, model, provider_id=provider).total_price

    return calc


def price_usage(usage: AiEventUsage) -> Price:
    """Price `usage` from its provider, model and token counts.

    An unknown provider falls back to finding the model among all providers;
    an unknown or missing model gives `cost=None` and status `UNKNOWN_MODEL`.

    Example:
        >>> price_usage(AiEventUsage(1000, 0, model="no-such-model")).status
        'UNKNOWN_MODEL'
    """
    if not usage.model:
        return Price(None, UNKNOWN_MODEL, "the event names no model")
    calc = load_prices()
    try:
        try:
            total = calc(usage, usage.model, usage.provider)
        except LookupError:
            if usage.provider is None:
                raise
            total = calc(usage, usage.model, None)
    except LookupError:
        where = f" (provider {usage.provider!r})" if usage.provider else ""
        return Price(None, UNKNOWN_MODEL, f"no price known for model {usage.model!r}{where}")
    return Price(float(total), PRICED)
