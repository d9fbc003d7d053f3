"""Drop-in wrappers that track the official async SDKs' calls, streaming included.

- `fluxgate_async.integrations.openai.track_openai` for `openai.AsyncOpenAI`
  (and OpenAI-compatible hosts: Azure, Groq, OpenRouter, xAI, ...);
- `fluxgate_async.integrations.anthropic.track_anthropic` for `anthropic.AsyncAnthropic`;
- `fluxgate_async.integrations.google.track_genai` for `google.genai.Client`.

Each module imports its SDK only when used: install the matching extra,
`fluxgate-async[openai]`, `[anthropic]` or `[google]`.

## What every wrapper does

- It returns a proxy of your client: `isinstance` and type checkers see the
  SDK's class, attributes and methods not tracked pass straight through,
  `with`/`async with` hand back the tracked client, and your client itself is
  not modified. Wrapping a tracked client again is refused.
- Each request that spends tokens records one event, whichever method sent it
  (see the [SDK coverage](coverage.md)): tokens, model, provider, `latencyInMs`
  (the whole call, monotonic clock) and a status, with the metadata given to
  the wrapper, under that of the enclosing `fluxgate_async.tracking_context`
  blocks (taken when the call starts).
- `mode="background"` (the default) queues the event with
  `FluxGate.record_event_nowait`: the call takes no longer than without
  tracking. A whole answer is read and its event built once your task
  yields to the event loop (its next `await`), not before the call returns;
  `flush()`, `aclose()` and `stats` count it at once all the same, and its
  latency ends when the call returned. `mode="inline"` awaits
  `FluxGate.record_event` before the call returns and attaches FluxGate's
  answer, read with `fluxgate_async.tracking_of`.
- Only calls that reached the provider are recorded: an exception the SDK
  raises before sending (a bad argument, a missing key, a check such as
  Anthropic's "Streaming is required") records nothing and reaches you
  unchanged. A provider exception (an HTTP error, a connection error, a
  timeout) is recorded (ERROR with its message; MALFORMED_REQUEST for a 400,
  404, 413 or 422 answer) and re-raised unchanged. A cancelled call
  records ERROR "cancelled", with the usage seen so far, and `CancelledError`
  propagates. A bug in tracking itself is logged on the `fluxgate_async`
  logger and never reaches your call.

## Streams

A stream records `isStreamed: true`, `streamingDurationInMs` from its first
chunk to its end and metadata `timeToFirstTokenMs` (call start to first chunk),
and exactly one event, whichever way it ends:

- read to its end: the final usage and status, in the wrapper's mode;
- raising (an error event, a dropped connection): ERROR with its message and
  the usage seen so far;
- cancelled: ERROR "cancelled", with the usage seen so far;
- left by `break`, `close()`, `aclose()` or leaving `async with`: the status of
  a finish reason already seen, else ERROR "stream closed before its end";
- garbage-collected unread: ERROR "stream collected before its end".

The last three are always queued in the background, since nothing can wait
for them; in inline mode `tracking_of(stream)` is set only when the stream is
read to its end. The stream helpers (`messages.stream()`,
`chat.completions.stream()`, `responses.stream()`) record the same way, and
`tracking_of(helper_stream)` reads their tracking.

## Raw responses

`with_raw_response` and `with_streaming_response` (OpenAI and Anthropic) give
the SDK's own response objects: headers, `parse()`, `read()`, `iter_lines()`
and the rest work as without tracking. The call is recorded once: when the
body has been read (by any of these), or when the stream `parse()` returned
ends, whichever way, as above. A response closed or collected before its body
was read records ERROR "response closed before its body was read" (for a
stream, the messages above).

## SDK versions

Each wrapper is tested on the oldest and on the newest SDK its extra allows:
`openai` from 1.66, `anthropic` from 1.0, `google-genai` from 1.49. A usage
field newer than the SDK reaches it as a plain dict (openai, anthropic) and is
read all the same, so the same answer records the same tokens on every
version; the documentation's SDK coverage page lists what an older SDK drops
before the wrapper can see it.
"""
