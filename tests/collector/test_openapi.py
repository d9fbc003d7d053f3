"""The collector's published HTTP API: its OpenAPI document, checked by schemathesis live.

schemathesis generates requests from the document, valid and invalid, sends
them to a real `fluxgate-async serve` on loopback and checks every answer: no
500, every status and body as documented, invalid input refused, valid input
accepted, and the key asked for wherever the document says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import schemathesis
from docs_hooks import HTTP_API_MARKER, on_page_markdown
from hypothesis import HealthCheck, settings

from fluxgate_async.collector import DEFAULT_MAX_BODY_SIZE
from fluxgate_async.collector._http_reference import (
    describe_type,
    documented_api,
    http_api_reference,
    openapi_json,
)
from fluxgate_async.collector._openapi import openapi_document

from .conftest import CollectorProcess

ROOT = Path(__file__).resolve().parent.parent.parent

KEY = "schema-key"
EXAMPLES = 150
"""Requests generated per operation and generation mode: a few seconds for each."""


def _all_sent(query: dict[str, Any]) -> bool:
    """Whether `requests` sends every parameter of `query`, each with a value."""
    # It leaves out a parameter whose value is None, or a list or object holding only
    # None or empty lists and objects ({"x": [[]]} sends nothing for x): the URL it
    # prepares says which are left.
    url = requests.Request("GET", "http://127.0.0.1/", params=query).prepare().url
    sent = {name for name, _ in parse_qsl(urlsplit(url or "").query, keep_blank_values=True)}
    return set(query) <= sent


def _schema(*, keys_required: bool) -> schemathesis.BaseSchema:
    document = openapi_document(max_body_size=DEFAULT_MAX_BODY_SIZE, keys_required=keys_required)
    schema = schemathesis.openapi.from_dict(document)

    @schema.hook
    def filter_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> bool:
        # A case whose only fault is an unknown parameter that `requests` leaves out
        # reaches the server as a valid request.
        # A cursor is minted by the collector: a made-up one, however well-formed, is refused
        # with 400 (tested in test_app), which the schema cannot express.
        return query is None or ("cursor" not in query and _all_sent(query))

    return schema


keyed = _schema(keys_required=True)
anonymous = _schema(keys_required=False)
fuzzing = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # A collector in its own process answers in milliseconds, but not always in Hypothesis' time.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _collector(path: Path, *args: str) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(path / "events.sqlite", *args)
    proc.start()
    yield proc
    code, _, err = proc.stop()
    assert code == 0, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def keyed_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """`fluxgate-async serve --api-key KEY` on a free loopback port, for the whole module."""
    yield from _collector(tmp_path_factory.mktemp("keyed"), "--api-key", KEY)


@pytest.fixture(scope="module")
def anonymous_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """`fluxgate-async serve` without keys on a free loopback port, for the whole module."""
    yield from _collector(tmp_path_factory.mktemp("anonymous"))


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One HTTP session for every generated request: kept-alive connections, as clients use."""
    with requests.Session() as session:
        yield session


@pytest.mark.parametrize("keys_required", [True, False])
def test_document_is_valid_openapi_3_1(keys_required: bool) -> None:
    """The document validates against the OpenAPI 3.1 schema."""
    schema = _schema(keys_required=keys_required)
    schema.validate()
    assert schema.raw_schema["openapi"] == "3.1.0"


def test_served_document_is_the_one_built_in_code(
    keyed_collector: CollectorProcess, anonymous_collector: CollectorProcess
) -> None:
    """GET /openapi.json, asked without a key, is the document for the collector's settings."""
    for proc, keys_required in ((keyed_collector, True), (anonymous_collector, False)):
        served = proc.get("/openapi.json")
        expected = openapi_document(
            max_body_size=DEFAULT_MAX_BODY_SIZE, keys_required=keys_required
        )
        assert served == json.loads(json.dumps(expected))
    keyed_paths = keyed_collector.get("/openapi.json")["paths"]
    assert keyed_paths["/api/events"]["get"]["security"] == [{"apiKey": []}]
    assert keyed_paths["/healthz"]["get"]["security"] == []


def test_document_describes_every_api_route_the_collector_serves(db: Path) -> None:
    """Each route under /api/ is in the document, and each documented route is served."""
    from fluxgate_async.collector import create_app

    app = create_app(db)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    document = openapi_document(max_body_size=DEFAULT_MAX_BODY_SIZE, keys_required=False)
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented <= served
    assert {(method, path) for method, path in served if path.startswith("/api/")} <= documented


def test_http_api_page_shows_every_operation_parameter_and_schema() -> None:
    """The docs page rendered from the document has each route, parameter, status and schema."""
    spec = documented_api()
    page = http_api_reference()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert f"## `{method.upper()} {path}`" in page
            for parameter in operation.get("parameters", ()):
                assert f"| `{parameter['name']}` | {parameter['in']} |" in page
            for status in operation["responses"]:
                assert f"| {status} | " in page
    for name, schema in spec["components"]["schemas"].items():
        assert f"### {name}" in page
        for field in schema.get("properties", {}):
            assert f"| `{field}` |" in page


def test_the_docs_page_gets_the_reference_at_build_time() -> None:
    """The HTTP API page holds the marker, which the site's hook replaces with the reference."""
    page = (ROOT / "docs" / "reference" / "http-api.md").read_text()
    assert HTTP_API_MARKER in page
    built = on_page_markdown(page)
    assert HTTP_API_MARKER not in built
    assert http_api_reference() in built
    assert json.loads(openapi_json()) == documented_api()


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "integer", "minimum": 1, "maximum": 1000}, "integer from 1 to 1,000"),
        ({"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}, "[X](#x) or null"),
        ({"type": "array", "items": {"type": "string"}}, "array of string"),
        ({"type": "string", "pattern": "^a$"}, "string matching `^a$`"),
        ({"enum": ["a", "b"]}, "one of `a`, `b`"),
        ({}, "any JSON value"),
    ],
)
def test_types_read_as_words(schema: dict[str, Any], words: str) -> None:
    """The page writes each JSON Schema type in plain words."""
    assert describe_type(schema) == words


@keyed.parametrize()
@fuzzing
def test_collector_with_keys_answers_as_documented(
    case: schemathesis.Case[Any], keyed_collector: CollectorProcess, http: requests.Session
) -> None:
    """With a key required: no 500, answers as documented, and no way in without the key."""
    case.call_and_validate(
        base_url=keyed_collector.base_url,
        session=http,
        headers={"Authorization": f"Bearer {KEY}"},
    )


@anonymous.parametrize()
@fuzzing
def test_collector_without_keys_answers_as_documented(
    case: schemathesis.Case[Any], anonymous_collector: CollectorProcess, http: requests.Session
) -> None:
    """Without keys: no 500, answers as documented, invalid input refused."""
    case.call_and_validate(base_url=anonymous_collector.base_url, session=http)
