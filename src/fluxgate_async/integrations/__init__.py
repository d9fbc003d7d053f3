"""Drop-in wrappers that track the official async SDKs' calls, streaming included.

- `fluxgate_async.integrations.openai.track_openai` for `openai.AsyncOpenAI`
  (and OpenAI-compatible hosts: Azure, Groq, OpenRouter, xAI, ...);
- `fluxgate_async.integrations.anthropic.track_anthropic` for `anthropic.AsyncAnthropic`;
- `fluxgate_async.integrations.google.track_genai` for `google.genai.Client`.

Each module imports its SDK only when used: install the matching extra,
`fluxgate-async[openai]`, `[anthropic]` or `[google]`.
"""
