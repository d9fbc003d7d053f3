"""How events and answers look on the wire: the one place that knows the JSON shape.

The shape is the TypeScript `@fluxgate/sdk`'s: camelCase keys, `None` fields
left out, metadata's custom fields merged flat into the metadata object, and
`status` either a bare string or `{"status": ..., "errorMessage": ...}`.

The same converter reads that shape back into models, so `record_event` takes a
plain mapping written the TypeScript way, and model -> JSON -> model is the
identity. Hooks are generated once, at import, so encoding does no per-call
introspection.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeGuard

import cattrs
import orjson
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter

from ._encoding import (
    EventTooLargeError,
    InvalidEventError,
    field_name,
    json_default,
    size_bound,
)
from ._logging import quote
from ._models import (
    AiEventMetadata,
    AiEventStatus,
    AiEventUsage,
    CreateAiEventResponse,
    LLMEvent,
    TrackedUser,
)

__all__ = [
    "EventInput",
    "EventTooLargeError",
    "InvalidEventError",
    "answer_id",
    "answer_to_json",
    "check_event",
    "converter",
    "decode_json",
    "encode_event",
    "encode_value",
    "parse_response",
    "to_event",
    "to_wire",
]


EventInput: TypeAlias = LLMEvent | Mapping[str, Any]
"""What `record_event` takes: an `LLMEvent`, or a mapping of the API's JSON (camelCase keys)."""


# orjson writes and reads JSON in C: on loopback the client's own time per
# event is what shows, and the stdlib encoder was a third of it.
converter = make_converter(forbid_extra_keys=True)


def _passthrough(value: Any, _: Any) -> Any:
    # Scalars are checked by the models' validators, which refuse "100" for a
    # token count; cattrs' default `int(value)` would silently accept it.
    return value


for _scalar in (int, float, str, bool):
    converter.register_structure_hook(_scalar, _passthrough)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _renamed(cls: type[Any]) -> dict[str, Any]:
    return {a.name: override(rename=_camel(a.name)) for a in cls.__attrs_attrs__}


# An optional scalar goes out as it is (orjson writes None as null): said once
# here, cattrs writes each such field inline in the hooks it generates below,
# instead of a call to its generic optional hook per field and event.
_OPTIONAL_SCALARS = frozenset({int | None, float | None, str | None, bool | None})
converter.register_unstructure_hook_func(_OPTIONAL_SCALARS.__contains__, identity)

for _cls in (TrackedUser, AiEventUsage):
    converter.register_unstructure_hook(
        _cls,
        make_dict_unstructure_fn(_cls, converter, _cattrs_omit_if_default=True, **_renamed(_cls)),
    )
    converter.register_structure_hook(
        _cls,
        make_dict_structure_fn(_cls, converter, _cattrs_forbid_extra_keys=True, **_renamed(_cls)),
    )


# Held directly: the hot path skips the converter's dispatch.
_unstructure_usage = converter.get_unstructure_hook(AiEventUsage)
_unstructure_tracked_user = converter.get_unstructure_hook(TrackedUser)


def _unstructure_user(user: str | TrackedUser) -> Any:
    return user if isinstance(user, str) else _unstructure_tracked_user(user)


def _structure_user(value: Any) -> str | TrackedUser:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return _structure_part(value, TrackedUser, "metadata.user")  # type: ignore[no-any-return]
    msg = f"metadata.user must be a string or an object, got {type(value).__name__}"
    raise TypeError(msg)


def _structure_timestamp(value: Any, _: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    msg = f"metadata.timestamp must be an ISO 8601 string, got {quote(value)}"
    raise ValueError(msg)


converter.register_structure_hook(datetime, _structure_timestamp)
converter.register_unstructure_hook(datetime, datetime.isoformat)

_metadata_names = {
    "feature": "feature",
    "step": "step",
    "user": "user",
    "session_id": "sessionId",
    "conversation_id": "conversationId",
    "timestamp": "timestamp",
}
_metadata_wire_names = frozenset(_metadata_names.values())


def _unstructure_metadata(meta: AiEventMetadata) -> dict[str, Any]:
    extra = meta.extra
    # Most events have no extra fields: copying the shared empty mapping through
    # the generic mapping protocol cost more than the rest of this function.
    out: dict[str, Any] = dict(extra) if extra else {}
    if meta.feature is not None:
        out["feature"] = meta.feature
    if meta.step is not None:
        out["step"] = meta.step
    user = meta.user
    if user is not None:
        out["user"] = user if type(user) is str else _unstructure_user(user)
    if meta.session_id is not None:
        out["sessionId"] = meta.session_id
    if meta.conversation_id is not None:
        out["conversationId"] = meta.conversation_id
    if meta.timestamp is not None:
        out["timestamp"] = meta.timestamp.isoformat()
    return out


def _structure_metadata(value: Any, _: Any) -> AiEventMetadata:
    # `_structure_part` has refused a value that is not a mapping.
    named: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, item in value.items():
        if key in _metadata_wire_names:
            if item is not None:
                named[key] = item
        else:
            extra[key] = item
    user = named.get("user")
    timestamp = named.get("timestamp")
    return AiEventMetadata(
        feature=named.get("feature"),
        step=named.get("step"),
        user=None if user is None else _structure_user(user),
        session_id=named.get("sessionId"),
        conversation_id=named.get("conversationId"),
        timestamp=None if timestamp is None else _structure_timestamp(timestamp, None),
        extra=extra,
    )


converter.register_unstructure_hook(AiEventMetadata, _unstructure_metadata)
converter.register_structure_hook(AiEventMetadata, _structure_metadata)


def _unstructure_event(event: LLMEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"usage": _unstructure_usage(event.usage)}
    # `_value_`, the member's plain string: `.value` is a Python-level property on 3.11.
    if event.error_message is None:
        out["status"] = event.status._value_
    else:
        out["status"] = {"status": event.status._value_, "errorMessage": event.error_message}
    if event.metadata is not None:
        out["metadata"] = _unstructure_metadata(event.metadata)
    return out


_event_keys = frozenset({"usage", "status", "metadata"})


def _structure_event(value: Any, _: Any) -> LLMEvent:
    if not isinstance(value, Mapping):
        msg = f"an event must be an LLMEvent or a mapping, got {type(value).__name__}"
        raise TypeError(msg)
    unknown = sorted(str(k) for k in value.keys() - _event_keys)
    if unknown:
        msg = f"unknown event field(s): {', '.join(unknown)}"
        raise ValueError(msg)
    if "usage" not in value:
        msg = "usage is required"
        raise ValueError(msg)
    status = value.get("status")
    error_message = None
    if isinstance(status, Mapping):
        extra_keys = sorted(str(k) for k in status.keys() - {"status", "errorMessage"})
        if extra_keys:
            msg = f"unknown status field(s): {', '.join(extra_keys)}"
            raise ValueError(msg)
        error_message = status.get("errorMessage")
        status = status.get("status")
    metadata = value.get("metadata")
    return LLMEvent(
        usage=_structure_part(value["usage"], AiEventUsage, "usage"),
        status=AiEventStatus.SUCCESS if status is None else status,
        error_message=error_message,
        metadata=None
        if metadata is None
        else _structure_part(metadata, AiEventMetadata, "metadata"),
    )


def _structure_part(value: Any, cls: type[Any], where: str) -> Any:
    if not isinstance(value, Mapping):
        msg = f"{where} must be an object, got {type(value).__name__}"
        raise TypeError(msg)
    try:
        return converter.structure(value, cls)
    except cattrs.BaseValidationError as exc:
        raise InvalidEventError(_describe(exc, where)) from None


def _problem(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(exc.extra_fields))}"
    return str(exc)


# A model validator's message starts "AiEventUsage.input_tokens must ...".
_VALIDATOR_MESSAGE = re.compile(r"^[A-Z]\w*\.(\w+) (.*)$", re.DOTALL)


def _describe(exc: cattrs.BaseValidationError, where: str) -> str:
    """One line naming each bad field by its wire path, from cattrs' nested errors."""
    problems = []
    for line in cattrs.transform_error(exc, path=where, format_exception=_problem):
        problem, _, path = line.rpartition(" @ ")
        validator = _VALIDATOR_MESSAGE.match(problem)
        if validator:
            # The models name the Python field; the caller wrote the camelCase key.
            path, problem = f"{path}.{validator[1]}", validator[2]
        problems.append(f"{_camel_path(path)}: {problem}")
    return "; ".join(problems)


def _camel_path(path: str) -> str:
    return ".".join(_camel(part) for part in path.split("."))


converter.register_unstructure_hook(LLMEvent, _unstructure_event)
converter.register_structure_hook(LLMEvent, _structure_event)


# The common mapping, read without cattrs: plain dicts, known keys, plain values.
# Going through the converter costs its dispatch, its error collection and a
# dict of keyword arguments per part, about half of `record_event_nowait` with a
# mapping. Anything this path does not expect, and any value a model refuses,
# is read again by the converter, which alone words the errors: this path only
# ever returns the event the converter would have built, or nothing.
_usage_keys = frozenset(_camel(a.name) for a in AiEventUsage.__attrs_attrs__)
_user_fields = {_camel(a.name): a.name for a in TrackedUser.__attrs_attrs__}
_STATUSES: dict[str, AiEventStatus] = {status.value: status for status in AiEventStatus}


def _quick_usage(value: dict[Any, Any]) -> AiEventUsage:
    if not value.keys() <= _usage_keys:
        raise KeyError  # an unknown field
    get = value.get
    return AiEventUsage(
        value["inputTokens"],
        value["outputTokens"],
        get("cachedTokens"),
        get("model"),
        get("provider"),
        get("latencyInMs"),
        get("isStreamed"),
        get("streamingDurationInMs"),
    )


def _quick_user(value: dict[Any, Any]) -> TrackedUser:
    # A key that is not a field's raises KeyError, a missing id TypeError.
    return TrackedUser(**{_user_fields[key]: item for key, item in value.items()})


def _quick_metadata(value: dict[Any, Any]) -> AiEventMetadata:
    extra: dict[str, Any] | None = None
    if not value.keys() <= _metadata_wire_names:  # extra fields
        extra = {}
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError  # the converter says which key
            if key not in _metadata_wire_names:
                extra[key] = item
    get = value.get
    user = get("user")
    if user is not None and type(user) is not str:
        if type(user) is not dict:
            raise TypeError
        user = _quick_user(user)
    timestamp = get("timestamp")
    if timestamp is not None:
        timestamp = _structure_timestamp(timestamp, None)
    return AiEventMetadata(
        get("feature"), get("step"), user, get("sessionId"), get("conversationId"), timestamp, extra
    )


def _quick_event(value: dict[Any, Any]) -> LLMEvent:
    usage = value["usage"]
    status = value.get("status")
    metadata = value.get("metadata")
    if len(value) > 1 + (status is not None) + (metadata is not None) or type(usage) is not dict:
        raise KeyError  # unknown keys, or a None usage
    error_message = None
    if type(status) is dict:
        if not status.keys() <= {"status", "errorMessage"}:
            raise KeyError
        error_message = status.get("errorMessage")
        status = status.get("status")
    if status is None:
        status = AiEventStatus.SUCCESS
    elif type(status) is str:
        status = _STATUSES[status]
    elif type(status) is not AiEventStatus:
        raise TypeError
    if metadata is not None:
        if type(metadata) is not dict:
            raise TypeError
        metadata = _quick_metadata(metadata)
    return LLMEvent(_quick_usage(usage), status, error_message, metadata)


def to_event(value: EventInput) -> LLMEvent:
    """Return `value` as a validated `LLMEvent`.

    Raises:
        TypeError, ValueError: The mapping does not fit; the message names the field.
    """
    if isinstance(value, LLMEvent):
        return value
    if type(value) is dict:
        try:
            return _quick_event(value)
        except (KeyError, TypeError, ValueError):
            pass  # read again below, where the message names the field
    return _structure_event(value, LLMEvent)


def to_wire(event: LLMEvent) -> dict[str, Any]:
    """Return the JSON-ready dict for `event`, exactly as the API expects it."""
    return _unstructure_event(event)


def encode_value(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON, with the metadata rules (dates, Decimal, UUID).

    Raises:
        TypeError, ValueError: `value` cannot be written (`orjson.JSONEncodeError`
            is a `TypeError`).
    """
    return orjson.dumps(value, default=json_default)


def encode_event(event: LLMEvent) -> bytes:
    """Return the request body for `event`.

    A float that became NaN or infinite after the event was checked (in a list
    the caller kept and filled) is written as `null`, as JavaScript's
    `JSON.stringify` does.

    Raises:
        InvalidEventError: A value cannot be written as JSON; the message names its field.
    """
    try:
        if event._json_problem is None:
            # The converter's own hook, called without its dispatch: `converter.dumps`.
            wire = _unstructure_event(event)
            try:
                return orjson.dumps(wire, default=json_default)
            except TypeError:
                # orjson refuses a dict key that is a str subclass (a StrEnum member),
                # which the check when recording accepts as text; written as its text,
                # only on this rare path, because the option slows every dump.
                return orjson.dumps(wire, default=json_default, option=orjson.OPT_NON_STR_KEYS)
        # An event the check refused reaches here only from a caller that skips
        # the check (the collector storing what it was sent): the standard
        # encoder writes what it can, integers of any size included, and
        # refuses NaN, as it always did.
        return _standard_dumps(to_wire(event)).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        # The check when recording names the field; reaching here means a value
        # changed after that (a list the caller kept and filled).
        size_bound(event)
        msg = f"metadata is not JSON: {type(exc).__name__}"
        raise InvalidEventError(msg) from None


_standard_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=json_default
).encode


def decode_json(raw: bytes) -> Any:
    """The JSON value in `raw`, as dicts, lists and scalars.

    Raises:
        ValueError: `raw` is not JSON (or not UTF-8).
    """
    return orjson.loads(raw)


def check_event(event: LLMEvent, max_bytes: int) -> bytes | None:
    """Refuse `event` now if sending it would fail; cheap unless it is near `max_bytes`.

    Returns:
        The request body when the event was near the limit and had to be
        encoded to measure it (so that the caller need not encode it again),
        else `None`.

    Raises:
        InvalidEventError: A value JSON cannot carry; the message names its field.
        EventTooLargeError: The encoded event is over `max_bytes`; the message
            names its biggest field.
    """
    problem = event._json_problem
    if problem is not None:
        raise InvalidEventError(problem)
    if event._json_size <= max_bytes:
        return None
    body = encode_event(event)
    size = len(body)
    if size > max_bytes:
        msg = (
            f"event of {size:,} bytes is over max_event_bytes ({max_bytes:,}); "
            f"its biggest field is {_largest_field(event)}"
        )
        raise EventTooLargeError(msg)
    return body


def _largest_field(event: LLMEvent) -> str:
    wire = to_wire(event)
    sizes: dict[str, int] = {}
    for part in ("usage", "metadata"):
        for key, value in wire.get(part, {}).items():
            sizes[f"{part}.{field_name(key)}"] = len(encode_value(value))
    status = wire["status"]
    if isinstance(status, dict):
        sizes["errorMessage"] = len(encode_value(status["errorMessage"]))
    name = max(sizes, key=sizes.__getitem__)
    return f"{name} ({sizes[name]:,} bytes)"


def _is_number(value: object) -> TypeGuard[int | float]:
    kind = type(value)
    if kind is float or kind is int:  # the common answer, without the checks below
        return math.isfinite(value)  # type: ignore[arg-type]
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_response(body: object) -> CreateAiEventResponse | None:
    """Read the API's answer, in the documented or the newer shape; `None` if unusable.

    Documented: `{id, createdAt, cost, status?}`. Newer: `{recordId, totalCost,
    timestamp (ms since the epoch), status}`. Unknown keys are ignored and a
    non-numeric cost reads as `None`; only a missing or non-string id makes the
    answer unusable.
    """
    event_id = answer_id(body)
    if event_id is None or not isinstance(body, dict):
        return None
    created_at = body.get("createdAt")
    if not isinstance(created_at, str):
        stamp = body.get("timestamp")
        if _is_number(stamp):
            try:
                created_at = datetime.fromtimestamp(stamp / 1000, tz=UTC).isoformat()
            except (OverflowError, OSError, ValueError):
                created_at = ""
        else:
            created_at = ""
    cost = body.get("cost", body.get("totalCost"))
    if type(cost) is not float or not math.isfinite(cost):  # the common answer needs no more
        cost = float(cost) if _is_number(cost) else None
    status = body.get("status")
    if not isinstance(status, str):
        status = None
    return CreateAiEventResponse(event_id, created_at, cost, status)


def answer_id(body: object) -> str | None:
    """The id in the API's answer, or `None` exactly when `parse_response` finds it unusable.

    What background delivery reads of an answer: nobody sees the rest, unless
    the DEBUG log shows it.
    """
    if not isinstance(body, dict):
        return None
    event_id = body.get("id")
    if type(event_id) is str and event_id:  # the documented answer, with one look-up
        return event_id
    event_id = body.get("id", body.get("recordId"))
    return event_id if isinstance(event_id, str) and event_id else None


def answer_to_json(answer: CreateAiEventResponse) -> dict[str, Any]:
    """The API's documented answer, `{id, createdAt, cost, status}`, for servers that give it."""
    return {
        "id": answer.id,
        "createdAt": answer.created_at,
        "cost": answer.cost,
        "status": answer.status,
    }
