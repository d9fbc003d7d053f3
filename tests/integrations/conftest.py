"""Fixtures for the provider wrappers."""

from __future__ import annotations

import pytest



@pytest.fixture(params=["background", "inline"])
def mode(request: pytest.FixtureRequest) -> str:
    """Each test taking `mode` runs once per tracking mode."""
    return str(request.param)
