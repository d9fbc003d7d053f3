"""Pricing from genai-prices: known models priced, unknown ones said so."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxgate_async import AiEventUsage
from fluxgate_async.collector import PRICED, UNKNOWN_MODEL, MissingExtraError, price_usage
from fluxgate_async.collector._pricing import PriceCache, load_prices, require


@pytest.mark.parametrize(
    ("provider", "model", "cost"),
    [
        ("openai", "gpt-4o", (1000 * 2.5 + 500 * 10) / 1e6),
        ("anthropic", "claude-sonnet-4-5", (1000 * 3 + 500 * 15) / 1e6),
        (None, "gpt-4o", (1000 * 2.5 + 500 * 10) / 1e6),
        ("my-proxy", "gpt-4o", (1000 * 2.5 + 500 * 10) / 1e6),
    ],
)
def test_known_models_are_priced(provider: str | None, model: str, cost: float) -> None:
    """A known model is priced, with or without a (known) provider."""
    price = price_usage(AiEventUsage(1000, 500, model=model, provider=provider))
    assert price.status == PRICED
    assert price.cost == pytest.approx(cost)
    assert price.detail == ""


def test_cached_tokens_over_input_are_capped() -> None:
    """More cached than input tokens is priced as all input cached, not refused."""
    price = price_usage(AiEventUsage(100, 0, cached_tokens=500, model="gpt-4o", provider="openai"))
    assert price.cost == pytest.approx(100 * 1.25 / 1e6)


@pytest.mark.parametrize(
    ("provider", "model", "detail"),
    [
        ("acme", "acme-7b", "no price known for model 'acme-7b' (provider 'acme')"),
        (None, "acme-7b", "no price known for model 'acme-7b'"),
        ("openai", None, "the event names no model"),
    ],
)
def test_unknown_models_have_no_cost(provider: str | None, model: str | None, detail: str) -> None:
    """An unknown or missing model gets cost None, status UNKNOWN_MODEL and the reason."""
    price = price_usage(AiEventUsage(10, 10, model=model, provider=provider))
    assert (price.cost, price.status, price.detail) == (None, UNKNOWN_MODEL, detail)


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the package, the error names it and the extra to install."""
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'fluxgate-async\[collector\]'"):
        require("rich")


_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),  # dearer above 200,000 input tokens
    ("google", "gemini-2.5-pro"),  # likewise
    ("google", "gemini-2.5-flash"),
    ("my-proxy", "gpt-4o"),
    (None, "claude-haiku-5-5"),
]


def _genai_prices(usage: AiEventUsage) -> float:
    """What genai-prices itself says, with no cache in between."""
    assert usage.model is not None
    cached = min(usage.cached_tokens or 0, usage.input_tokens)
    calc = load_prices()
    args = (usage.input_tokens, usage.output_tokens, cached, usage.model)
    try:
        return float(calc(*args, usage.provider).total_price)
    except LookupError:
        return float(calc(*args, None).total_price)


@settings(max_examples=400, deadline=None)
@given(
    model=st.sampled_from(_MODELS),
    input_tokens=st.one_of(
        st.integers(0, 5_000_000), st.sampled_from([0, 1, 100_000, 100_001, 200_000, 200_001])
    ),
    output_tokens=st.integers(0, 200_000),
    cached_tokens=st.one_of(st.none(), st.integers(0, 5_000_000)),
)
def test_cached_prices_are_exactly_genai_prices(
    model: tuple[str | None, str], input_tokens: int, output_tokens: int, cached_tokens: int | None
) -> None:
    """The cached price is genai-prices' to the last bit, on both sides of every tier."""
    provider, name = model
    usage = AiEventUsage(
        input_tokens, output_tokens, cached_tokens=cached_tokens, model=name, provider=provider
    )
    assert price_usage(usage).cost == _genai_prices(usage)


class _CountingCalc:
    """genai-prices' calculation, counting how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0
        self._calc = load_prices()

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self._calc(*args)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> _CountingCalc:
    """genai-prices' calculation, counted, as the price cache sees it."""
    calc = _CountingCalc()
    monkeypatch.setattr("fluxgate_async.collector._pricing.load_prices", lambda: calc)
    return calc


def test_a_model_is_looked_up_once_then_priced_from_the_cache(counting: _CountingCalc) -> None:
    """After the first event of a model, the next ones never call genai-prices."""
    cache = PriceCache()
    first = cache.price(AiEventUsage(1000, 500, model="gpt-4o", provider="openai"))
    looked_up = counting.calls
    assert looked_up > 0
    again = [
        cache.price(AiEventUsage(n, 2 * n, model="gpt-4o", provider="openai")) for n in range(50)
    ]
    unknown = [cache.price(AiEventUsage(1, 1, model="acme-7b", provider="acme")) for _ in range(3)]
    assert counting.calls == looked_up + 2  # acme-7b: once as given, once among all providers
    assert first.cost == pytest.approx((1000 * 2.5 + 500 * 10) / 1e6)
    assert again[10].cost == pytest.approx((10 * 2.5 + 20 * 10) / 1e6)
    assert {p.status for p in unknown} == {UNKNOWN_MODEL}


def test_entries_expire_and_the_least_recently_used_go_first(
    counting: _CountingCalc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its TTL an entry is looked up again; past its size the oldest entry is dropped."""
    clock = [1000.0]
    monkeypatch.setattr("fluxgate_async.collector._pricing.time.monotonic", lambda: clock[0])
    cache = PriceCache(size=2, ttl=60)

    def lookups(model: str) -> int:
        before = counting.calls
        cache.price(AiEventUsage(10, 10, model=model, provider="openai"))
        return counting.calls - before

    assert lookups("gpt-4o") > 0
    assert lookups("gpt-4o") == 0
    clock[0] += 61
    assert lookups("gpt-4o") > 0
    assert lookups("gpt-4o-mini") > 0
    assert lookups("gpt-4o") == 0  # gpt-4o is now the most recently used
    assert lookups("gpt-4.1") > 0  # evicts gpt-4o-mini
    assert lookups("gpt-4o") == 0
    assert lookups("gpt-4o-mini") > 0


@attrs.frozen
class _Calculation:
    total_price: Decimal
    model_price: object


def test_a_price_that_is_not_linear_is_always_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A price table whose cost is not linear in the tokens is never reproduced from a cache."""
    tiered = load_prices()(0, 0, 0, "claude-sonnet-4-5", "anthropic").model_price

    def curved(input_tokens: int, output_tokens: int, cached: int, *_: Any) -> _Calculation:
        return _Calculation(Decimal(input_tokens**2 + output_tokens + cached), tiered)

    monkeypatch.setattr("fluxgate_async.collector._pricing.load_prices", lambda: curved)
    cache = PriceCache()
    for input_tokens in (0, 1, 5, 200_000, 200_001, 3_000_000):
        usage = AiEventUsage(input_tokens, 2, model="curved", provider="anthropic")
        assert cache.price(usage).cost == float(input_tokens**2 + 2)
