"""fluxgate-async test suite."""
