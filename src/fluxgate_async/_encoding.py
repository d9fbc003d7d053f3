"""Which values an event can carry as JSON, checked when the event is recorded.

`record_event_nowait` answers at once whether an event will be sent, so what
encoding would find wrong is found before the event is queued: a value JSON
cannot carry, text that is not valid Unicode, an event over the size limit.
An `LLMEvent` is looked at once, when it is built (it is a frozen value), and
keeps the answer; the client reads it when the event is recorded. The look
writes no JSON; only an event that may be near the size limit is encoded, when
recorded, to measure it exactly.

Values users put in metadata all the time are written as JavaScript's
`JSON.stringify` would: `datetime` and `date` as ISO 8601 text, `Decimal` as a
number, `UUID` as its text. Anything else JSON cannot carry is refused, naming
the field: `metadata.blob: bytes is not JSON; pass a str`.
"""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._logging import shorten

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._models import LLMEvent, TrackedUser

__all__ = ["EventTooLargeError", "InvalidEventError", "field_name", "json_default", "size_bound"]


class InvalidEventError(ValueError):
    """An event that cannot be sent as it is; the message names the field."""


class EventTooLargeError(InvalidEventError):
    """An event whose JSON is over `max_event_bytes`; the message names its biggest field."""


# JSON numbers are doubles for most readers; integers are accepted up to 64 bits
# (database ids, byte counts), and larger ones refused rather than rounded.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_MAX_DEPTH = 100
# Bytes any scalar other than text takes at most, quotes and separators included.
_SCALAR_BYTES = 48
# Fixed parts of an event: keys, braces, status.
_FRAME_BYTES = 512
# The most bytes one character of text takes in JSON: "\u001f" is six.
_BYTES_PER_CHAR = 6


# Where a value sits, for error messages only: a wire path ("usage.model"), or
# (where the parent is, a key or an index). Built as a tuple on the way down
# and written out only when a message needs it: the check runs for every
# event, the message almost never.
Path = str | tuple[Any, str | int]


def _where(path: Path) -> str:
    if isinstance(path, str):
        return path
    parent, part = path
    if isinstance(part, int):
        return f"{_where(parent)}[{part}]"
    return f"{_where(parent)}.{field_name(part)}"


def json_default(value: object) -> object:
    """The encoder's hook for values JSON has no type for: dates, Decimal, UUID.

    Raises:
        TypeError: Any other value (the check at enqueue has refused those already).
    """
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    msg = f"{type(value).__name__} is not JSON"
    raise TypeError(msg)


def _text(text: str, path: Path) -> int:
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            bad = text[exc.start]
            msg = (
                f"{_where(path)}: text holds a lone surrogate ({bad!r} at index {exc.start}); "
                "pass valid Unicode"
            )
            raise InvalidEventError(msg) from None
    return len(text) * _BYTES_PER_CHAR + 2


def field_name(key: str) -> str:
    """A metadata key as the messages show it: cut, and escaped to ASCII."""
    return shorten(key, 40).encode("ascii", "backslashreplace").decode()


def _number(value: float | int, path: Path) -> int:
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            bits = value.bit_length()
            msg = f"{_where(path)}: int of {bits} bits is too large for JSON; pass a str"
            raise InvalidEventError(msg)
    elif not math.isfinite(value):
        msg = f"{_where(path)}: {value} is not JSON; pass a finite number or None"
        raise InvalidEventError(msg)
    return _SCALAR_BYTES


def _value(value: object, path: Path, within: tuple[object, ...]) -> int:
    """An upper bound of `value`'s size in JSON; raises naming the first bad part."""
    depth = len(within)
    kind = type(value)
    if kind is str:
        return _text(value, path)  # type: ignore[arg-type]
    if value is None or kind is bool:
        return _SCALAR_BYTES
    if kind is int or kind is float:
        return _number(value, path)  # type: ignore[arg-type]
    if isinstance(value, dict | list | tuple):
        if depth >= _MAX_DEPTH:
            msg = f"{_where(path)}: nested more than {_MAX_DEPTH} levels deep"
            raise InvalidEventError(msg)
        if any(value is outer for outer in within):
            msg = f"{_where(path)}: contains itself"
            raise InvalidEventError(msg)
        if isinstance(value, dict):
            return _object(value, path, (*within, value))
        return _array(value, path, (*within, value))
    return _other(value, path)


def _object(value: dict[Any, Any], path: Path, within: tuple[object, ...]) -> int:
    size = _SCALAR_BYTES
    for key, item in value.items():
        if not isinstance(key, str):
            kind = type(key).__name__
            msg = f"{_where(path)}: key {shorten(repr(key), 40)} ({kind}) is not JSON; use str keys"
            raise InvalidEventError(msg)
        where = (path, key)
        size += _text(key, where) + _value(item, where, within)
    return size


def _array(value: list[Any] | tuple[Any, ...], path: Path, within: tuple[object, ...]) -> int:
    size = _SCALAR_BYTES
    for index, item in enumerate(value):
        size += _value(item, (path, index), within) + 1
    return size


_ADVICE: dict[type, str] = {
    bytes: "pass a str",
    bytearray: "pass a str",
    memoryview: "pass a str",
    set: "pass a list",
    frozenset: "pass a list",
}


def _other(value: object, path: Path) -> int:
    if isinstance(value, str):  # a str subclass (StrEnum) is written as its text
        return _text(value, path)
    if isinstance(value, bool | int | float):  # IntEnum and friends: their number
        return _number(value, path)
    if isinstance(value, datetime):
        # The encoder asks the time zone for its offset in C; a tzinfo whose
        # utcoffset() raises must be refused here, where the field can be named.
        try:
            value.utcoffset()
        except Exception as exc:  # any error of the user's tzinfo
            msg = (
                f"{_where(path)}: datetime whose time zone fails "
                f"({type(exc).__name__} from utcoffset()); pass an aware datetime"
            )
            raise InvalidEventError(msg) from None
        return _SCALAR_BYTES
    if isinstance(value, date | uuid.UUID):
        return _SCALAR_BYTES
    if isinstance(value, Decimal):
        if not value.is_finite() or not math.isfinite(float(value)):
            msg = f"{_where(path)}: Decimal {value} is not a JSON number; pass a finite number"
            raise InvalidEventError(msg)
        return _SCALAR_BYTES
    advice = next(
        (text for kind, text in _ADVICE.items() if isinstance(value, kind)),
        "pass a str, number, bool, None, list or dict",
    )
    msg = f"{_where(path)}: {type(value).__name__} is not JSON; {advice}"
    raise InvalidEventError(msg)


def _optional_text(text: str | None, path: Path) -> int:
    return 0 if text is None else _text(text, path)


def _user(user: str | TrackedUser) -> int:
    if isinstance(user, str):
        return _text(user, "metadata.user")
    return (
        _text(user.id, "metadata.user.id")
        + _optional_text(user.name, "metadata.user.name")
        + _optional_text(user.email, "metadata.user.email")
        + _optional_text(user.image, "metadata.user.image")
        + _SCALAR_BYTES
    )


def size_bound(event: LLMEvent) -> int:
    """An upper bound of `event`'s size in JSON, in bytes.

    Raises:
        InvalidEventError: A value JSON cannot carry; the message names its field.
    """
    # The common event, on the hot path of recording one: ASCII text in the named
    # fields, and extra fields (if any) that are flat scalars, as the provider
    # integrations add (`finishReason`). Joining its text and asking once is far
    # cheaper than a look at each field; anything else gets that look.
    usage, meta = event.usage, event.metadata
    if meta is None:
        text = "".join(filter(None, (usage.model, usage.provider, event.error_message)))
        size = _FRAME_BYTES
    elif meta.user is None or type(meta.user) is str:
        named: tuple[str | None, ...] = (
            usage.model,
            usage.provider,
            event.error_message,
            meta.feature,
            meta.step,
            meta.session_id,
            meta.conversation_id,
            meta.user,
        )
        size = _FRAME_BYTES
        if meta.extra:
            flat = _flat_extra(meta.extra)
            if flat is None:
                return _field_by_field(event)
            extra_text, size = flat
            named += extra_text
        text = "".join(filter(None, named))
    else:
        return _field_by_field(event)
    if text.isascii():
        return size + len(text) * _BYTES_PER_CHAR
    return _field_by_field(event)


def _flat_extra(extra: Mapping[str, Any]) -> tuple[tuple[str, ...], int] | None:
    """The text of flat scalar extra fields, and the bytes the frame and they take besides it.

    `None` if one of them is not a plain scalar.
    """
    text: list[str] = []
    size = _FRAME_BYTES
    for key, value in extra.items():
        kind = type(value)
        if type(key) is not str:
            return None
        if kind is str:
            text.append(value)
            size += 6  # the quotes of the key and of the value, the colon and the comma
        elif (
            value is None
            or kind is bool
            or (kind is int and _INT_MIN <= value <= _INT_MAX)
            or (kind is float and math.isfinite(value))
        ):
            size += 2 + _SCALAR_BYTES
        else:
            return None
        text.append(key)
    return tuple(text), size


def _field_by_field(event: LLMEvent) -> int:
    usage = event.usage
    size = (
        _FRAME_BYTES
        + _optional_text(usage.model, "usage.model")
        + _optional_text(usage.provider, "usage.provider")
        + _optional_text(event.error_message, "errorMessage")
    )
    meta = event.metadata
    if meta is None:
        return size
    size += (
        _optional_text(meta.feature, "metadata.feature")
        + _optional_text(meta.step, "metadata.step")
        + _optional_text(meta.session_id, "metadata.sessionId")
        + _optional_text(meta.conversation_id, "metadata.conversationId")
    )
    if meta.user is not None:
        size += _user(meta.user)
    for key, value in meta.extra.items():
        where = ("metadata", key)
        size += _text(key, where) + _value(value, where, ())
    return size
