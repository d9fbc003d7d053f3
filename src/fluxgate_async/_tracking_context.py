"""`tracking_context`: who and what the LLM calls in a block of code are for.

The provider wrappers cannot add arguments to the SDKs' methods, so per-call
metadata travels in a `contextvars.ContextVar`: it follows `await`, is copied
into tasks created inside the block, and nested blocks merge, the inner one
winning key by key.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ._models import AiEventMetadata, TrackedUser

__all__ = ["current_context", "metadata_fields", "tracking_context"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

_current: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "fluxgate_tracking_context", default=_EMPTY
)

# The named fields of `AiEventMetadata`; every other key goes to `extra`.
_NAMED = ("feature", "step", "user", "session_id", "conversation_id", "timestamp")


def metadata_fields(fields: Mapping[str, Any]) -> AiEventMetadata:
    """Build the metadata for `fields`: named fields by name, all others into `extra`.

    Raises:
        TypeError, ValueError: A value does not fit its field; the message names it.
    """
    named = {name: fields[name] for name in _NAMED if fields.get(name) is not None}
    extra = {key: value for key, value in fields.items() if key not in _NAMED}
    return AiEventMetadata(**named, extra=extra)


def current_context() -> Mapping[str, Any]:
    """The metadata set by the enclosing `tracking_context` blocks, merged (read-only)."""
    return _current.get()


@contextlib.contextmanager
def tracking_context(
    *,
    feature: str | None = None,
    user: str | TrackedUser | None = None,
    session_id: str | None = None,
    step: str | None = None,
    conversation_id: str | None = None,
    **extra: Any,
) -> Iterator[Mapping[str, Any]]:
    """Attach metadata to every call tracked inside the block.

    Works with the provider wrappers (`track_openai`, `track_anthropic`,
    `track_genai`) and `FluxGate.track`. Values given here override the defaults
    given to the wrapper; nested blocks merge, the inner value winning for each
    key, and a value of `None` leaves the outer one in place. The metadata
    follows `await` and is inherited by tasks created inside the block (it is a
    `contextvars.ContextVar`), so concurrent requests never see each other's.

    Keys other than the named ones go to `AiEventMetadata.extra` and are sent
    as they are, for example `plan="pro"` becomes `"plan": "pro"`.

    Example:
        ```python
        from openai import AsyncOpenAI
        from fluxgate_async import FluxGate, tracking_context
        from fluxgate_async.integrations.openai import track_openai

        async with FluxGate() as fg, track_openai(AsyncOpenAI(), fg) as client:
            with tracking_context(feature="chat", user="user-123", session_id="s-42"):
                with tracking_context(step="draft", plan="pro"):  # adds to the outer block
                    reply = await client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi!"}]
                    )
        ```

    Args:
        feature: The product feature the calls serve.
        user: The end user, as an id or a `TrackedUser`.
        session_id: The user's session.
        step: The step within the feature.
        conversation_id: The conversation.
        **extra: Any further fields, sent in the metadata object.

    Yields:
        The merged metadata now in effect (read-only).

    Raises:
        TypeError, ValueError: A value does not fit its field (checked on entry);
            the message names the field.
    """
    given = {
        "feature": feature,
        "user": user,
        "session_id": session_id,
        "step": step,
        "conversation_id": conversation_id,
        **extra,
    }
    merged = dict(_current.get())
    merged.update((key, value) for key, value in given.items() if value is not None)
    # Checked now, where the caller wrote it, rather than at each tracked call.
    metadata_fields(merged)
    frozen = MappingProxyType(merged)
    token = _current.set(frozen)
    try:
        yield frozen
    finally:
        _current.reset(token)
