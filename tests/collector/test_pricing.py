"""Pricing from genai-prices: known models priced, unknown ones said so."""

from __future__ import annotations

import sys

import pytest

from fluxgate_async import AiEventUsage
from fluxgate_async.collector import PRICED, UNKNOWN_MODEL, MissingExtraError, price_usage
from fluxgate_async.collector._pricing import require


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
