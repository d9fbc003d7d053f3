"""The SDK coverage tables against the installed SDKs: no method with usage goes unlisted."""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from anthropic._resource import AsyncAPIResource as AnthropicResource
from google import genai
from openai._resource import AsyncAPIResource as OpenAIResource

from fluxgate_async.integrations._coverage import (
    ANTHROPIC,
    GOOGLE,
    OPENAI,
    MethodCoverage,
    markdown,
)

# Attributes that mirror the methods walked already.
_MIRRORS = frozenset({"with_raw_response", "with_streaming_response"})


def models_in(annotation: Any) -> Iterator[type[pydantic.BaseModel]]:
    """The pydantic models an annotation names, through unions, generics and `Annotated`."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from models_in(arg)


def carries_usage(model: type[pydantic.BaseModel], depth: int = 0) -> bool:
    """Whether a model, or one it holds (a stream event's response), has a usage field."""
    fields = model.model_fields
    if "usage" in fields or "usage_metadata" in fields:
        return True
    return depth < 2 and any(
        carries_usage(inner, depth + 1)
        for field in fields.values()
        for inner in models_in(field.annotation)
        if inner is not model
    )


def answers_with_usage(method: Any) -> bool:
    """Whether a method's return annotation names a model that carries usage."""
    try:
        hints = typing.get_type_hints(method)
    except Exception:  # an annotation the SDK leaves unresolvable: nothing to learn
        return False
    return any(carries_usage(model) for model in models_in(hints.get("return")))


def public_methods(obj: Any, path: str, is_resource: Any, seen: set[int]) -> Iterator[str]:
    """Dotted paths of the public methods of `obj` and of the resources under it."""
    for name in dir(obj):
        if name.startswith("_") or name in _MIRRORS:
            continue
        value = getattr(obj, name)
        if is_resource(value) and id(value) not in seen:
            seen.add(id(value))
            yield from public_methods(value, f"{path}{name}.", is_resource, seen)
        elif inspect.ismethod(value) and answers_with_usage(value):
            yield f"{path}{name}"


def google_aio() -> Any:
    """The async side of a Gemini client, its experimental modules' warnings silenced."""
    return genai.Client(api_key="g-test").aio


def clients() -> list[tuple[str, Any, Any, tuple[MethodCoverage, ...]]]:
    """(name, client, is_resource, rows) for each SDK."""
    return [
        (
            "openai",
            openai.AsyncOpenAI(api_key="sk-test"),
            lambda v: isinstance(v, OpenAIResource),
            OPENAI,
        ),
        (
            "anthropic",
            anthropic.AsyncAnthropic(api_key="sk-ant-test"),
            lambda v: isinstance(v, AnthropicResource),
            ANTHROPIC,
        ),
        (
            "google",
            google_aio(),
            lambda v: type(v).__module__.startswith("google.genai.") and hasattr(v, "_api_client"),
            GOOGLE,
        ),
    ]


@pytest.mark.parametrize("sdk", ["openai", "anthropic", "google"])
def test_every_method_answering_with_usage_is_listed(sdk: str) -> None:
    """A method of the installed SDK whose answer carries usage is tracked or listed with why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # google-genai warns of its experimental modules
        [(_, client, is_resource, rows)] = [c for c in clients() if c[0] == sdk]
        found = set(public_methods(client, "", is_resource, set()))
    listed = {row.method for row in rows}
    assert found, "the walk found no method at all"
    assert sorted(found - listed) == []


@pytest.mark.parametrize("sdk", ["openai", "anthropic", "google"])
def test_every_listed_method_exists(sdk: str) -> None:
    """Each row names a method of the installed SDK, once, with a reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [(_, client, _, rows)] = [c for c in clients() if c[0] == sdk]
        for row in rows:
            target = client
            for part in row.method.split("."):
                target = getattr(target, part)
            assert callable(target), row.method
    assert len({row.method for row in rows}) == len(rows)
    assert all(row.note for row in rows)


def test_the_page_lists_every_row() -> None:
    """The generated page has a line per row, saying whether it is tracked."""
    page = markdown()
    for row in (*OPENAI, *ANTHROPIC, *GOOGLE):
        assert f"| `{row.method}` | {'yes' if row.tracked else 'no'} | {row.note} |" in page
