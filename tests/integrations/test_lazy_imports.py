"""The SDKs are optional: nothing imports them until a wrapper is called."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import fluxgate_async
import fluxgate_async.integrations.anthropic
import fluxgate_async.integrations.google
import fluxgate_async.integrations.openai
loaded = sorted(m for m in ("openai", "anthropic", "google.genai") if m in sys.modules)
print(",".join(loaded))
"""


def test_importing_the_package_and_the_integrations_imports_no_sdk() -> None:
    """`import fluxgate_async` and the integration modules work without any SDK loaded."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
