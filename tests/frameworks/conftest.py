"""The loopback OpenAI API and its untracked client, as the integration tests have them."""

from ..integrations.conftest import raw, server

__all__ = ["raw", "server"]
