"""Side-by-side benchmarks of fluxgate-async: `make bench`, or `python -m benchmarks`.

One run starts a loopback server in its own process (`_server`: answers like the
FluxGate API and like OpenAI) and prints one table. Each row sets the client
beside a reference measured in the same run, client and reference alternating
over several rounds, medians compared, because a small machine is noisy.

A row is an async function `(Settings) -> Row` listed in `__main__.ROWS`. A row
whose API is not in this build raises `UnavailableError` (see `_common.require`
and `_common.optional_import`) and prints "n/a (not available)".

The collector ingest row comes from `benchmarks/collector_ingest.py` (also
runnable alone): its `run(events=...)` starts the collector and a raw aiohttp
server in their own processes and returns a dict of figures, which
`__main__.collector_ingest` turns into a row.

These are not tests and never run in `make test`; `tests/test_benchmarks.py`
only runs every row with tiny counts so that they cannot rot.
"""
