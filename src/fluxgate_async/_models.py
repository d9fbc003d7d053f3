"""What a usage event *is*: attrs value types, validated when they are built.

How an event looks on the wire (camelCase keys, the two status forms) is not
said here but in `_wire`, so the models stay plain Python.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from ._encoding import InvalidEventError, size_bound
from ._logging import quote

__all__ = [
    "AiEventMetadata",
    "AiEventStatus",
    "AiEventUsage",
    "CreateAiEventResponse",
    "LLMEvent",
    "TrackedUser",
]


class AiEventStatus(enum.StrEnum):
    """The outcome of an LLM call, as FluxGate prices and reports it.

    A plain string with one of these values is accepted wherever a status is.
    """

    SUCCESS = "SUCCESS"
    """The call completed normally."""
    ERROR = "ERROR"
    """The call failed (network, provider error, cancellation)."""
    BLOCKED = "BLOCKED"
    """The provider refused the prompt or the answer (safety, refusal)."""
    MAX_TOKENS = "MAX_TOKENS"
    """The answer was cut at the output token limit."""
    CONTENT_FILTER = "CONTENT_FILTER"
    """The answer was withheld or cut by a content filter."""
    RECITATION = "RECITATION"
    """The answer was stopped for reciting training data."""
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    """The provider rejected the request itself (a 400-class error)."""


def _owner(inst: object) -> str:
    return type(inst).__name__


# Each field's own check, called as an attrs validator would be: `check(inst, attribute, value)`.
# The models do not run them one by one on every construction (a Python call per field was
# most of the cost of building an event, on the hot path of recording one): each model tests
# its common valid values in one expression, and only a value that fails that test is looked
# at field by field, in field order, so that the first wrong field raises its own message.
_CHECK = "fluxgate_check"


def _checked(check: Callable[[Any, attrs.Attribute[Any], Any], None]) -> dict[str, Any]:
    return {_CHECK: check}


def _check_each(inst: attrs.AttrsInstance) -> None:
    for field in attrs.fields(type(inst)):
        field.metadata[_CHECK](inst, field, getattr(inst, field.name))


def _check_str(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        msg = f"{_owner(inst)}.{attribute.name} must be a str, got {type(value).__name__}"
        raise TypeError(msg)


def _check_optional_str(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_str(inst, attribute, value)


# Token counts are stored as 64-bit integers.
_MAX_TOKENS = 2**63 - 1
_INFINITY = math.inf


def _plain_duration(value: object) -> bool:
    """Whether `value` is a duration `_check_duration` accepts, by the quick test."""
    kind = type(value)
    return (kind is float and 0.0 <= value < _INFINITY) or (  # type: ignore[operator]
        kind is int and 0 <= value <= _MAX_TOKENS  # type: ignore[operator]
    )


def _check_token_count(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # bool is an int subclass; `True` tokens is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int):
        msg = (
            f"{_owner(inst)}.{attribute.name} must be a non-negative int, "
            f"got {type(value).__name__}"
        )
        raise TypeError(msg)
    if value < 0:
        msg = f"{_owner(inst)}.{attribute.name} must be a non-negative int, got {value}"
        raise ValueError(msg)
    if value > _MAX_TOKENS:
        msg = (
            f"{_owner(inst)}.{attribute.name} must be below 2**63, "
            f"got an int of {value.bit_length()} bits"
        )
        raise ValueError(msg)


def _check_optional_token_count(
    inst: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None:
        _check_token_count(inst, attribute, value)


def _check_duration(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = (
            f"{_owner(inst)}.{attribute.name} must be a non-negative number, "
            f"got {type(value).__name__}"
        )
        raise TypeError(msg)
    if not math.isfinite(value) or value < 0:
        msg = f"{_owner(inst)}.{attribute.name} must be a non-negative finite number, got {value}"
        raise ValueError(msg)


def _check_optional_bool(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        msg = f"{_owner(inst)}.{attribute.name} must be a bool, got {type(value).__name__}"
        raise TypeError(msg)


@attrs.frozen
class TrackedUser:
    """The end user an LLM call was made for, when more than an id is known.

    Example:
        >>> TrackedUser("user-123", email="ada@example.com", monthly_revenue=99.0).email
        'ada@example.com'
    """

    id: str = attrs.field(metadata=_checked(_check_str))
    name: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    email: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    image: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    monthly_revenue: float | None = attrs.field(default=None, metadata=_checked(_check_duration))

    def __attrs_post_init__(self) -> None:
        name, email, image, revenue = self.name, self.email, self.image, self.monthly_revenue
        if not (
            type(self.id) is str
            and (name is None or type(name) is str)
            and (email is None or type(email) is str)
            and (image is None or type(image) is str)
            and (revenue is None or _plain_duration(revenue))
        ):
            _check_each(self)


@attrs.frozen
class AiEventUsage:
    """What one LLM call consumed and how long it took.

    Token counts are non-negative integers; durations are milliseconds.

    Example:
        >>> usage = AiEventUsage(input_tokens=100, output_tokens=50, model="gpt-4o")
        >>> usage.input_tokens + usage.output_tokens
        150
    """

    input_tokens: int = attrs.field(metadata=_checked(_check_token_count))
    output_tokens: int = attrs.field(metadata=_checked(_check_token_count))
    cached_tokens: int | None = attrs.field(
        default=None, metadata=_checked(_check_optional_token_count)
    )
    model: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    provider: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    latency_in_ms: float | None = attrs.field(default=None, metadata=_checked(_check_duration))
    is_streamed: bool | None = attrs.field(default=None, metadata=_checked(_check_optional_bool))
    streaming_duration_in_ms: float | None = attrs.field(
        default=None, metadata=_checked(_check_duration)
    )

    def __attrs_post_init__(self) -> None:
        # Typed as what a caller may pass, not as what the annotations promise.
        inputs: object = self.input_tokens
        outputs: object = self.output_tokens
        cached = self.cached_tokens
        model, provider = self.model, self.provider
        streamed: object = self.is_streamed
        latency, streaming = self.latency_in_ms, self.streaming_duration_in_ms
        if not (
            type(inputs) is int
            and 0 <= inputs <= _MAX_TOKENS
            and type(outputs) is int
            and 0 <= outputs <= _MAX_TOKENS
            and (cached is None or (type(cached) is int and 0 <= cached <= _MAX_TOKENS))
            and (model is None or type(model) is str)
            and (provider is None or type(provider) is str)
            and (latency is None or _plain_duration(latency))
            and (streamed is None or streamed is True or streamed is False)
            and (streaming is None or _plain_duration(streaming))
        ):
            _check_each(self)


# Wire names of the named metadata fields, in both spellings, so that a key of
# `extra` can never shadow one of them on the wire.
_METADATA_NAMES = frozenset(
    {
        "feature",
        "step",
        "user",
        "session_id",
        "sessionId",
        "conversation_id",
        "conversationId",
        "timestamp",
    }
)


# Most events have no extra fields: they share one empty mapping, which saves
# about a hundred bytes per queued event.
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


def _freeze_extra(value: object) -> Mapping[str, Any]:
    # A read-only copy: the caller may keep mutating its dict, the event must not change.
    if value is None or value is _NO_EXTRA:
        return _NO_EXTRA
    if type(value) is dict:  # the common case, without an ABC check
        return MappingProxyType(value.copy()) if value else _NO_EXTRA
    if not isinstance(value, Mapping):
        msg = f"AiEventMetadata.extra must be a mapping, got {type(value).__name__}"
        raise TypeError(msg)
    return MappingProxyType(dict(value)) if value else _NO_EXTRA


def _check_extra(inst: object, attribute: attrs.Attribute[Any], value: Mapping[Any, Any]) -> None:
    for key in value:
        if not isinstance(key, str):
            msg = f"AiEventMetadata.extra keys must be str, got {type(key).__name__}"
            raise TypeError(msg)
        if key in _METADATA_NAMES:
            msg = (
                f"AiEventMetadata.extra key {quote(key)} collides with a named field; "
                "pass it as that field instead"
            )
            raise ValueError(msg)


def _check_user(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str | TrackedUser):
        msg = f"AiEventMetadata.user must be a str or a TrackedUser, got {type(value).__name__}"
        raise TypeError(msg)


def _check_timestamp(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, datetime):
        msg = f"AiEventMetadata.timestamp must be a datetime, got {type(value).__name__}"
        raise TypeError(msg)


@attrs.frozen
class AiEventMetadata:
    """Who and what an LLM call was for: feature, step, user, session.

    `extra` holds any further fields (the TypeScript SDK's custom keys); they are
    merged into the metadata object on the wire, so a key that collides with a
    named field is refused.

    Example:
        >>> AiEventMetadata(feature="chat", user="user-123", extra={"plan": "pro"}).extra["plan"]
        'pro'
    """

    feature: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    step: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    user: str | TrackedUser | None = attrs.field(default=None, metadata=_checked(_check_user))
    session_id: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    conversation_id: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    timestamp: datetime | None = attrs.field(default=None, metadata=_checked(_check_timestamp))
    extra: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_freeze_extra, metadata=_checked(_check_extra), hash=False
    )

    def __attrs_post_init__(self) -> None:
        feature, step, user, session = self.feature, self.step, self.user, self.session_id
        conversation, timestamp, extra = self.conversation_id, self.timestamp, self.extra
        if not (
            (feature is None or type(feature) is str)
            and (step is None or type(step) is str)
            and (user is None or type(user) is str or type(user) is TrackedUser)
            and (session is None or type(session) is str)
            and (conversation is None or type(conversation) is str)
            and (timestamp is None or type(timestamp) is datetime)
        ):
            _check_each(self)
        elif extra is not _NO_EXTRA:
            # Every other field is valid: only the keys of `extra` are left to check.
            _check_extra(self, _EXTRA, extra)


_EXTRA = attrs.fields(AiEventMetadata).extra


def _to_status(value: AiEventStatus | str) -> AiEventStatus:
    if isinstance(value, AiEventStatus):
        return value
    try:
        return AiEventStatus(value)
    except Exception:  # any object may come here, with an __eq__ or __hash__ that raises
        allowed = ", ".join(s.value for s in AiEventStatus)
        msg = f"LLMEvent.status must be one of {allowed}; got {quote(value)}"
        raise ValueError(msg) from None


def _check_usage(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, AiEventUsage):
        msg = f"LLMEvent.usage must be an AiEventUsage, got {type(value).__name__}"
        raise TypeError(msg)


def _check_metadata(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, AiEventMetadata):
        msg = f"LLMEvent.metadata must be an AiEventMetadata, got {type(value).__name__}"
        raise TypeError(msg)


@attrs.frozen
class LLMEvent:
    """One LLM call to record: its usage, outcome and context.

    Example:
        >>> LLMEvent(AiEventUsage(100, 0), status="ERROR", error_message="rate limited").status
        <AiEventStatus.ERROR: 'ERROR'>
    """

    usage: AiEventUsage = attrs.field(metadata=_checked(_check_usage))
    status: AiEventStatus = attrs.field(default=AiEventStatus.SUCCESS, converter=_to_status)
    error_message: str | None = attrs.field(default=None, metadata=_checked(_check_optional_str))
    metadata: AiEventMetadata | None = attrs.field(default=None, metadata=_checked(_check_metadata))
    # Whether the event can be sent as JSON, and at most how big it is: found
    # once when the event is built, read each time it is recorded (cheaply, on
    # the hot path of record_event_nowait). Not part of the value. An event that
    # cannot be sent has no size: infinite, it is over any limit, and the one
    # comparison with the limit on the hot path refuses it too.
    _json_size: float = attrs.field(init=False, repr=False, eq=False, hash=False)
    _json_problem: str | None = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        message, metadata = self.error_message, self.metadata
        if not (
            type(self.usage) is AiEventUsage
            and (message is None or type(message) is str)
            and (metadata is None or type(metadata) is AiEventMetadata)
        ):
            # The derived fields are not checked: they are set below.
            for field in attrs.fields(LLMEvent)[:4]:
                check = field.metadata.get(_CHECK)
                if check is not None:
                    check(self, field, getattr(self, field.name))
        size: float
        try:
            size, problem = size_bound(self), None
        except InvalidEventError as exc:
            size, problem = math.inf, str(exc)
        object.__setattr__(self, "_json_size", size)
        object.__setattr__(self, "_json_problem", problem)


@attrs.frozen
class CreateAiEventResponse:
    """What FluxGate answered for a recorded event.

    Attributes:
        id: The event's id at FluxGate.
        created_at: When FluxGate stored it (ISO 8601).
        cost: Its price in US dollars, or `None` when FluxGate could not price it.
        status: The API's own status string, when it sent one.
    """

    id: str
    created_at: str
    cost: float | None
    status: str | None = None
