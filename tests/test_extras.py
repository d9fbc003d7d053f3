"""A feature whose extra is not installed says which extra to install."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fluxgate_async import FluxGate
from fluxgate_async._extras import MissingExtraError
from fluxgate_async.collector import Collector
from fluxgate_async.collector._pricing import load_prices
from fluxgate_async.integrations.anthropic import track_anthropic
from fluxgate_async.integrations.google import track_genai
from fluxgate_async.integrations.openai import track_openai


@pytest.mark.parametrize(
    ("module", "track", "message"),
    [
        (
            "openai",
            track_openai,
            "track_openai needs the 'openai' package: pip install 'fluxgate-async[openai]'",
        ),
        (
            "anthropic",
            track_anthropic,
            "track_anthropic needs the 'anthropic' package: "
            "pip install 'fluxgate-async[anthropic]'",
        ),
        (
            "google.genai",
            track_genai,
            "track_genai needs the 'google' package: pip install 'fluxgate-async[google]'",
        ),
    ],
)
def test_a_wrapper_without_its_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, track: Any, message: str
) -> None:
    """`track_openai` and friends, without their SDK, say which extra provides it."""
    monkeypatch.setitem(sys.modules, module, None)
    fg = FluxGate("key", endpoint="http://127.0.0.1:9/api/events")
    with pytest.raises(MissingExtraError) as info:
        track(object(), fg)
    assert str(info.value) == message
    assert isinstance(info.value, ImportError)


def test_the_collector_without_genai_prices_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`Collector` without genai-prices says it needs it to price events, and which extra."""
    monkeypatch.setitem(sys.modules, "genai_prices", None)
    load_prices.cache_clear()
    try:
        with pytest.raises(MissingExtraError) as info:
            Collector(tmp_path / "db.sqlite")
    finally:
        load_prices.cache_clear()
    assert str(info.value) == (
        "the local collector, to price events, needs the 'genai-prices' package: "
        "pip install 'fluxgate-async[collector]'"
    )
