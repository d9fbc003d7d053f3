"""What every framework hook agrees on: provider names, token conventions, finish reasons.

The hooks (`otel`, `openai_agents`, `langchain`, `litellm`) each read a
framework's own report of a model request; this module turns the numbers and
names found there into the `Outcome` the SDK wrappers would record for the
same call, so that every route records the same tokens for the same call.

## Tokens

The frameworks follow the OpenTelemetry GenAI convention: input tokens
include the cached ones (read from and written to the cache), output tokens
include the reasoning ones. The wrappers record what each provider's own API
reports, so:

- Anthropic: `inputTokens` is the input less the cache reads and writes (the
  uncached part, as Anthropic counts it), `cachedTokens` the cache reads plus
  writes;
- any other provider (OpenAI, Gemini, ...): `inputTokens` is the whole input
  (cached included, as OpenAI and Gemini count it), `cachedTokens` the cache
  reads;
- `outputTokens` is the whole output, reasoning included (Gemini's thinking
  too, as the Gemini wrapper records it).

Metadata `reasoningTokens` and `cacheWriteTokens` are sent when known and
non-zero, as the wrappers do.
"""

from __future__ import annotations

from typing import Any

import attrs

from .._models import AiEventStatus
from .._recording import Outcome
from ._usage import count, extra_counts

__all__ = ["failed", "finish_status", "provider_name", "usage_outcome"]

# Names the frameworks give a provider (OpenTelemetry `gen_ai.provider.name` and
# the deprecated `gen_ai.system`, pydantic-ai, LangChain's `ls_provider`,
# LiteLLM's `custom_llm_provider`) -> the provider name FluxGate prices, the one
# the SDK wrappers record.
_PROVIDERS = {
    "openai": "openai",
    "openai_chat": "openai",
    "openai_responses": "openai",
    "text-completion-openai": "openai",
    "anthropic": "anthropic",
    "anthropic_messages": "anthropic",
    "claude": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "google": "google",
    "google-gla": "google",
    "google-vertex": "google",
    "google_genai": "google",
    "google_vertexai": "google",
    "google_ai_studio": "google",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "vertexai": "google",
    "azure": "azure",
    "azure_ai": "azure",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "azure_openai": "azure",
    "groq": "groq",
    "openrouter": "openrouter",
    "x_ai": "xai",
    "xai": "xai",
    "grok": "xai",
    "deepseek": "deepseek",
    "together": "together",
    "together_ai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "deepinfra": "deepinfra",
    "aws.bedrock": "bedrock",
    "bedrock": "bedrock",
    "bedrock_converse": "bedrock",
    "amazon_bedrock": "bedrock",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "ibm.watsonx.ai": "watsonx",
    "watsonx": "watsonx",
    "ollama": "ollama",
    "ollama_chat": "ollama",
}


def provider_name(name: object) -> str | None:
    """The FluxGate provider name for a framework's name of it; an unknown name, lower-cased.

    Example:
        >>> provider_name("gcp.gemini")
        'google'
        >>> provider_name("together_ai")
        'together'
    """
    if not isinstance(name, str) or not name.strip():
        return None
    key = name.strip().lower()
    return _PROVIDERS.get(key, key)


# Finish reasons, lower-cased, from every provider and framework -> status. The
# OpenTelemetry convention lower-cases them too (`stop`, `length`, `tool_call`,
# `content_filter`, `error`); Gemini's are upper-case in its own API.
_FINISH_STATUS = {
    "stop": AiEventStatus.SUCCESS,
    "end_turn": AiEventStatus.SUCCESS,
    "stop_sequence": AiEventStatus.SUCCESS,
    "tool_calls": AiEventStatus.SUCCESS,
    "tool_call": AiEventStatus.SUCCESS,
    "tool_use": AiEventStatus.SUCCESS,
    "function_call": AiEventStatus.SUCCESS,
    "pause_turn": AiEventStatus.SUCCESS,
    "completed": AiEventStatus.SUCCESS,
    "length": AiEventStatus.MAX_TOKENS,
    "max_tokens": AiEventStatus.MAX_TOKENS,
    "max_output_tokens": AiEventStatus.MAX_TOKENS,
    "model_context_window_exceeded": AiEventStatus.MAX_TOKENS,
    "content_filter": AiEventStatus.CONTENT_FILTER,
    "refusal": AiEventStatus.BLOCKED,
    "safety": AiEventStatus.BLOCKED,
    "blocklist": AiEventStatus.BLOCKED,
    "prohibited_content": AiEventStatus.BLOCKED,
    "spii": AiEventStatus.BLOCKED,
    "image_safety": AiEventStatus.BLOCKED,
    "image_prohibited_content": AiEventStatus.BLOCKED,
    "recitation": AiEventStatus.RECITATION,
    "image_recitation": AiEventStatus.RECITATION,
    "malformed_function_call": AiEventStatus.MALFORMED_REQUEST,
    "error": AiEventStatus.ERROR,
}


def finish_status(reason: object, default: AiEventStatus = AiEventStatus.SUCCESS) -> AiEventStatus:
    """The status of a request that ended for `reason`; `default` for none or an unknown one.

    One table for every route, the SDK wrappers' and the hooks': the providers'
    reasons in any case.

    Example:
        >>> finish_status("length")
        <AiEventStatus.MAX_TOKENS: 'MAX_TOKENS'>
        >>> finish_status("SAFETY")
        <AiEventStatus.BLOCKED: 'BLOCKED'>
    """
    if not isinstance(reason, str):
        return default
    return _FINISH_STATUS.get(reason.lower(), default)


def usage_outcome(
    provider: str | None,
    *,
    input_tokens: object,
    output_tokens: object,
    cache_read: object = None,
    cache_write: object = None,
    reasoning: object = None,
    model: object = None,
    finish_reason: object = None,
) -> Outcome:
    """The outcome of a successful request from a framework's usage numbers.

    Args:
        provider: The FluxGate provider name (see `provider_name`).
        input_tokens: All input tokens, cached ones included.
        output_tokens: All output tokens, reasoning ones included.
        cache_read: Input tokens read from the cache.
        cache_write: Input tokens written to the cache.
        reasoning: Output tokens spent reasoning.
        model: The model that answered.
        finish_reason: Why the answer ended; sets the status.

    Values that are not counts (missing, negative, not numbers) read as
    unknown, and unknown input or output as 0.
    """
    total_in = count(input_tokens) or 0
    read = count(cache_read)
    written = count(cache_write)
    if provider == "anthropic":
        known = read is not None or written is not None
        cached = (read or 0) + (written or 0) if known else None
        uncached = max(total_in - (cached or 0), 0)
    else:
        cached, uncached = read, total_in
    extra: dict[str, Any] = extra_counts(reasoningTokens=count(reasoning), cacheWriteTokens=written)
    if isinstance(finish_reason, str) and finish_reason:
        extra["finishReason"] = finish_reason
    return Outcome(
        input_tokens=uncached,
        output_tokens=count(output_tokens) or 0,
        cached_tokens=cached,
        model=model if isinstance(model, str) and model else None,
        status=finish_status(finish_reason),
        extra=extra,
    )


def failed(outcome: Outcome, message: str, **extra: Any) -> Outcome:
    """`outcome` (the usage seen) as an ERROR with `message`, and `extra` added to its metadata."""
    return attrs.evolve(
        outcome,
        status=AiEventStatus.ERROR,
        error_message=message,
        extra={**outcome.extra, **extra},
    )
