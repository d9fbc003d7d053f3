"""One event per model request, when several routes see the same request.

A model request can be seen by more than one route at once: a tracked SDK
client (`track_openai`, ...) used inside a framework that a hook or the
OpenTelemetry bridge also watches, or two instrumentations nested (an agent
framework's span around an SDK instrumentation's span). The rule:

1. A tracked SDK client always records the call: it sees the provider's answer
   itself.
2. A hook or the bridge skips a model request during which a tracked client
   made a call, and a model request that started inside a tracked client's
   request (an SDK instrumentation patched beneath the wrapper). The request
   ends when the answer arrives, before a stream is read.
3. Between hooks, the innermost wins: a model request during which another
   hook's model request started is skipped. (Two requests of one hook never
   nest; two that overlap in one task are siblings, and both are recorded.)

The hooks open a `ModelRequest` where their request starts, in the context
(task or thread) that makes the request, and ask `ModelRequest.close` whether
to record it where it ends; those marks travel in a `contextvars.ContextVar`,
so they follow `await` and never cross into concurrent tasks. OpenTelemetry
spans carry their own nesting: a tracked client marks the current inference
span with the `fluxgate.tracked_call` attribute, and the bridge relates its
spans by their parents.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "TRACKED_CALL_ATTRIBUTE",
    "ModelRequest",
    "cover_enclosing",
    "end_tracked_request",
    "inside_tracked_call",
    "is_inference",
    "note_tracked_call",
    "open_model_request",
]

TRACKED_CALL_ATTRIBUTE = "fluxgate.tracked_call"
"""Set on an OpenTelemetry inference span inside which a tracked client made its call."""

_INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_OPENLLMETRY_TYPES = frozenset({"chat", "completion", "embedding"})
_OPENINFERENCE_KINDS = frozenset({"LLM", "EMBEDDING"})

# How far up the chain of enclosing requests a mark goes. Real nesting is two
# or three deep; the bound keeps a chain left open by a buggy framework cheap.
_MAX_DEPTH = 16


class _Call(Protocol):
    finished: bool


class ModelRequest:
    """A model request one route is watching, between its start and its end."""

    __slots__ = ("_token", "covered", "ended", "owner", "parent")

    def __init__(self, owner: object, parent: ModelRequest | None, covered: bool) -> None:
        self.owner = owner
        self.parent = parent
        self.covered = covered
        """Whether another route records this request (see the module's rule)."""
        self.ended = False
        self._token: contextvars.Token[ModelRequest | None] | None = None

    def close(self) -> bool:
        """End the request; return whether this route records it (it is not covered).

        Called where the request ends; when that is another context than the
        one it started in, the mark is left there, harmless, until that
        context ends.
        """
        self.ended = True
        token, self._token = self._token, None
        if token is not None:
            # ValueError: ended in another context (a thread, a task) than it started in.
            with contextlib.suppress(ValueError):
                _open.reset(token)
        return not self.covered


_open: contextvars.ContextVar[ModelRequest | None] = contextvars.ContextVar(
    "fluxgate_model_request", default=None
)
_tracked_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "fluxgate_tracked_call", default=None
)


def is_inference(attributes: Mapping[str, Any]) -> bool:
    """Whether OpenTelemetry span attributes describe one model request.

    The GenAI conventions' inference operations; OpenLLMetry's request types;
    OpenInference's LLM and embedding span kinds.
    """
    return (
        attributes.get("gen_ai.operation.name") in _INFERENCE_OPERATIONS
        or attributes.get("llm.request.type") in _OPENLLMETRY_TYPES
        or attributes.get("openinference.span.kind") in _OPENINFERENCE_KINDS
    )


def cover_enclosing(owner: object = None) -> ModelRequest | None:
    """Mark the open requests around this point as covered; return the innermost one.

    Those of `owner` (the hook asking) are left alone: they are its siblings.
    """
    innermost = request = _open.get()
    for _ in range(_MAX_DEPTH):
        if request is None:
            break
        if not request.ended and request.owner is not owner:
            request.covered = True
        request = request.parent
    return innermost


def open_model_request(owner: object) -> ModelRequest:
    """Start watching a model request here, for the hook `owner`.

    Covers the other hooks' requests already open around this point (rule 3);
    the new request is covered at once when it starts inside a tracked
    client's call (rule 2).
    """
    parent = cover_enclosing(owner)
    while parent is not None and parent.ended:
        parent = parent.parent  # drop ended requests from the chain
    request = ModelRequest(owner, parent, covered=inside_tracked_call())
    request._token = _open.set(request)
    return request


def inside_tracked_call() -> bool:
    """Whether a tracked SDK client's call is under way here (rule 2)."""
    call = _tracked_call.get()
    return call is not None and not call.finished


def note_tracked_call(call: _Call) -> contextvars.Token[_Call | None]:
    """Note that a tracked SDK client starts `call` here (rules 1 and 2).

    Returns the token for `end_tracked_request`, for a call whose request
    ends before the call does (a stream read later).
    """
    if _open.get() is not None:  # checked first: no hook's request is open on most calls
        cover_enclosing()
    token = _tracked_call.set(call)
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return token  # nothing traces with OpenTelemetry in this process
    span = trace.get_current_span()
    attributes = getattr(span, "attributes", None)  # the SDK's spans have them
    if span.is_recording() and isinstance(attributes, Mapping) and is_inference(attributes):
        span.set_attribute(TRACKED_CALL_ATTRIBUTE, True)
    return token


def end_tracked_request(token: contextvars.Token[_Call | None]) -> None:
    """The tracked call's request is over here: later model requests are not inside it.

    A stream the call returned may still be read; the model requests made
    meanwhile in this context are other requests, and are recorded.
    """
    # A plain try rather than `contextlib.suppress`: this runs on every tracked
    # call, and the context manager costs more than the reset itself.
    try:  # noqa: SIM105
        _tracked_call.reset(token)
    except ValueError:
        # Ended in another context than it started in; the mark stays there, and
        # lapses when the call finishes.
        pass
