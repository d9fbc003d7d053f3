"""MkDocs hook: the collector's HTTP API reference, rendered from its OpenAPI document.

The page and the document it offers for download are made at every docs build
from `openapi_document`, the same function behind the collector's
`GET /openapi.json`, so the reference cannot drift from what is served.
"""

from __future__ import annotations

import json
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from fluxgate_async.collector import DEFAULT_MAX_BODY_SIZE
from fluxgate_async.collector._openapi import OPENAPI_PATH, openapi_document

PAGE = "reference/http-api.md"
DOCUMENT = "reference/openapi.json"

_INTRO = f"""\
# HTTP API

The local collector (`fluxgate-async serve`) speaks FluxGate's event API. This page is
generated from its OpenAPI 3.1 document, which a running collector serves at
`{OPENAPI_PATH}` (no key needed) and which is also here:
[openapi.json](openapi.json). Point any OpenAPI tool at either.

When the collector was started with `--api-key` (or `FLUXGATE_API_KEYS`), every `/api/`
route asks for `Authorization: Bearer <key>` and answers `401` without it; started without
keys, it asks for none (and refuses to listen beyond loopback unless `--allow-anonymous` is
given). Every error answer is JSON, `{{"error": "..."}}`, naming the problem and the field.
"""


def document() -> dict[str, Any]:
    """The document of a collector started with keys and the default body limit."""
    return openapi_document(max_body_size=DEFAULT_MAX_BODY_SIZE, keys_required=True)


def _anchor(name: str) -> str:
    return name.lower()


def describe_type(schema: dict[str, Any]) -> str:
    """A JSON Schema in a few words of Markdown, linking to the named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].rpartition("/")[2]
        return f"[{name}](#{_anchor(name)})"
    for combinator, joiner in (("anyOf", " or "), ("allOf", " and ")):
        if combinator in schema:
            return joiner.join(describe_type(part) for part in schema[combinator])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any JSON value")
    if kind == "array" and "items" in schema:
        return f"array of {describe_type(schema['items'])}"
    if kind == "object" and "properties" in schema:
        return "object with " + ", ".join(f"`{name}`" for name in schema["properties"])
    words = [str(kind)]
    if "format" in schema:
        words.append(f"({schema['format']})")
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        words.append(f"from {low} to {high:,}")
    elif low is not None:
        words.append(f"≥ {low}")
    if "pattern" in schema:
        words.append(f"matching `{schema['pattern']}`")
    return " ".join(words)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _operation(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"## `{method.upper()} {path}`", "", f"**{operation['summary']}.**"]
    lines += ["", operation.get("description", ""), ""]
    key = "Bearer key, when the collector has keys" if operation["security"] else "none"
    lines += [f"Authentication: {key}.", ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += [
            "| parameter | in | type | default | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for parameter in parameters:
            schema = parameter["schema"]
            default = f"`{schema['default']}`" if "default" in schema else ""
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_cell(describe_type(schema))} "
                f"| {default} | {_cell(parameter.get('description', ''))} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        lines += [f"Request body: {describe_type(schema)}. {body['description']}", ""]
    lines += ["| status | body | meaning |", "| --- | --- | --- |"]
    for status, answer in operation["responses"].items():
        schema = answer["content"]["application/json"]["schema"]
        lines.append(f"| {status} | {describe_type(schema)} | {_cell(answer['description'])} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if "description" in schema:
        lines += [schema["description"], ""]
    for part in schema.get("allOf", ()):
        if "$ref" in part:
            lines += [f"Every field of {describe_type(part)}, and:", ""]
        else:
            schema = part
    properties = schema.get("properties", {})
    if not properties:
        return [*lines, describe_type(schema) + ".", ""]
    required = set(schema.get("required", ()))
    lines += ["| field | type | required | meaning |", "| --- | --- | --- | --- |"]
    for field, spec in properties.items():
        lines.append(
            f"| `{field}` | {_cell(describe_type(spec))} | {'yes' if field in required else ''} "
            f"| {_cell(spec.get('description', ''))} |"
        )
    extra = schema.get("additionalProperties", True)
    if extra is False:
        lines += ["", "No other field is accepted."]
    elif isinstance(extra, dict):
        lines += ["", f"Other fields: {describe_type(extra)}."]
    return [*lines, ""]


def render(spec: dict[str, Any]) -> str:
    """The Markdown page for the OpenAPI document `spec`."""
    lines = [_INTRO]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            lines += _operation(path, method, operation)
    lines += ["## Schemas", ""]
    for name, schema in spec["components"]["schemas"].items():
        lines += _schema(name, schema)
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the HTTP API page and the OpenAPI document to the site."""
    spec = document()
    files.append(File.generated(config, PAGE, content=render(spec)))
    files.append(File.generated(config, DOCUMENT, content=json.dumps(spec, indent=2) + "\n"))
    return files
