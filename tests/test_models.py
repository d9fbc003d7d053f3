"""The models refuse bad values at construction, naming the field."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import attrs
import pytest

from fluxgate_async import (
    AiEventMetadata,
    AiEventStatus,
    AiEventUsage,
    LLMEvent,
    TrackedUser,
)


def test_status_is_a_str_enum_with_the_seven_seed_values() -> None:
    """AiEventStatus holds exactly the TypeScript SDK's seven values and compares as str."""
    assert [s.value for s in AiEventStatus] == [
        "SUCCESS",
        "ERROR",
        "BLOCKED",
        "MAX_TOKENS",
        "CONTENT_FILTER",
        "RECITATION",
        "MALFORMED_REQUEST",
    ]
    assert AiEventStatus.ERROR == "ERROR"


def test_event_defaults_to_success_and_accepts_plain_strings() -> None:
    """A status given as a plain string becomes the enum; none given means SUCCESS."""
    usage = AiEventUsage(1, 2)
    assert LLMEvent(usage).status is AiEventStatus.SUCCESS
    assert LLMEvent(usage, status="MAX_TOKENS").status is AiEventStatus.MAX_TOKENS


def test_unknown_status_names_the_field_and_the_allowed_values() -> None:
    """An unknown status is refused with the list of valid ones."""
    with pytest.raises(ValueError, match=r"LLMEvent\.status must be one of SUCCESS, ERROR"):
        LLMEvent(AiEventUsage(1, 2), status="OK")


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cached_tokens"])
@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (True, TypeError), (1.5, TypeError), ("10", TypeError)],
)
def test_token_counts_must_be_non_negative_ints(
    field: str, value: object, error: type[Exception]
) -> None:
    """Negative, bool, float and string token counts are refused, naming the field and value."""
    kwargs: dict[str, Any] = {"input_tokens": 1, "output_tokens": 1, field: value}
    got = value if error is ValueError else type(value).__name__
    with pytest.raises(
        error, match=rf"^AiEventUsage\.{field} must be a non-negative int, got {got}$"
    ):
        AiEventUsage(**kwargs)


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cached_tokens"])
def test_token_counts_fit_in_64_bits(field: str) -> None:
    """The largest signed 64-bit count is accepted; one more is refused, naming the field."""
    kwargs: dict[str, Any] = {"input_tokens": 1, "output_tokens": 1}
    assert getattr(AiEventUsage(**{**kwargs, field: 2**63 - 1}), field) == 2**63 - 1
    with pytest.raises(
        ValueError, match=rf"^AiEventUsage\.{field} must be below 2\*\*63, got an int of 64 bits$"
    ):
        AiEventUsage(**{**kwargs, field: 2**63})


@pytest.mark.parametrize("field", ["latency_in_ms", "streaming_duration_in_ms"])
@pytest.mark.parametrize(
    ("value", "error"),
    [(-0.5, ValueError), (math.inf, ValueError), (math.nan, ValueError), (False, TypeError)],
)
def test_durations_must_be_non_negative_finite_numbers(
    field: str, value: object, error: type[Exception]
) -> None:
    """Latencies refuse negatives, infinities, NaN and bools, naming the field."""
    kwargs: dict[str, Any] = {field: value}
    expected = (
        f"must be a non-negative finite number, got {value}"
        if error is ValueError
        else f"must be a non-negative number, got {type(value).__name__}"
    )
    with pytest.raises(error, match=rf"^AiEventUsage\.{field} {expected}$"):
        AiEventUsage(1, 1, **kwargs)


def test_zero_and_float_latencies_are_valid() -> None:
    """Zero tokens and fractional milliseconds are legitimate measurements."""
    usage = AiEventUsage(0, 0, latency_in_ms=0, streaming_duration_in_ms=12.5)
    assert usage.streaming_duration_in_ms == 12.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": 4}, r"^AiEventUsage\.model must be a str, got int$"),
        ({"provider": 4}, r"^AiEventUsage\.provider must be a str, got int$"),
        ({"is_streamed": "yes"}, r"^AiEventUsage\.is_streamed must be a bool, got str$"),
    ],
)
def test_usage_checks_optional_field_types(kwargs: dict[str, Any], message: str) -> None:
    """Optional usage fields refuse values of the wrong type."""
    with pytest.raises(TypeError, match=message):
        AiEventUsage(1, 1, **kwargs)


def test_tracked_user_checks_its_fields() -> None:
    """A user needs a string id and a numeric monthly revenue."""
    with pytest.raises(TypeError, match=r"^TrackedUser\.id must be a str, got int$"):
        TrackedUser(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"TrackedUser\.monthly_revenue"):
        TrackedUser("u", monthly_revenue="99")  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["name", "email", "image"])
def test_tracked_user_refuses_a_profile_field_that_is_not_text(field: str) -> None:
    """Each optional profile field, wrong alone, is refused by name."""
    with pytest.raises(TypeError, match=rf"^TrackedUser\.{field} must be a str, got int$"):
        TrackedUser("u", **{field: 1})  # type: ignore[arg-type]


def test_extra_given_as_another_kind_of_mapping_is_kept() -> None:
    """Extra fields in a read-only or custom mapping are kept, as a dict's are."""
    meta = AiEventMetadata(extra=MappingProxyType({"plan": "pro", "seats": 3}))
    assert meta.extra == {"plan": "pro", "seats": 3}
    assert AiEventMetadata(extra=MappingProxyType({})).extra == {}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"user": 5},
            TypeError,
            r"^AiEventMetadata\.user must be a str or a TrackedUser, got int$",
        ),
        (
            {"timestamp": "2026-01-01"},
            TypeError,
            r"^AiEventMetadata\.timestamp must be a datetime, got str$",
        ),
        ({"extra": ["a"]}, TypeError, r"^AiEventMetadata\.extra must be a mapping, got list$"),
        ({"extra": {1: "a"}}, TypeError, r"^AiEventMetadata\.extra keys must be str, got int$"),
        (
            {"extra": {"sessionId": "s"}},
            ValueError,
            r"^AiEventMetadata\.extra key 'sessionId' collides with a named field; "
            r"pass it as that field instead$",
        ),
        ({"extra": {"feature": "f"}}, ValueError, r"'feature' collides with a named field"),
        ({"feature": 1}, TypeError, r"^AiEventMetadata\.feature must be a str, got int$"),
        ({"step": 1}, TypeError, r"^AiEventMetadata\.step must be a str, got int$"),
        ({"session_id": 2}, TypeError, r"^AiEventMetadata\.session_id must be a str, got int$"),
        (
            {"conversation_id": 3},
            TypeError,
            r"^AiEventMetadata\.conversation_id must be a str, got int$",
        ),
    ],
)
def test_metadata_refuses_bad_fields(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Metadata names the field that is wrong, including colliding extra keys."""
    with pytest.raises(error, match=message):
        AiEventMetadata(**kwargs)


def test_metadata_extra_is_a_private_copy() -> None:
    """Mutating the dict passed as `extra` later does not change the event."""
    extra = {"plan": "pro"}
    meta = AiEventMetadata(extra=extra)
    extra["plan"] = "free"
    assert meta.extra == {"plan": "pro"}
    with pytest.raises(TypeError):
        meta.extra["plan"] = "x"  # type: ignore[index]


def test_event_checks_nested_types() -> None:
    """An event needs AiEventUsage and AiEventMetadata instances, not look-alikes."""
    with pytest.raises(TypeError, match=r"^LLMEvent\.usage must be an AiEventUsage, got dict$"):
        LLMEvent({"inputTokens": 1})  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^LLMEvent\.metadata must be an AiEventMetadata, got dict$"
    ):
        LLMEvent(AiEventUsage(1, 1), metadata={"feature": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"LLMEvent\.error_message must be a str"):
        LLMEvent(AiEventUsage(1, 1), error_message=404)  # type: ignore[arg-type]


def test_models_are_frozen_values() -> None:
    """Events are immutable and compare by value, so they can be shared across tasks."""
    when = datetime(2026, 5, 5, tzinfo=UTC)
    a = LLMEvent(AiEventUsage(1, 2), metadata=AiEventMetadata(timestamp=when))
    b = LLMEvent(AiEventUsage(1, 2), metadata=AiEventMetadata(timestamp=when))
    assert a == b
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.status = AiEventStatus.ERROR  # type: ignore[misc]


def test_metadata_extra_none_means_no_extra_fields() -> None:
    """extra=None is accepted as "none": an empty, read-only mapping, nothing extra sent."""
    meta = AiEventMetadata(feature="chat", extra=None)
    assert meta.extra == {}
    assert meta == AiEventMetadata(feature="chat")
    with pytest.raises(TypeError):
        meta.extra["plan"] = "x"  # type: ignore[index]


class _Label(str):
    """A str subclass, as an application's own enums and wrappers are."""


def test_subclasses_of_the_field_types_are_accepted() -> None:
    """A str subclass or a float where an int would do passes the same checks as before."""
    usage = AiEventUsage(1, 2, model=_Label("gpt-4o"), latency_in_ms=1.0)
    meta = AiEventMetadata(feature=_Label("chat"), extra={"plan": "pro"})
    event = LLMEvent(usage, error_message=_Label("cut"), metadata=meta)
    assert (event.usage.model, event.metadata, event.error_message) == ("gpt-4o", meta, "cut")
    assert TrackedUser(_Label("u"), monthly_revenue=3).id == "u"


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 2**63 - 1, "output_tokens": 0},
        {"input_tokens": 1, "output_tokens": 1, "latency_in_ms": 0.0},
        {"input_tokens": 1, "output_tokens": 1, "latency_in_ms": 0.5},
        {"input_tokens": 1, "output_tokens": 1, "streaming_duration_in_ms": 0},
    ],
    ids=["largest_count", "zero_latency", "half_a_millisecond", "zero_int_duration"],
)
def test_the_bounds_hold_beside_a_subclass_value(usage: dict[str, Any]) -> None:
    """Counts up to 2**63 - 1 and durations from 0 are accepted, whatever the other fields."""
    # A str subclass as the model takes the field-by-field checks rather than the quick test.
    built = AiEventUsage(**usage, model=_Label("gpt-4o"))
    assert {name: getattr(built, name) for name in usage} == usage


def test_the_first_wrong_field_is_the_one_named() -> None:
    """With several fields wrong, the message names the first in the class's order."""
    with pytest.raises(ValueError, match=r"^AiEventUsage\.input_tokens must be a non-negative"):
        AiEventUsage(-1, "2", model=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^AiEventMetadata\.step must be a str, got int$"):
        AiEventMetadata(step=1, user=2, extra={"feature": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^AiEventMetadata\.extra key 'user' collides"):
        AiEventMetadata(feature="chat", extra={"plan": "pro", "user": "u"})
    with pytest.raises(TypeError, match=r"^LLMEvent\.usage must be an AiEventUsage, got int$"):
        LLMEvent(1, error_message=2, metadata=3)  # type: ignore[arg-type]
