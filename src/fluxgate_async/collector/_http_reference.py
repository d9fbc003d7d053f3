"""The HTTP API reference page, written from the collector's OpenAPI document.

The docs build puts it in `docs/reference/http-api.md`, and the same function
behind `GET /openapi.json` makes the document, so the page cannot drift from
what a collector serves.
"""

from __future__ import annotations

import json
from typing import Any

from ._app import DEFAULT_MAX_BODY_SIZE
from ._openapi import openapi_document

__all__ = ["describe_type", "documented_api", "http_api_reference", "openapi_json"]


def documented_api() -> dict[str, Any]:
    """The document of a collector started with keys and the default body limit."""
    return openapi_document(max_body_size=DEFAULT_MAX_BODY_SIZE, keys_required=True)


def openapi_json() -> str:
    """`documented_api()` as the JSON text a collector serves, indented for reading."""
    return json.dumps(documented_api(), indent=2) + "\n"


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


def http_api_reference(spec: dict[str, Any] | None = None) -> str:
    """The Markdown reference of every route and schema of `spec` (default: `documented_api()`)."""
    spec = documented_api() if spec is None else spec
    lines: list[str] = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            lines += _operation(path, method, operation)
    lines += ["## Schemas", ""]
    for name, schema in spec["components"]["schemas"].items():
        lines += _schema(name, schema)
    return "\n".join(lines)
