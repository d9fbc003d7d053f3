"""JSON in and out of the collector's ingest route, through orjson.

Reading each event and writing its answer are, after HTTP itself, the largest
part of what an event costs the collector; orjson does both several times
faster than the standard library.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NoReturn

import orjson

from .._models import LLMEvent
from .._wire import encode_event, to_wire

__all__ = ["dump_json", "event_json", "parse_json"]


def _reject_constant(name: str) -> NoReturn:
    msg = f"{name} is not a JSON number"
    raise ValueError(msg)


def parse_json(raw: bytes) -> Any:
    """The value of the JSON document `raw`, refusing `NaN` and `Infinity`.

    Raises:
        ValueError: `raw` is not JSON; the message says where it goes wrong.
        RecursionError: It nests too deeply.
    """
    # orjson reads an integer past 64 bits as a float, losing digits: a document with a
    # run of 19 digits or more (which such an integer needs) is read the standard way.
    if not _LONG_NUMBER.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    # What orjson refuses (UTF-16 text, lone surrogates, numbers past a float's range)
    # is read as it always was: accepted or refused alike, with the same message.
    return json.loads(raw, parse_constant=_reject_constant)


_LONG_NUMBER: Final = re.compile(rb"[0-9]{19}")


def dump_json(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON."""
    return orjson.dumps(value)


def event_json(event: LLMEvent) -> str:
    """`event` as the API's compact wire JSON, as the collector stores it.

    Raises:
        InvalidEventError: A value cannot be written as JSON.
    """
    try:
        data = dump_json(to_wire(event))
    except TypeError:  # orjson's JSONEncodeError: integers past 64 bits, lone surrogates
        data = b"null"
    # orjson writes infinity and NaN as null where the standard encoder refuses them and
    # names the field: any null goes the standard way (a null the sender wrote, too).
    if b"null" in data:
        data = encode_event(event)
    return data.decode()
