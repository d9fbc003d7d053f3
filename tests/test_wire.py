"""The wire format: the TypeScript SDK's JSON, both ways, and the API's two answer shapes."""

from __future__ import annotations

import enum
import json
import re
import string
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxgate_async import (
    AiEventMetadata,
    AiEventStatus,
    AiEventUsage,
    CreateAiEventResponse,
    LLMEvent,
    TrackedUser,
)
from fluxgate_async._models import _METADATA_NAMES
from fluxgate_async._wire import (
    EventTooLargeError,
    InvalidEventError,
    answer_id,
    answer_to_json,
    check_event,
    converter,
    encode_event,
    parse_response,
    to_event,
    to_wire,
)

SEED_FULL_EVENT: dict[str, Any] = {
    "usage": {
        "inputTokens": 100,
        "outputTokens": 50,
        "cachedTokens": 20,
        "model": "gpt-4",
        "provider": "openai",
        "latencyInMs": 1500,
        "isStreamed": True,
        "streamingDurationInMs": 2000,
    },
    "status": "SUCCESS",
    "metadata": {
        "feature": "chat",
        "step": "generation",
        "user": {
            "id": "user-123",
            "name": "Test User",
            "email": "test@example.com",
            "monthlyRevenue": 99.99,
        },
        "sessionId": "session-456",
        "conversationId": "conv-789",
        "customField": "custom value",
    },
}


def test_full_seed_event_round_trips_to_the_same_json() -> None:
    """The seed's 'complex metadata' event reads into models and writes back identically."""
    event = to_event(SEED_FULL_EVENT)
    assert event.metadata is not None
    assert event.metadata.user == TrackedUser(
        "user-123", name="Test User", email="test@example.com", monthly_revenue=99.99
    )
    assert event.metadata.extra == {"customField": "custom value"}
    assert to_wire(event) == SEED_FULL_EVENT


def test_models_write_camel_case_and_omit_none() -> None:
    """Snake-case fields go out camelCase, and unset fields are left out entirely."""
    event = LLMEvent(
        AiEventUsage(10, 5, latency_in_ms=12.5, streaming_duration_in_ms=3),
        metadata=AiEventMetadata(session_id="s", conversation_id="c", user="u"),
    )
    assert json.loads(encode_event(event)) == {
        "usage": {
            "inputTokens": 10,
            "outputTokens": 5,
            "latencyInMs": 12.5,
            "streamingDurationInMs": 3,
        },
        "status": "SUCCESS",
        "metadata": {"sessionId": "s", "conversationId": "c", "user": "u"},
    }


def test_status_with_a_message_is_the_object_form() -> None:
    """An error message turns status into {status, errorMessage}, as the seed sends it."""
    event = LLMEvent(AiEventUsage(100, 0), status="ERROR", error_message="API call failed")
    assert to_wire(event)["status"] == {"status": "ERROR", "errorMessage": "API call failed"}


def test_both_status_forms_read_back() -> None:
    """A mapping may give status as a bare string or as the object form."""
    usage = {"inputTokens": 1, "outputTokens": 0}
    bare = to_event({"usage": usage, "status": "BLOCKED"})
    assert (bare.status, bare.error_message) == (AiEventStatus.BLOCKED, None)
    full = to_event({"usage": usage, "status": {"status": "ERROR", "errorMessage": "rate limited"}})
    assert (full.status, full.error_message) == (AiEventStatus.ERROR, "rate limited")
    assert to_event({"usage": usage}).status is AiEventStatus.SUCCESS


def test_timestamp_is_iso_8601_both_ways() -> None:
    """A datetime goes out as ISO 8601 and an ISO string (or datetime) comes back in."""
    when = datetime(2026, 5, 5, 12, 30, tzinfo=UTC)
    event = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(timestamp=when))
    assert to_wire(event)["metadata"] == {"timestamp": "2026-05-05T12:30:00+00:00"}
    mapping = {"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": {"timestamp": when}}
    parsed = to_event(mapping).metadata
    assert parsed is not None
    assert parsed.timestamp == when


def test_to_event_returns_a_model_unchanged() -> None:
    """A model passes through as the same object: no copy on the hot path."""
    event = LLMEvent(AiEventUsage(1, 1))
    assert to_event(event) is event


def test_reading_a_mapping_leaves_it_untouched() -> None:
    """The caller's mapping is not modified (the seed sets `status` in place)."""
    mapping: dict[str, Any] = {"usage": {"inputTokens": 1, "outputTokens": 1}}
    to_event(mapping)
    assert mapping == {"usage": {"inputTokens": 1, "outputTokens": 1}}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"usage": {"inputTokens": -1, "outputTokens": 2}},
            r"usage\.inputTokens: must be a non-negative int, got -1",
        ),
        ({"usage": {"outputTokens": 2}}, r"usage\.inputTokens: required field missing"),
        ({"usage": {"inputTokens": 1, "outputTokens": 2, "tokens": 3}}, r"unknown field.*tokens"),
        (
            {"usage": {"inputTokens": "1", "outputTokens": 2}},
            r"usage\.inputTokens: must be .* got str",
        ),
        ({"usage": 3}, r"usage must be an object"),
        ({}, r"usage is required"),
        ({"usage": {"inputTokens": 1, "outputTokens": 1}, "cost": 1}, r"unknown event field.*cost"),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "status": "FINE"},
            r"status must be one of",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "status": {"state": "ERROR"}},
            r"unknown status field.*state",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": {"user": {"name": "x"}}},
            r"metadata\.user\.id: required field missing",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": {"user": 7}},
            r"metadata\.user must be a string or an object",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": {"timestamp": "soon"}},
            r"metadata\.timestamp must be an ISO 8601 string",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": ["x"]},
            r"metadata must be an object",
        ),
        ([1, 2], r"an event must be an LLMEvent or a mapping"),
    ],
)
def test_invalid_mappings_name_the_field(mapping: Any, message: str) -> None:
    """Every way a mapping can be wrong gives an error that says where."""
    with pytest.raises((TypeError, ValueError), match=message):
        to_event(mapping)


def test_unserialisable_extra_names_the_field() -> None:
    """A metadata value JSON cannot hold is refused at encoding, naming its field."""
    bad = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra={"when": object()}))
    with pytest.raises(InvalidEventError, match=r"^metadata\.when: object is not JSON; pass a"):
        encode_event(bad)
    nan = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra={"score": float("nan")}))
    with pytest.raises(InvalidEventError, match=r"^metadata\.score: nan is not JSON; pass a fin"):
        encode_event(nan)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"id": "evt_1", "createdAt": "2026-05-05T00:00:00Z", "cost": 0.001},
            CreateAiEventResponse("evt_1", "2026-05-05T00:00:00Z", 0.001),
        ),
        (
            {"id": "evt_1", "createdAt": "t", "cost": None, "status": "SUCCESS", "x": [1]},
            CreateAiEventResponse("evt_1", "t", None, "SUCCESS"),
        ),
        (
            {"recordId": "rec_9", "totalCost": 2, "timestamp": 1_778_000_000_000, "status": "OK"},
            CreateAiEventResponse("rec_9", "2026-05-05T16:53:20+00:00", 2.0, "OK"),
        ),
        (
            {"id": "evt_1", "cost": "0.1", "status": 3},
            CreateAiEventResponse("evt_1", "", None, None),
        ),
        ({"id": "evt_1", "cost": True}, CreateAiEventResponse("evt_1", "", None, None)),
        (
            {"recordId": "r", "timestamp": 10**30},
            CreateAiEventResponse("r", "", None, None),
        ),
    ],
)
def test_parse_response_reads_both_api_shapes(
    body: object, expected: CreateAiEventResponse
) -> None:
    """Documented and newer answers both parse; odd cost or status types read as None."""
    assert parse_response(body) == expected


@pytest.mark.parametrize(
    "body", [None, [], "evt", 1, {}, {"id": 5}, {"id": ""}, {"recordId": None}]
)
def test_parse_response_needs_a_string_id(body: object) -> None:
    """Without a usable id there is no recorded event to report."""
    assert parse_response(body) is None


_text = st.text(string.ascii_letters + string.digits + " -_é", max_size=12)
_count = st.integers(min_value=0, max_value=10**12)
_duration = st.one_of(st.none(), _count, st.floats(min_value=0, max_value=1e9, allow_nan=False))
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_answer_values = st.one_of(
    _json_leaf,
    st.sampled_from([float("nan"), float("inf"), "", "evt_1"]),
    st.lists(_json_leaf, max_size=2),
)


@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["id", "recordId", "cost", "totalCost", "createdAt", "status", "x"]),
            _answer_values,
            max_size=5,
        ),
        _answer_values,
    )
)
def test_answer_id_is_the_id_parse_response_reads(body: object) -> None:
    """Background delivery's reading of an answer refuses exactly what parse_response refuses."""
    parsed = parse_response(body)
    assert answer_id(body) == (None if parsed is None else parsed.id)


@pytest.mark.parametrize(
    ("body", "event_id"),
    [
        ({"id": "evt_1", "recordId": "rec_1"}, "evt_1"),
        ({"recordId": "rec_1"}, "rec_1"),
        ({"id": "", "recordId": "rec_1"}, None),
        ({"id": 5, "recordId": "rec_1"}, None),
        ({"id": None, "recordId": "rec_1"}, None),
    ],
)
def test_an_answer_with_an_unusable_id_is_not_read_for_its_record_id(
    body: dict[str, object], event_id: str | None
) -> None:
    """`recordId` is read only from answers without `id`: a broken `id` makes them unusable."""
    parsed = parse_response(body)
    assert (None if parsed is None else parsed.id) == event_id
    assert answer_id(body) == event_id


@pytest.mark.parametrize(
    ("cost", "read"),
    [
        (0.5, 0.5),
        (2, 2.0),
        (float("nan"), None),
        (float("inf"), None),
        (True, None),
        ("0.1", None),
        (None, None),
    ],
)
def test_parse_response_reads_a_cost_only_when_it_is_a_finite_number(
    cost: object, read: float | None
) -> None:
    """A finite float or int is the cost, as a float; NaN, infinity, a bool or text read as None."""
    parsed = parse_response({"id": "evt_1", "cost": cost})
    assert parsed is not None
    assert parsed.cost == read
    assert type(parsed.cost) is type(read)


_users = st.one_of(
    st.none(),
    _text,
    st.builds(
        TrackedUser,
        id=_text,
        name=st.none() | _text,
        email=st.none() | _text,
        image=st.none() | _text,
        monthly_revenue=_duration,
    ),
)
_times = st.none() | st.datetimes(
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])
)
_events = st.builds(
    LLMEvent,
    usage=st.builds(
        AiEventUsage,
        input_tokens=_count,
        output_tokens=_count,
        cached_tokens=st.none() | _count,
        model=st.none() | _text,
        provider=st.none() | _text,
        latency_in_ms=_duration,
        is_streamed=st.none() | st.booleans(),
        streaming_duration_in_ms=_duration,
    ),
    status=st.sampled_from(AiEventStatus),
    error_message=st.none() | _text,
    metadata=st.none()
    | st.builds(
        AiEventMetadata,
        feature=st.none() | _text,
        step=st.none() | _text,
        user=_users,
        session_id=st.none() | _text,
        conversation_id=st.none() | _text,
        timestamp=_times,
        extra=st.dictionaries(
            # Every name of a field, either spelling: as an extra key it is refused.
            _text.filter(lambda k: k not in _METADATA_NAMES),
            _json,
            max_size=3,
        ),
    ),
)


@given(_events)
def test_model_to_json_to_model_is_the_identity(event: LLMEvent) -> None:
    """Any valid event survives encoding to JSON bytes and reading back unchanged."""
    assert to_event(json.loads(encode_event(event))) == event


def test_cyclic_extra_is_refused_naming_the_field() -> None:
    """An extra value that contains itself cannot be JSON: a clear error, not a crash."""
    loop: list[Any] = []
    loop.append(loop)
    bad = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra={"loop": loop}))
    with pytest.raises(InvalidEventError, match=r"^metadata\.loop\[0\]: contains itself$"):
        encode_event(bad)


def test_answer_json_reads_back_as_the_same_answer() -> None:
    """What the local servers answer is exactly what the client parses."""
    answer = CreateAiEventResponse("evt_1", "2026-05-05T00:00:00+00:00", None, "UNKNOWN_MODEL")
    assert parse_response(json.loads(json.dumps(answer_to_json(answer)))) == answer


def _with_extra(**extra: Any) -> LLMEvent:
    return LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra=extra))


class _Plan(enum.StrEnum):
    PRO = "pro"


class _Level(enum.IntEnum):
    HIGH = 3


def test_dates_decimals_and_uuids_are_sent_as_javascript_would() -> None:
    """datetime/date as ISO 8601 text, Decimal as a number, UUID as its text."""
    when = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    ev = _with_extra(
        at=when,
        day=date(2026, 11, 27),
        price=Decimal("0.125"),
        id=ident,
        nested={"list": [when, Decimal(2)]},
        plan=_Plan.PRO,
        level=_Level.HIGH,
        flags=(True, None),
    )
    check_event(ev, 1024)
    sent = json.loads(encode_event(ev))["metadata"]
    assert sent == {
        "at": "2026-11-27T08:30:00+00:00",
        "day": "2026-11-27",
        "price": 0.125,
        "id": "12345678-1234-5678-1234-567812345678",
        "nested": {"list": ["2026-11-27T08:30:00+00:00", 2.0]},
        "plan": "pro",
        "level": 3,
        "flags": [True, None],
    }


def test_enum_and_str_subclass_keys_are_sent_as_their_text() -> None:
    """A StrEnum member or str subclass as a metadata key, at any depth, is sent as its text."""
    ev = LLMEvent(
        AiEventUsage(1, 1),
        metadata=AiEventMetadata(
            extra={
                _Plan.PRO: 1,
                "by_plan": {_Plan.PRO: 2},
                "rows": [{_Key("tier"): 3}],
                "price": Decimal("0.5"),  # and the values JSON has no type for, as always
            }
        ),
    )
    check_event(ev, 1024)
    sent = json.loads(encode_event(ev))["metadata"]
    assert sent == {"pro": 1, "by_plan": {"pro": 2}, "rows": [{"tier": 3}], "price": 0.5}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"blob": b"x"}, "metadata.blob: bytes is not JSON; pass a str"),
        ({"tags": {"a"}}, "metadata.tags: set is not JSON; pass a list"),
        ({"o": object()}, "metadata.o: object is not JSON; pass a str, number, bool"),
        ({"t": time(8, 30)}, "metadata.t: time is not JSON"),
        ({"deep": {"list": [1, b"x"]}}, "metadata.deep.list[1]: bytes is not JSON"),
        ({"feature2": "a\ud800b"}, "metadata.feature2: text holds a lone surrogate ('\\ud800' at"),
        ({"big": 10**30}, "metadata.big: int of 100 bits is too large for JSON; pass a str"),
        ({"inf": float("inf")}, "metadata.inf: inf is not JSON; pass a finite number"),
        ({"d": Decimal("NaN")}, "metadata.d: Decimal NaN is not a JSON number"),
        ({"d": Decimal("1e400")}, "metadata.d: Decimal 1E+400 is not a JSON number"),
        ({"k": {1: "a"}}, "metadata.k: key 1 (int) is not JSON; use str keys"),
        ({"a\udc80": 1}, "metadata.a\\udc80: text holds a lone surrogate"),
    ],
)
def test_values_json_cannot_carry_are_refused_naming_the_field(
    extra: dict[str, Any], message: str
) -> None:
    """bytes, sets, objects, lone surrogates, huge ints: refused with the field's path."""
    with pytest.raises(InvalidEventError) as raised:
        check_event(_with_extra(**extra), 1024 * 1024)
    assert str(raised.value).startswith(message)


def test_a_lone_surrogate_in_a_named_field_is_named() -> None:
    """metadata.feature with a lone surrogate: the message names it, not a TypeError's text."""
    ev = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(feature="caf\udce9"))
    with pytest.raises(InvalidEventError, match=r"^metadata\.feature: text holds a lone surr"):
        check_event(ev, 1024)
    with pytest.raises(InvalidEventError, match=r"^metadata\.feature: text holds a lone surr"):
        encode_event(ev)


def test_huge_token_counts_are_blamed_on_their_field() -> None:
    """inputTokens=10**5000 names usage.inputTokens, not metadata."""
    with pytest.raises(InvalidEventError, match=r"^usage\.inputTokens: must be below 2\*\*63"):
        to_event({"usage": {"inputTokens": 10**5000, "outputTokens": 1}})


def test_an_event_over_the_size_limit_names_its_biggest_field() -> None:
    """The size cap counts encoded bytes and names the largest field."""
    ev = LLMEvent(
        AiEventUsage(1, 1, model="m"),
        metadata=AiEventMetadata(feature="f" * 2000, extra={"notes": "n" * 500}),
    )
    # Close to the bound: measured exactly, it fits, and the body measured is the one to send.
    assert check_event(ev, 4000) == encode_event(ev)
    assert check_event(ev, 1024 * 1024) is None  # far below: nothing encoded
    with pytest.raises(EventTooLargeError) as raised:
        check_event(ev, 2000)
    assert str(raised.value).startswith("event of 2,")
    assert "over max_event_bytes (2,000); its biggest field is metadata.feature (2,002 bytes)" in (
        str(raised.value)
    )
    status = LLMEvent(AiEventUsage(1, 1), status="ERROR", error_message="e" * 3000)
    with pytest.raises(EventTooLargeError, match=r"biggest field is errorMessage \(3,002 bytes\)"):
        check_event(status, 2000)


def test_nesting_deeper_than_a_hundred_levels_is_refused() -> None:
    """A value nested 150 deep is refused with its path, before the encoder recurses."""
    deep: list[Any] = []
    inner = deep
    for _ in range(150):
        inner.append([])
        inner = inner[0]
    with pytest.raises(InvalidEventError, match=r"nested more than 100 levels deep$"):
        check_event(_with_extra(deep=deep), 1024 * 1024)


def test_a_tuple_key_inside_extra_is_refused_naming_the_field() -> None:
    """A key JSON cannot carry is refused, never dropped: when recorded, and when sent."""
    tuple_key = "metadata.scores: key (1, 2) (tuple) is not JSON; use str keys"
    with pytest.raises(InvalidEventError, match=re.escape(tuple_key)):
        check_event(_with_extra(scores={(1, 2): 0.5}), 1024)
    scores: dict[Any, float] = {"a": 0.5}
    late = _with_extra(scores=scores)
    check_event(late, 1024)
    scores[(1, 2)] = 0.7  # changed after it was recorded
    with pytest.raises(InvalidEventError, match=re.escape(tuple_key)):
        encode_event(late)


def test_an_unchecked_event_with_a_huge_integer_still_encodes() -> None:
    """An 89-bit integer refused when recording is still written exactly for a caller storing it."""
    when = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    extra = {"big": [-(2**88)], "when": when, "id": ident}
    ev = LLMEvent(AiEventUsage(1, 1), metadata=AiEventMetadata(extra=extra))
    with pytest.raises(InvalidEventError, match=r"^metadata\.big\[0\]: int of 89 bits"):
        check_event(ev, 1024)
    sent = json.loads(encode_event(ev))["metadata"]
    assert sent == {"big": [-(2**88)], "when": when.isoformat(), "id": str(ident)}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1, "streamingDurationInMs": -1}},
            "usage.streamingDurationInMs: must be a non-negative finite number, got -1",
        ),
        (
            {"usage": {"x": 1}},
            "usage.inputTokens: required field missing; usage.outputTokens: required field"
            " missing; usage: unknown field(s) x",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1, "b": 1, "a @ c": 2}},
            "usage: unknown field(s) a @ c, b",
        ),
    ],
    ids=["three_part_name", "several_problems", "two_unknown_fields"],
)
def test_invalid_usage_gets_the_whole_message(mapping: Any, message: str) -> None:
    """Every problem is listed, each under the camelCase path the caller wrote."""
    with pytest.raises(InvalidEventError) as raised:
        to_event(mapping)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"timestamp": "soon"}, "metadata.timestamp must be an ISO 8601 string, got 'soon'"),
        ({"timestamp": 5}, "metadata.timestamp must be an ISO 8601 string, got 5"),
        ({"user": 7}, "metadata.user must be a string or an object, got int"),
    ],
    ids=["timestamp_text", "timestamp_number", "user_number"],
)
def test_invalid_metadata_fields_get_the_whole_message(mapping: Any, message: str) -> None:
    """A bad timestamp or user is refused with the value or type it got."""
    with pytest.raises((TypeError, ValueError)) as raised:
        to_event({"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": mapping})
    assert str(raised.value) == message


def test_metadata_that_is_not_an_object_names_its_type() -> None:
    """A metadata list is refused as a TypeError saying it got a list."""
    with pytest.raises(TypeError) as raised:
        to_event({"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": ["x"]})
    assert str(raised.value) == "metadata must be an object, got list"


def test_an_oversized_event_names_a_large_usage_field_and_reads_decimals() -> None:
    """The biggest field may be in usage; a Decimal in metadata is measured, not an error."""
    ev = LLMEvent(
        AiEventUsage(1, 1, model="m" * 3000),
        metadata=AiEventMetadata(feature="f", extra={"price": Decimal("0.125"), "n": "n" * 100}),
    )
    with pytest.raises(EventTooLargeError) as raised:
        check_event(ev, 2000)
    assert str(raised.value) == (
        "event of 3,222 bytes is over max_event_bytes (2,000); "
        "its biggest field is usage.model (3,002 bytes)"
    )


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ([1, 2], "an event must be an LLMEvent or a mapping, got list"),
        ({"usage": 3}, "usage must be an object, got int"),
        ({}, "usage is required"),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "cost": 1, "at": 2},
            "unknown event field(s): at, cost",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1}, "status": {"state": 1, "code": 2}},
            "unknown status field(s): code, state",
        ),
    ],
    ids=["list", "usage_number", "no_usage", "two_unknown_fields", "two_unknown_status_fields"],
)
def test_an_invalid_event_gets_the_whole_message(mapping: Any, message: str) -> None:
    """The shape of the event itself is refused with every unknown field listed."""
    with pytest.raises((TypeError, ValueError)) as raised:
        to_event(mapping)
    assert str(raised.value) == message


# Values a caller may put anywhere in a mapping, right or wrong.
_ANY_VALUE: st.SearchStrategy[Any] = st.sampled_from(
    [None, -1, 0, 7, 1.5, float("nan"), True, "x", "ERROR", "", 10**30, [], {}, ["a"]]
) | st.dictionaries(st.sampled_from(["id", "name", "x", 1]), st.sampled_from(["u", 3, None]))


@st.composite
def _mappings(draw: st.DrawFn) -> Any:
    """A valid event's JSON with one value changed, one key added or one removed."""
    mapping = json.loads(encode_event(draw(_events)))
    parts = [mapping] + [mapping[k] for k in ("usage", "metadata") if k in mapping]
    if isinstance(mapping["status"], dict):
        parts.append(mapping["status"])
    part = draw(st.sampled_from(parts))
    change = draw(st.sampled_from(["set", "add", "remove", "none"]))
    if change == "set" and part:
        part[draw(st.sampled_from(sorted(part)))] = draw(_ANY_VALUE)
    elif change == "add":
        key = draw(st.sampled_from(["usage", "status", "metadata", "inputTokens", "user", "cost"]))
        part[key] = draw(_ANY_VALUE)
    elif change == "remove" and part:
        del part[draw(st.sampled_from(sorted(part)))]
    return mapping


def _outcome(read: Any, mapping: Any) -> object:
    try:
        return read(mapping)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


@given(_mappings())
def test_a_mapping_reads_as_the_converter_reads_it(mapping: Any) -> None:
    """The quick read of a mapping gives the converter's event, or its exact error."""
    assert _outcome(to_event, mapping) == _outcome(
        lambda m: converter.structure(m, LLMEvent), mapping
    )


class _Key(str):
    """A str subclass, as an application's own enum members are."""


@pytest.mark.parametrize(
    "metadata",
    [{1: "x"}, {_Key("plan"): "pro"}, {"feature": "chat", "tier": 2, "user": {"id": "u"}}],
    ids=["int_key", "str_subclass_key", "extra_and_user"],
)
def test_metadata_keys_of_any_kind_read_as_the_converter_reads_them(metadata: Any) -> None:
    """A metadata key that is not a plain str gives the converter's event or error."""
    mapping = {"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": metadata}
    assert _outcome(to_event, mapping) == _outcome(
        lambda m: converter.structure(m, LLMEvent), mapping
    )


_USAGE = {"inputTokens": 120, "outputTokens": 45}


@pytest.mark.parametrize(
    "mapping",
    [
        {"usage": _USAGE},
        {
            "usage": {
                **_USAGE,
                "cachedTokens": 100,
                "model": "gpt-4o",
                "provider": "openai",
                "latencyInMs": 830,
                "isStreamed": True,
                "streamingDurationInMs": 610,
            },
            "status": "ERROR",
        },
        {"usage": _USAGE, "status": {"status": "ERROR", "errorMessage": "rate limited"}},
        {"usage": _USAGE, "status": AiEventStatus.ERROR},
        {"usage": _USAGE, "metadata": {"feature": "chat", "user": "user-1"}},
        {
            "usage": _USAGE,
            "status": "SUCCESS",
            "metadata": {
                "feature": "chat",
                "step": "answer",
                "user": {"id": "user-1", "name": "Ada", "monthlyRevenue": 20.0},
                "sessionId": "s-1",
                "conversationId": "c-1",
                "timestamp": "2026-11-28T01:30:00Z",
                "team": "search",
                "tags": ["beta"],
            },
        },
    ],
)
def test_the_usual_mappings_are_read_without_the_converter(
    mapping: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shapes most calls send take the quick read, to exactly the converter's event.

    That read is what keeps `record_event_nowait` with a mapping within its few
    microseconds (docs/performance.md); the converter stays for everything else
    and for the messages that name the field.
    """
    expected = converter.structure(mapping, LLMEvent)

    def converter_used(value: object, _: object) -> LLMEvent:
        raise AssertionError(f"the converter read {value!r}")

    monkeypatch.setattr("fluxgate_async._wire._structure_event", converter_used)
    assert to_event(mapping) == expected
