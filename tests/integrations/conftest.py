"""Fixtures for the provider wrappers."""

from __future__ import annotations

import pytest

from fluxgate_async._recording import Mode


@pytest.fixture(params=["background", "inline"])
def mode(request: pytest.FixtureRequest) -> Mode:
    """Each test taking `mode` runs once per tracking mode."""
    mode: Mode = request.param
    return mode
