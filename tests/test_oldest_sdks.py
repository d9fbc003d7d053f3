"""The oldest SDK versions the integration tests run on are the minimums users are promised."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parent.parent
SDK_EXTRAS = ("openai", "anthropic", "google")


def test_constraints_pin_each_sdk_extra_to_its_minimum() -> None:
    """tests/constraints-oldest.txt pins exactly the minimum of each SDK extra in pyproject.toml."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    minimums: dict[str, Version] = {}
    for extra in SDK_EXTRAS:
        [requirement] = (Requirement(text) for text in extras[extra])
        [bound] = requirement.specifier
        assert bound.operator == ">=", requirement
        minimums[requirement.name] = Version(bound.version)
    pins: dict[str, Version] = {}
    for line in (ROOT / "tests" / "constraints-oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            [bound] = pin.specifier
            assert bound.operator == "==", line
            pins[pin.name] = Version(bound.version)
    assert pins == minimums
