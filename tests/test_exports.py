"""The public surface: exported names and the version."""

from __future__ import annotations

from importlib.metadata import version
from types import ModuleType

import fluxgate_async


def test_all_lists_exactly_the_public_names() -> None:
    """`__all__` is sorted and names every public attribute, nothing private."""
    public = {
        name
        for name, value in vars(fluxgate_async).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)  # subpackages
    }
    assert set(fluxgate_async.__all__) - {"__version__"} == public
    assert sorted(fluxgate_async.__all__) == fluxgate_async.__all__


def test_version_is_the_installed_distribution_version() -> None:
    """`__version__` is read from the package metadata."""
    assert fluxgate_async.__version__ == version("fluxgate-async")


def test_every_public_name_has_a_docstring() -> None:
    """Every exported name documents itself, for the reference docs."""
    for name in fluxgate_async.__all__:
        if name != "__version__":
            assert getattr(fluxgate_async, name).__doc__, name
