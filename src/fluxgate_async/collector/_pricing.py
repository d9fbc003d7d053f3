"""What an event cost, from the `genai-prices` tables: provider, model and tokens."""

from __future__ import annotations

import bisect
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs

from .._extras import MissingExtraError, require_extra
from .._models import AiEventUsage

__all__ = [
    "PRICED",
    "UNKNOWN_MODEL",
    "MissingExtraError",
    "Price",
    "PriceCache",
    "load_prices",
    "price_usage",
]

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

    Returns:
        `calc(input_tokens, output_tokens, cached_tokens, model, provider)`, genai-prices'
        own calculation (`PriceCalculation`), uncached.

    Raises:
        MissingExtraError: `genai-prices` is not installed.
    """
    prices = require("genai_prices", needed_by="the local collector, to price events,")

    def calc(
        input_tokens: int, output_tokens: int, cached: int, model: str, provider: str | None
    ) -> Any:
        tokens = prices.Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cached or None,
        )
        return prices.calc_price(tokens, model, provider_id=provider)

    return calc


PRICE_CACHE_SIZE = 1024
"""Most (provider, model) pairs whose prices are kept; the least recently used go first."""
PRICE_CACHE_TTL = 3600.0
"""Seconds a model's looked-up prices are reused: a price that changes on a date applies
within this long."""


@attrs.frozen
class _Linear:
    """Exact cost within one price tier: affine in the three token counts.

    Derived from genai-prices' own answers at a few points and checked at others,
    so it is that calculation, without its per-call work (about 60 µs).
    """

    at: Decimal
    from_input: int
    per_input: Decimal
    per_output: Decimal
    per_cached: Decimal

    def cost(self, input_tokens: int, output_tokens: int, cached: int) -> Decimal:
        return (
            self.at
            + self.per_input * (input_tokens - self.from_input)
            + self.per_output * output_tokens
            + self.per_cached * cached
        )


@attrs.define
class _ModelPrices:
    """What is known of one (provider, model): where genai-prices finds it, and its tiers."""

    provider: str | None
    """The provider to ask genai-prices for: the event's, or None when only the model is known."""
    thresholds: list[int]
    """Input token counts above which a dearer tier applies."""
    tiers: dict[int, _Linear | None] = attrs.Factory(dict)
    """Per tier, its exact linear cost, or None where that does not reproduce genai-prices."""


def _total(calculation: Any) -> Decimal:
    total: Decimal = calculation.total_price
    return total


class PriceCache:
    """Prices events like genai-prices, looking up each (provider, model) once per TTL.

    An unknown model is remembered as unknown for as long.

    Args:
        size: Most (provider, model) pairs kept.
        ttl: Seconds an entry is reused.
    """

    def __init__(self, size: int = PRICE_CACHE_SIZE, ttl: float = PRICE_CACHE_TTL) -> None:
        self._size = size
        self._ttl = ttl
        self._entries: OrderedDict[tuple[str | None, str], _ModelPrices | None] = OrderedDict()
        self._expiry: dict[tuple[str | None, str], float] = {}

    def price(self, usage: AiEventUsage) -> Price:
        """Price `usage`; see `price_usage`."""
        if not usage.model:
            return Price(None, UNKNOWN_MODEL, "the event names no model")
        entry = self._entry(usage.provider, usage.model)
        if entry is None:
            where = f" (provider {usage.provider!r})" if usage.provider else ""
            return Price(None, UNKNOWN_MODEL, f"no price known for model {usage.model!r}{where}")
        # inputTokens counts every prompt token, cached ones included (OpenAI's and
        # Gemini's convention); a larger cached count cannot be priced as such.
        cached = min(usage.cached_tokens or 0, usage.input_tokens)
        tier = bisect.bisect_left(entry.thresholds, usage.input_tokens)
        if tier not in entry.tiers:
            entry.tiers[tier] = self._linear(entry, usage.model, tier)
        linear = entry.tiers[tier]
        if linear is None:
            calc = load_prices()
            total = _total(
                calc(usage.input_tokens, usage.output_tokens, cached, usage.model, entry.provider)
            )
        else:
            total = linear.cost(usage.input_tokens, usage.output_tokens, cached)
        return Price(float(total), PRICED)

    def _entry(self, provider: str | None, model: str) -> _ModelPrices | None:
        key = (provider, model)
        now = time.monotonic()
        if key in self._entries and self._expiry[key] > now:
            self._entries.move_to_end(key)
            return self._entries[key]
        entry = self._look_up(provider, model)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self._expiry[key] = now + self._ttl
        while len(self._entries) > self._size:
            oldest, _ = self._entries.popitem(last=False)
            del self._expiry[oldest]
        return entry

    @staticmethod
    def _look_up(provider: str | None, model: str) -> _ModelPrices | None:
        calc = load_prices()
        tiered = require("genai_prices.types").TieredPrices
        # An unknown provider falls back to finding the model among all providers.
        for candidate in (provider, None) if provider is not None else (None,):
            try:
                calculation = calc(0, 0, 0, model, candidate)
            except LookupError:
                continue
            starts = {
                tier.start
                for value in vars(calculation.model_price).values()
                if isinstance(value, tiered)
                for tier in value.tiers
            }
            return _ModelPrices(candidate, sorted(int(start) for start in starts))
        return None

    @staticmethod
    def _linear(entry: _ModelPrices, model: str, tier: int) -> _Linear | None:
        calc = load_prices()

        def exact(input_tokens: int, output_tokens: int, cached: int) -> Decimal:
            return _total(calc(input_tokens, output_tokens, cached, model, entry.provider))

        # Tier k covers input counts in (thresholds[k-1], thresholds[k]].
        low = entry.thresholds[tier - 1] + 1 if tier else 0
        high = entry.thresholds[tier] if tier < len(entry.thresholds) else low + 10**9
        start = max(low, 1)
        if start + 1 > high:
            return None
        at = exact(start, 0, 0)
        linear = _Linear(
            at=at,
            from_input=start,
            per_input=exact(start + 1, 0, 0) - at,
            per_output=exact(start, 1, 0) - at,
            per_cached=exact(start, 0, 1) - at,
        )
        checks = [(start, 7919, 1), (high, 104_729, high // 3), ((start + high) // 2, 3, 0)]
        if all(linear.cost(*point) == exact(*point) for point in checks):
            return linear
        return None


_PRICES = PriceCache()


def price_usage(usage: AiEventUsage) -> Price:
    """Price `usage` from its provider, model and token counts.

    An unknown provider falls back to finding the model among all providers;
    an unknown or missing model gives `cost=None` and status `UNKNOWN_MODEL`.
    Each (provider, model) is looked up once an hour (`PRICE_CACHE_TTL`).

    Example:
        >>> price_usage(AiEventUsage(1000, 0, model="no-such-model")).status
        'UNKNOWN_MODEL'
    """
    return _PRICES.price(usage)
