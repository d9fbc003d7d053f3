"""fluxgate-async: record LLM usage to FluxGate from asyncio code, without ever breaking your app.

Example:
    >>> import fluxgate_async
    >>> fluxgate_async.AiEventStatus.MAX_TOKENS.value
    'MAX_TOKENS'
"""

from importlib.metadata import version as _version

from ._attached_tracking import FluxGateCostTrackingResponse, tracking_of
from ._client import FluxGate
from ._config import FluxGateConfig
from ._manual_tracking import TrackedCall
from ._models import (
    AiEventMetadata,
    AiEventStatus,
    AiEventUsage,
    CreateAiEventResponse,
    LLMEvent,
    TrackedUser,
)
from ._stats import DeliveryStats, DropReason, FailureReason
from ._tracking_context import tracking_context

__version__ = _version("fluxgate-async")
"""The installed version of fluxgate-async."""

__all__ = [
    "AiEventMetadata",
    "AiEventStatus",
    "AiEventUsage",
    "CreateAiEventResponse",
    "DeliveryStats",
    "DropReason",
    "FailureReason",
    "FluxGate",
    "FluxGateConfig",
    "FluxGateCostTrackingResponse",
    "LLMEvent",
    "TrackedCall",
    "TrackedUser",
    "__version__",
    "tracking_context",
    "tracking_of",
]
