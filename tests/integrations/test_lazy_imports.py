"""The SDKs and frameworks are optional: nothing imports them until it is used."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = (
    "openai",
    "anthropic",
    "google.genai",
    "opentelemetry",
    "agents",
    "langchain_core",
    "litellm",
    "pydantic_ai",
)

CHECK = f"""
import sys
import fluxgate_async
import fluxgate_async.integrations.anthropic
import fluxgate_async.integrations.google
import fluxgate_async.integrations.openai
loaded = sorted(m for m in {OPTIONAL!r} if m in sys.modules)
print(",".join(loaded))
"""


def test_importing_the_package_and_the_integrations_imports_no_sdk() -> None:
    """`import fluxgate_async` and the wrapper modules work without any SDK or framework loaded."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
