"""Each framework hook module imports its own framework only."""

from __future__ import annotations

import subprocess
import sys

HOOK = """
import sys
import fluxgate_async.integrations.otel
print(",".join(sorted(m for m in ("agents", "langchain_core", "litellm") if m in sys.modules)))
"""


def test_a_hook_module_imports_only_its_own_framework() -> None:
    """Importing the OpenTelemetry bridge loads no other framework."""
    result = subprocess.run(
        [sys.executable, "-c", HOOK], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
