"""The check when an event is built: whole messages naming the field, a size bound that holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

from fluxgate_async import AiEventMetadata, AiEventUsage, LLMEvent, TrackedUser
from fluxgate_async._wire import EventTooLargeError, InvalidEventError, check_event, encode_event

# JSON writes a control character as "\u001f": six bytes, the most any character takes, so
# text made of them is as large as the size bound allows for.
_WIDE = "é" + "\x1f" * 1000


def _event(field: str, text: str) -> LLMEvent:
    """An event with `text` in one named field (`usage.model`, `metadata.user.name`, ...)."""
    usage: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    user: dict[str, Any] = {}
    error_message = None
    if field == "errorMessage":
        error_message = text
    elif field.startswith("usage."):
        usage[field.removeprefix("usage.")] = text
    elif field.startswith("metadata.user."):
        user[field.removeprefix("metadata.user.")] = text
    else:
        meta[field.removeprefix("metadata.")] = text
    if user:
        meta["user"] = TrackedUser(**{"id": "u", **user})
    return LLMEvent(
        AiEventUsage(1, 1, **usage),
        status="ERROR" if error_message is not None else "SUCCESS",
        error_message=error_message,
        metadata=AiEventMetadata(**meta) if meta else None,
    )


_NAMED_FIELDS = [
    ("usage.model", "usage.model"),
    ("usage.provider", "usage.provider"),
    ("errorMessage", "errorMessage"),
    ("metadata.feature", "metadata.feature"),
    ("metadata.step", "metadata.step"),
    ("metadata.session_id", "metadata.sessionId"),
    ("metadata.conversation_id", "metadata.conversationId"),
    ("metadata.user", "metadata.user"),
    ("metadata.user.id", "metadata.user.id"),
    ("metadata.user.name", "metadata.user.name"),
    ("metadata.user.email", "metadata.user.email"),
    ("metadata.user.image", "metadata.user.image"),
]


@pytest.mark.parametrize(
    ("field", "shown"), _NAMED_FIELDS, ids=[shown for _, shown in _NAMED_FIELDS]
)
def test_a_lone_surrogate_in_each_named_field_is_named_exactly(field: str, shown: str) -> None:
    """Each text field with a lone surrogate is refused with its wire name and the whole advice."""
    with pytest.raises(InvalidEventError) as raised:
        check_event(_event(field, "ok \udc80"), 1024)
    assert str(raised.value) == (
        f"{shown}: text holds a lone surrogate ('\\udc80' at index 3); pass valid Unicode"
    )


def _assert_bound_holds(event: LLMEvent) -> None:
    """The event is refused one byte under its size and accepted at its size."""
    body = encode_event(event)
    with pytest.raises(EventTooLargeError):
        check_event(event, len(body) - 1)
    assert check_event(event, len(body)) in (None, body)


@pytest.mark.parametrize(
    ("field", "shown"), _NAMED_FIELDS, ids=[shown for _, shown in _NAMED_FIELDS]
)
def test_the_size_limit_holds_for_a_large_value_in_each_named_field(field: str, shown: str) -> None:
    """A field of 1,000 six-byte characters: one byte over the limit is refused, never sent."""
    _assert_bound_holds(_event(field, _WIDE))


@pytest.mark.parametrize(
    "extra",
    [
        {"codes": ["\x1f"] * 1000},
        {"codes": {f"k{i}": "\x1f" for i in range(1000)}},
        {"note": _WIDE, "more": {"deep": [_WIDE, {"k": _WIDE}]}},
        {_WIDE: 1},
        {"finishReason": _WIDE, "n": 2**64 - 1, "x": -1.5e300, "ok": True, "no": None},
        {f"k{i}": 2**63 for i in range(1000)},
        # Flat text, every character six bytes in JSON and ASCII (the quick bound's case):
        # the separators of 900 fields, not the text, pass the frame's slack.
        {chr(a) + chr(b): "\x1f" for a in range(1, 31) for b in range(1, 31)},
        {chr(a) + chr(b): -(2**63) for a in range(1, 31) for b in range(1, 31)},
    ],
    ids=[
        "many_short_strings",
        "many_keys",
        "nested",
        "long_key",
        "flat",
        "many_flat_numbers",
        "many_flat_short_strings",
        "many_flat_wide_numbers",
    ],
)
def test_the_size_limit_holds_for_large_metadata(extra: dict[str, Any]) -> None:
    """Lists, objects and keys are all counted: one byte over the limit is refused."""
    _assert_bound_holds(LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra=extra)))


def test_the_size_limit_holds_with_every_field_large_at_once() -> None:
    """All named fields and metadata large together still fit the bound."""
    user = TrackedUser("u" + _WIDE, name=_WIDE, email=_WIDE, image=_WIDE, monthly_revenue=1.5e300)
    event = LLMEvent(
        AiEventUsage(2**62, 2**62, model=_WIDE, provider=_WIDE, latency_in_ms=1.25e300),
        status="ERROR",
        error_message=_WIDE,
        metadata=AiEventMetadata(
            feature=_WIDE,
            step=_WIDE,
            user=user,
            session_id=_WIDE,
            conversation_id=_WIDE,
            extra={"note": _WIDE},
        ),
    )
    _assert_bound_holds(event)


def _with_extra(**extra: Any) -> LLMEvent:
    return LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra=extra))


def _nested(levels: int) -> list[Any]:
    """`levels` lists, each holding the next."""
    outer: list[Any] = []
    inner = outer
    for _ in range(levels - 1):
        inner.append([])
        inner = inner[0]
    return outer


def test_nesting_of_exactly_a_hundred_levels_is_accepted() -> None:
    """A hundred nested lists are sent; a hundred and one are refused."""
    check_event(_with_extra(deep=_nested(100)), 1024)
    assert encode_event(_with_extra(deep=_nested(100))).count(b"[") == 100
    with pytest.raises(InvalidEventError, match=r"nested more than 100 levels deep$"):
        check_event(_with_extra(deep=_nested(101)), 1024)


@pytest.mark.parametrize("value", [-(2**63), 2**64 - 1], ids=["int64_min", "uint64_max"])
def test_integers_at_the_64_bit_ends_are_sent_exactly(value: int) -> None:
    """The smallest signed and largest unsigned 64-bit integers are sent exactly as they are."""
    check_event(_with_extra(n=value), 1024)
    assert encode_event(_with_extra(n=value)).endswith(b'"metadata":{"n":%d}}' % value)


@pytest.mark.parametrize("value", [-(2**63), 2**64 - 1], ids=["int64_min", "uint64_max"])
def test_integers_at_the_64_bit_ends_are_sent_exactly_inside_a_list(value: int) -> None:
    """The same ends inside a list, which the check reads field by field, are sent too."""
    check_event(_with_extra(n=[value]), 1024)
    assert encode_event(_with_extra(n=[value])).endswith(b'"metadata":{"n":[%d]}}' % value)


@pytest.mark.parametrize(
    ("value", "bits"), [(-(2**63) - 1, 64), (2**64, 65)], ids=["below_int64", "above_uint64"]
)
def test_integers_past_the_64_bit_ends_are_refused(value: int, bits: int) -> None:
    """One past either end is refused, with its size in bits and the advice."""
    with pytest.raises(InvalidEventError) as raised:
        check_event(_with_extra(n=value), 1024)
    assert str(raised.value) == f"metadata.n: int of {bits} bits is too large for JSON; pass a str"


class _Tag(str):
    """A str subclass, as a user's own text type would be."""


class _Ratio(float):
    """A float subclass, as a user's own number type would be."""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"tag": _Tag("a\ud800")},
            "metadata.tag: text holds a lone surrogate ('\\ud800' at index 1); pass valid Unicode",
        ),
        ({"r": _Ratio("nan")}, "metadata.r: nan is not JSON; pass a finite number or None"),
        (
            {"o": object()},
            "metadata.o: object is not JSON; pass a str, number, bool, None, list or dict",
        ),
        (
            {"k" * 41: b"x"},
            "metadata." + "k" * 40 + "... (1 more characters): bytes is not JSON; pass a str",
        ),
        ({"k" * 40: b"x"}, "metadata." + "k" * 40 + ": bytes is not JSON; pass a str"),
        (
            {"s": {("x" * 36,): 1}},
            "metadata.s: key ('" + "x" * 36 + "',... (1 more characters) (tuple) is not JSON;"
            " use str keys",
        ),
        (
            {"s": {("x" * 35,): 1}},
            "metadata.s: key ('" + "x" * 35 + "',) (tuple) is not JSON; use str keys",
        ),
        (
            {"d": {"k\udc80": 1}},
            "metadata.d.k\\udc80: text holds a lone surrogate ('\\udc80' at index 1);"
            " pass valid Unicode",
        ),
    ],
    ids=[
        "str_subclass",
        "float_subclass",
        "object",
        "key_of_41",
        "key_of_40",
        "tuple_key_of_41",
        "tuple_key_of_40",
        "nested_key",
    ],
)
def test_refused_metadata_gets_the_whole_message(extra: dict[str, Any], message: str) -> None:
    """The message names the field, cut at 40 characters, and gives the whole advice."""
    with pytest.raises(InvalidEventError) as raised:
        check_event(_with_extra(**extra), 1024)
    assert str(raised.value) == message


def test_the_size_limit_holds_for_the_widest_fixed_parts() -> None:
    """Every field set, numbers at their longest, one-character texts: the bound still holds."""
    wide = 1.2345678901234567e-300  # written with 23 characters, the most a float takes
    biggest = 2**63 - 1
    user = TrackedUser("\x1f", name="\x1f", email="\x1f", image="\x1f", monthly_revenue=wide)
    event = LLMEvent(
        AiEventUsage(
            biggest,
            biggest,
            cached_tokens=biggest,
            model="\x1f",
            provider="\x1f",
            latency_in_ms=wide,
            streaming_duration_in_ms=wide,
            is_streamed=False,
        ),
        status="ERROR",
        error_message="\x1f",
        metadata=AiEventMetadata(
            feature="\x1f",
            step="\x1f",
            user=user,
            session_id="\x1f",
            conversation_id="\x1f",
            timestamp=datetime(
                2026, 1, 1, 1, 1, 1, 123456, tzinfo=timezone(-timedelta(minutes=330))
            ),
        ),
    )
    _assert_bound_holds(event)


class _BrokenZone(tzinfo):
    """A time zone whose offset cannot be read."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        """Fail, as a buggy or half-configured zone object does."""
        raise RuntimeError("no zone data")

    def dst(self, dt: datetime | None) -> timedelta:
        """No daylight saving."""
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        """A name."""
        return "broken"


def test_a_datetime_whose_zone_fails_is_refused_naming_the_field() -> None:
    """A tzinfo that raises is refused when the event is built, never handed to the encoder."""
    event = LLMEvent(
        AiEventUsage(1, 1),
        metadata=AiEventMetadata(extra={"at": [datetime(2026, 1, 1, tzinfo=_BrokenZone())]}),
    )
    with pytest.raises(
        InvalidEventError,
        match=r"^metadata\.at\[0\]: datetime whose time zone fails "
        r"\(RuntimeError from utcoffset\(\)\); pass an aware datetime$",
    ):
        check_event(event, 1_000_000)
