"""Which methods of the SDK clients spend tokens, and which of them the wrappers record.

One row per public method of `openai.AsyncOpenAI`, `anthropic.AsyncAnthropic`
and `google.genai.Client().aio` that can spend tokens or answers with usage:
tracked, or not and why. The documentation's coverage page is rendered from
these rows (`markdown()`), and a test walks the installed SDKs and fails when a
method that answers with usage is missing here.
"""

from __future__ import annotations

import attrs

__all__ = ["ANTHROPIC", "GOOGLE", "OPENAI", "MethodCoverage", "markdown"]


@attrs.frozen
class MethodCoverage:
    """One SDK method: whether its calls are recorded, and how or why not."""

    method: str
    """The method's path from the client, e.g. `chat.completions.create`."""
    tracked: bool
    note: str


def _rows(tracked: bool, note: str, *methods: str) -> tuple[MethodCoverage, ...]:
    return tuple(MethodCoverage(method, tracked, note) for method in methods)


_STORED = "reads or edits a stored answer: its tokens were recorded when it was made"
_SERVER_SIDE = (
    "runs many model requests on the provider's side and reports one total for them; "
    "record it with `FluxGate.track` once it has ended"
)
_BATCH = (
    "a batch runs its requests later, at batch prices, and its results can be read any "
    "number of times; record them with `FluxGate.track` once"
)
_FREE = "free: spends no tokens"

OPENAI: tuple[MethodCoverage, ...] = (
    *_rows(
        True,
        "streamed or not; a stream asks for its usage chunk, which the caller does not see",
        "chat.completions.create",
        "beta.chat.completions.create",
    ),
    *_rows(
        True,
        "one event per request",
        "chat.completions.parse",
        "beta.chat.completions.parse",
        "responses.parse",
        "responses.compact",
        "beta.responses.compact",
        "embeddings.create",
        "decisions.create",
    ),
    *_rows(
        True,
        "the helper: one streamed event, read through the helper or not",
        "chat.completions.stream",
        "beta.chat.completions.stream",
        "responses.stream",
    ),
    MethodCoverage("completions.create", True, "the legacy API, streamed or not"),
    *_rows(
        True,
        "streamed or not; with `background=True`, nothing at submission: the request that "
        "first sees the response ended records it",
        "responses.create",
        "beta.responses.create",
    ),
    *_rows(
        True,
        "records a background response once, when it is first seen ended, with the latency "
        "from its creation to its completion; any other response was recorded when it ran",
        "responses.retrieve",
        "responses.cancel",
        "beta.responses.retrieve",
        "beta.responses.cancel",
    ),
    *_rows(
        True,
        "when the answer has `usage` (the gpt-image models); dall-e answers have none",
        "images.generate",
        "images.edit",
        "images.create_variation",
    ),
    MethodCoverage(
        "audio.transcriptions.create",
        True,
        "when the answer has token usage (gpt-4o-transcribe), streamed or not; whisper-1 "
        "answers with seconds or nothing",
    ),
    *_rows(
        False,
        _STORED,
        "chat.completions.list",
        "chat.completions.retrieve",
        "chat.completions.update",
        "beta.chat.completions.list",
        "beta.chat.completions.retrieve",
        "beta.chat.completions.update",
    ),
    *_rows(
        False,
        _BATCH,
        "batches.create",
        "batches.retrieve",
        "batches.list",
        "batches.cancel",
    ),
    *_rows(
        False,
        f"Assistants runs: {_SERVER_SIDE}",
        "beta.threads.create_and_run",
        "beta.threads.create_and_run_poll",
        "beta.threads.runs.create",
        "beta.threads.runs.create_and_poll",
        "beta.threads.runs.retrieve",
        "beta.threads.runs.list",
        "beta.threads.runs.poll",
        "beta.threads.runs.update",
        "beta.threads.runs.cancel",
        "beta.threads.runs.submit_tool_outputs",
        "beta.threads.runs.submit_tool_outputs_and_poll",
        "beta.threads.runs.steps.list",
        "beta.threads.runs.steps.retrieve",
    ),
    *_rows(
        False,
        f"agent sessions: {_SERVER_SIDE}",
        "beta.agents.sessions.create",
        "beta.agents.sessions.retrieve",
        "beta.agents.sessions.update",
        "beta.agents.sessions.list",
        "beta.agents.sessions.events.stream",
        "beta.agents.sessions.turns.list",
        "beta.agents.sessions.turns.retrieve",
        "beta.agents.sessions.subagents.turns.list",
        "beta.agents.sessions.subagents.turns.retrieve",
    ),
    *_rows(
        False,
        "reads the results of an eval run, which is billed as a whole",
        "evals.runs.output_items.list",
        "evals.runs.output_items.retrieve",
    ),
    MethodCoverage("audio.speech.create", False, "answers audio bytes, without usage"),
    MethodCoverage("audio.translations.create", False, "whisper-1 answers without usage"),
    MethodCoverage("moderations.create", False, _FREE),
    MethodCoverage("videos.create", False, "billed per second of video, without usage"),
    MethodCoverage("fine_tuning.jobs.create", False, "training is billed per job"),
    MethodCoverage("realtime.connect", False, "a WebSocket session, not an HTTP request"),
)
"""`openai.AsyncOpenAI`; its `with_raw_response` and `with_streaming_response` alike."""

ANTHROPIC: tuple[MethodCoverage, ...] = (
    *_rows(
        True,
        "streamed or not",
        "messages.create",
        "beta.messages.create",
    ),
    *_rows(
        True,
        "one event per request",
        "messages.parse",
        "beta.messages.parse",
    ),
    *_rows(
        True,
        "the helper: one streamed event, sent when the stream ends or its block exits",
        "messages.stream",
        "beta.messages.stream",
    ),
    *_rows(
        True,
        "one event per model request the loop sends",
        "beta.messages.tool_runner",
        "beta.messages.thread",
    ),
    *_rows(False, _FREE, "messages.count_tokens", "beta.messages.count_tokens"),
    *_rows(False, _BATCH, "messages.batches.results", "beta.messages.batches.results"),
    *_rows(
        False,
        f"sessions: {_SERVER_SIDE}",
        "beta.sessions.create",
        "beta.sessions.retrieve",
        "beta.sessions.update",
        "beta.sessions.list",
        "beta.sessions.archive",
        "beta.sessions.events.list",
        "beta.sessions.events.stream",
        "beta.sessions.threads.retrieve",
        "beta.sessions.threads.list",
        "beta.sessions.threads.archive",
        "beta.sessions.threads.events.list",
        "beta.sessions.threads.events.stream",
    ),
    *_rows(
        False,
        f"dreams: {_SERVER_SIDE}",
        "beta.dreams.create",
        "beta.dreams.retrieve",
        "beta.dreams.list",
        "beta.dreams.cancel",
        "beta.dreams.archive",
    ),
    MethodCoverage(
        "beta.organization.analytics.usage.list", False, "reports past usage; spends nothing"
    ),
)
"""`anthropic.AsyncAnthropic`; its `with_raw_response` and `with_streaming_response` alike."""

GOOGLE: tuple[MethodCoverage, ...] = (
    MethodCoverage(
        "models.generate_content",
        True,
        "one event per model request (automatic function calling and continuations send several)",
    ),
    MethodCoverage("models.generate_content_stream", True, "one streamed event per model request"),
    MethodCoverage("models.embed_content", True, "one event per call"),
    MethodCoverage(
        "chats.create",
        True,
        "the chat's `send_message` and `send_message_stream`: one event per model request",
    ),
    *_rows(False, _FREE, "models.count_tokens", "models.compute_tokens"),
    *_rows(
        False,
        "billed per image or video, without token usage",
        "models.generate_images",
        "models.edit_image",
        "models.upscale_image",
        "models.recontext_image",
        "models.segment_image",
        "models.generate_videos",
    ),
    *_rows(
        False,
        "the cache's `usage_metadata` counts the tokens it stores (billed per hour), "
        "not a model request",
        "caches.create",
        "caches.get",
        "caches.list",
        "caches.update",
    ),
    *_rows(
        False,
        "not tracked yet (an experimental API); record its usage with `FluxGate.track`",
        "interactions.create",
        "interactions.get",
        "interactions.cancel",
        "interactions.connect",
    ),
    MethodCoverage("batches.create", False, _BATCH),
    MethodCoverage("live.connect", False, "a WebSocket session, not an HTTP request"),
)
"""`google.genai.Client().aio`; the synchronous `client.models` is not tracked."""


def _table(title: str, client: str, rows: tuple[MethodCoverage, ...]) -> str:
    lines = [
        f"## {title}",
        "",
        f"Methods of `{client}`.",
        "",
        "| method | tracked | how, or why not |",
        "| --- | --- | --- |",
    ]
    for row in sorted(rows, key=lambda r: (not r.tracked, r.method)):
        lines.append(f"| `{row.method}` | {'yes' if row.tracked else 'no'} | {row.note} |")
    return "\n".join(lines)


def markdown() -> str:
    """The coverage tables of the three SDKs, as Markdown."""
    return "\n\n".join(
        [
            _table("OpenAI", "openai.AsyncOpenAI", OPENAI),
            _table("Anthropic", "anthropic.AsyncAnthropic", ANTHROPIC),
            _table("Google (Gemini)", "google.genai.Client().aio", GOOGLE),
        ]
    )
