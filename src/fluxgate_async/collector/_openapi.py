"""The collector's HTTP API described as an OpenAPI 3.1 document, served at `/openapi.json`.

The limits the routes enforce are defined here, beside the words that describe
them, so that the document and the checks cannot disagree; the docs' HTTP API
page is rendered from the same document.
"""

from __future__ import annotations

from typing import Any, Final

from .. import __version__
from .._models import AiEventStatus
from ._pricing import PRICED, UNKNOWN_MODEL
from ._store import GROUPS

__all__ = [
    "DEFAULT_LIMIT",
    "IDEMPOTENCY_KEY_PATTERN",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_LIMIT",
    "MAX_TOKENS",
    "OPENAPI_PATH",
    "openapi_document",
    "query_parameters",
]

MAX_TOKENS = 10**12
"""The largest token count accepted; larger is a bug upstream, and SQLite sums must not overflow."""
MAX_IDEMPOTENCY_KEY = 255
"""The longest `Idempotency-Key` accepted, in characters (Stripe's limit)."""
IDEMPOTENCY_KEY_PATTERN = f"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY}}}$"
"""Visible ASCII only: a header value any HTTP stack carries unchanged (UUIDs fit)."""
DEFAULT_LIMIT = 100
"""Events `GET /api/events` returns when no `limit` is given."""
MAX_LIMIT = 1000
"""The most events one `GET /api/events` returns."""
OPENAPI_PATH = "/openapi.json"
"""Where the collector serves this document."""

_JSON: Final = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


def _error(description: str) -> dict[str, Any]:
    return _json_body(_ref("Error"), description)


_TOKENS: Final = {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS}
_MILLISECONDS: Final = {"type": "number", "minimum": 0}
_TEXT: Final = _nullable({"type": "string"})
_COUNT: Final = {"type": "integer", "minimum": 0}

# ISO 8601 as Python reads it (`datetime.fromisoformat`): a date, or a date and time.
_SINCE: Final = {
    "name": "since",
    "in": "query",
    "required": False,
    "description": "Only events created at or after this ISO 8601 date or date and time; "
    "a value without a time zone is UTC.",
    "schema": {
        "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]
    },
    "examples": {"date": {"value": "2026-01-01"}, "time": {"value": "2026-01-01T09:30:00+01:00"}},
}


def _schemas() -> dict[str, Any]:
    statuses = [status.value for status in AiEventStatus]
    return {
        "Error": {
            "type": "object",
            "description": "Every error answer: one line naming the problem and the field.",
            "required": ["error"],
            "properties": {"error": _described({"type": "string"}, "What is wrong, and where.")},
        },
        "AiEventStatus": {
            "type": "string",
            "enum": statuses,
            "description": "The outcome of the LLM call.",
        },
        "AiEventUsage": {
            "type": "object",
            "description": "What one LLM call consumed and how long it took.",
            "required": ["inputTokens", "outputTokens"],
            "additionalProperties": False,
            "properties": {
                "inputTokens": _described(_TOKENS, "Prompt tokens, cached ones included."),
                "outputTokens": _described(_TOKENS, "Completion tokens, reasoning included."),
                "cachedTokens": _described(
                    _nullable(_TOKENS), "Prompt tokens read from the provider's cache."
                ),
                "model": _described(_TEXT, "The model, as the provider names it."),
                "provider": _described(_TEXT, "`openai`, `anthropic`, `google`, ..."),
                "latencyInMs": _described(
                    _nullable(_MILLISECONDS), "From request to complete answer."
                ),
                "isStreamed": _described(
                    _nullable({"type": "boolean"}), "Whether the answer was streamed."
                ),
                "streamingDurationInMs": _described(
                    _nullable(_MILLISECONDS), "From the first streamed chunk to the last."
                ),
            },
        },
        "TrackedUser": {
            "type": "object",
            "description": "The end user the call was made for, when more than an id is known.",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {
                "id": _described({"type": "string"}, "Your id for the user."),
                "name": _TEXT,
                "email": _TEXT,
                "image": _TEXT,
                "monthlyRevenue": _described(
                    _nullable({"type": "number", "minimum": 0}), "US dollars a month."
                ),
            },
        },
        "AiEventMetadata": {
            "type": "object",
            "description": "Who and what the call was for. Any further key is kept as sent; "
            "the snake_case spellings of the named keys are refused.",
            "properties": {
                "feature": _described(_TEXT, "The product feature the call served."),
                "step": _described(_TEXT, "The step of that feature (an agent's tool, ...)."),
                "user": {
                    "description": "The end user: an id, or a TrackedUser.",
                    "anyOf": [{"type": "string"}, _ref("TrackedUser"), {"type": "null"}],
                },
                "sessionId": _TEXT,
                "conversationId": _TEXT,
                "timestamp": _described(
                    _nullable({"type": "string", "format": "date-time"}),
                    "When the call was made (ISO 8601).",
                ),
            },
            "propertyNames": {"not": {"enum": ["session_id", "conversation_id"]}},
        },
        "LLMEvent": {
            "type": "object",
            "description": "One LLM call, as the client sends it.",
            "required": ["usage"],
            "additionalProperties": False,
            "properties": {
                "usage": _described(_ref("AiEventUsage"), "Tokens, model and timing."),
                "status": {
                    "description": "The outcome; `SUCCESS` when left out. The object form "
                    "carries the error message.",
                    "anyOf": [
                        _ref("AiEventStatus"),
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "status": _nullable(_ref("AiEventStatus")),
                                "errorMessage": _TEXT,
                            },
                        },
                        {"type": "null"},
                    ],
                },
                "metadata": _described(
                    _nullable(_ref("AiEventMetadata")), "Feature, user, session, and your own keys."
                ),
            },
        },
        "EventAnswer": {
            "type": "object",
            "description": "What the collector answers for a stored event.",
            "required": ["id", "createdAt", "cost", "status"],
            "properties": {
                "id": _described({"type": "string"}, "The stored event's id, `evt_...`."),
                "createdAt": _described(
                    {"type": "string", "format": "date-time"}, "When it was stored, in UTC."
                ),
                "cost": _described(
                    _nullable({"type": "number", "minimum": 0}), "US dollars; null if unpriced."
                ),
                "status": {
                    "type": "string",
                    "enum": [PRICED, UNKNOWN_MODEL],
                    "description": f"`{PRICED}` when priced; `{UNKNOWN_MODEL}` (and `cost` "
                    "null) when the model's price is not known.",
                },
            },
        },
        "StoredEvent": {
            "description": "A stored event: its answer, and the event as it was sent.",
            "allOf": [
                _ref("EventAnswer"),
                {
                    "type": "object",
                    "required": ["event"],
                    "properties": {"event": _described(_ref("LLMEvent"), "The event as sent.")},
                },
            ],
        },
        "EventPage": {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": _described(
                    {"type": "array", "items": _ref("StoredEvent")}, "Oldest first."
                ),
                "nextCursor": {
                    **_TEXT,
                    "description": "Pass as `cursor` to get the next page; null on the last.",
                },
            },
        },
        "SummaryRow": {
            "type": "object",
            "description": "One group: its value under the `group_by` name, then its totals.",
            "required": [
                "calls",
                "inputTokens",
                "outputTokens",
                "tokens",
                "cost",
                "unpriced",
                "errors",
            ],
            "properties": {
                "calls": _described({"type": "integer", "minimum": 1}, "Events in the group."),
                "inputTokens": _described(_COUNT, "Their prompt tokens."),
                "outputTokens": _described(_COUNT, "Their completion tokens."),
                "tokens": _described(_COUNT, "Prompt and completion tokens."),
                "cost": _described(
                    _nullable({"type": "number", "minimum": 0}),
                    "US dollars of the priced events; null when none is priced.",
                ),
                "unpriced": _described(_COUNT, "Events whose model has no known price."),
                "errors": _described(_COUNT, "Events whose status is not `SUCCESS`."),
            },
            "additionalProperties": _TEXT,
        },
        "Summary": {
            "type": "object",
            "required": ["groupBy", "rows"],
            "properties": {
                "groupBy": _described(
                    {"type": "string", "enum": list(GROUPS)}, "The `group_by` asked for."
                ),
                "rows": _described(
                    {"type": "array", "items": _ref("SummaryRow")}, "Costliest first."
                ),
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": _described({"type": "string"}, "`ok` when healthy.")},
        },
    }


def _paths(max_body_size: int, secured: list[dict[str, list[str]]]) -> dict[str, Any]:
    unauthorized = _error("The API key is missing or wrong.")
    return {
        "/api/events": {
            "post": {
                "operationId": "recordEvent",
                "summary": "Record one event",
                "description": "Validates the event, prices it and stores it. It is answered "
                "only once committed to disk. A repeated `Idempotency-Key` gets the first "
                "answer and stores nothing new.",
                "security": secured,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "The same key for every retry of one event: "
                        f"1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters.",
                        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "description": f"The event, as JSON of at most {max_body_size} bytes "
                    "once decoded; `Content-Encoding` gzip or deflate is accepted.",
                    "content": {_JSON: {"schema": _ref("LLMEvent")}},
                },
                "responses": {
                    "200": _json_body(_ref("EventAnswer"), "Stored (or stored before)."),
                    "400": _error("The body or a header is invalid; the message names it."),
                    "401": unauthorized,
                    "413": _error(f"The body is over {max_body_size} bytes."),
                    "415": _error("The body's `Content-Encoding` is not supported."),
                    "503": _error("The event could not be stored; retry it."),
                },
            },
            "get": {
                "operationId": "listEvents",
                "summary": "List stored events",
                "description": "Oldest first, each with its answer and the event as sent.",
                "security": secured,
                "parameters": [
                    _SINCE,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "The most events to return.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "Where the previous page ended: its `nextCursor`, as "
                        "given (an opaque string).",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json_body(_ref("EventPage"), "A page of events."),
                    "400": _error("A query parameter is invalid; the message names it."),
                    "401": unauthorized,
                },
            },
        },
        "/api/summary": {
            "get": {
                "operationId": "summarise",
                "summary": "Calls, tokens and cost per group",
                "description": "Costliest group first. `cost` sums the priced events; "
                "`unpriced` counts those with an unknown model, `errors` those whose status "
                "is not `SUCCESS`.",
                "security": secured,
                "parameters": [
                    {
                        "name": "group_by",
                        "in": "query",
                        "required": False,
                        "description": "What to group on.",
                        "schema": {"type": "string", "enum": list(GROUPS), "default": "model"},
                    },
                    _SINCE,
                ],
                "responses": {
                    "200": _json_body(_ref("Summary"), "One row per group."),
                    "400": _error("A query parameter is invalid; the message names it."),
                    "401": unauthorized,
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Whether the collector is up",
                "description": "Never asks for a key.",
                "security": [],
                "responses": {
                    "200": _json_body(_ref("Health"), 'Up: `{"status": "ok"}`.'),
                    "503": _json_body(_ref("Health"), "Up, but it cannot store events."),
                },
            },
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "description": "Never asks for a key.",
                "security": [],
                "responses": {
                    "200": _json_body({"type": "object"}, "The OpenAPI 3.1 document."),
                },
            },
        },
    }


def openapi_document(*, max_body_size: int, keys_required: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a collector with these settings.

    Args:
        max_body_size: Bytes; a larger request body gets 413.
        keys_required: Whether the `/api/` routes ask for a Bearer key; when not,
            they are documented as open to anyone.
    """
    bearer: list[dict[str, list[str]]] = [{"apiKey": []}]
    secured = bearer if keys_required else [*bearer, {}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "FluxGate local collector",
            "version": __version__,
            "summary": "FluxGate's event API, stored in SQLite and priced locally.",
            "description": "Served by `fluxgate-async serve`. Every error answer is JSON, "
            '`{"error": "..."}`, naming the problem.',
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": _paths(max_body_size, secured),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the keys the collector was started with "
                    "(`serve --api-key`).",
                }
            },
        },
    }


def query_parameters(document: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    """The query parameters `document` lists, per (HTTP method, path); any other is refused."""
    return {
        (method.upper(), path): frozenset(
            p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"
        )
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
