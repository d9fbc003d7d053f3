"""The collector's HTTP API: the routes of FluxGate's, answered from a local SQLite file."""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Final, NoReturn

from aiohttp import web

from .._models import LLMEvent, TrackedUser
from .._wire import answer_to_json, encode_event, to_event
from ._dashboard import add_dashboard
from ._pricing import load_prices, price_usage
from ._store import GROUPS, EventRecord, EventStore, normalise_since

__all__ = ["DEFAULT_MAX_BODY_SIZE", "MAX_TOKENS", "create_app"]

log = logging.getLogger("fluxgate_async.collector")

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
"""Bytes: a larger request body gets 413. An event is a few hundred bytes."""
MAX_TOKENS = 10**12
"""The largest token count accepted; larger is a bug upstream, and SQLite sums must not overflow."""
MAX_IDEMPOTENCY_KEY = 255
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_STORE: Final = web.AppKey("store", EventStore)
_KEYS: Final = web.AppKey("api_keys", tuple)
_MAX_BODY: Final = web.AppKey("max_body_size", int)


def create_app(
    db: str | Path,
    *,
    api_keys: Iterable[str] = (),
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> web.Application:
    """Build the collector's `aiohttp.web` application, storing events in the SQLite file `db`.

    The database is opened when the app starts and closed, after the last
    request, when it stops.

    `GET /` serves the dashboard, a page for people: spend, tokens, errors and
    latency over a time range. With `api_keys`, it asks for one of them once, at
    `/login`, and keeps a session cookie derived from it.

    Args:
        db: The SQLite file; created when missing.
        api_keys: When not empty, every request but `/healthz` must carry
            `Authorization: Bearer <one of them>`.
        max_body_size: Bytes; a larger body gets 413.

    Raises:
        ValueError: An API key is empty.
        MissingExtraError: `genai-prices` is not installed.

    Example:
        `web.run_app(create_app("events.sqlite"), port=8787)` serves it until
        interrupted. To serve it from your own code, run it with an `AppRunner`
        and clean the runner up when done:

        ```python
        from aiohttp import web
        from fluxgate_async import FluxGate
        from fluxgate_async.collector import create_app

        runner = web.AppRunner(create_app("events.sqlite"))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()  # port 0: any free port
        host, port = runner.addresses[0]
        try:
            async with FluxGate("local", endpoint=f"http://{host}:{port}/api/events") as fg:
                print(await fg.record_event({"usage": {"inputTokens": 10, "outputTokens": 5}}))
        finally:
            await runner.cleanup()  # stops serving, then closes the database
        ```
    """
    keys = tuple(api_keys)
    if any(not key.strip() for key in keys):
        msg = "an API key must not be empty"
        raise ValueError(msg)
    load_prices()
    app = web.Application(client_max_size=max_body_size)
    app[_KEYS] = keys
    app[_MAX_BODY] = max_body_size
    app[_STORE] = EventStore(db)
    app.cleanup_ctx.append(_store_lifetime)
    app.router.add_post("/api/events", _post_event)
    app.router.add_get("/api/events", _get_events)
    app.router.add_get("/api/summary", _get_summary)
    app.router.add_get("/healthz", _healthz)
    add_dashboard(app, app[_STORE], keys)
    return app


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    async with app[_STORE]:
        yield


def _fail(status: type[web.HTTPError], message: str) -> NoReturn:
    raise status(text=_error(message), content_type="application/json")


def _error(message: str) -> str:
    # Every error is JSON naming the problem, so clients parse one shape.
    return json.dumps({"error": message})


def _check_key(request: web.Request) -> None:
    keys: tuple[str, ...] = request.app[_KEYS]
    if not keys:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    # compare_digest against every key: the time taken says nothing about any of them.
    matches = [hmac.compare_digest(token.encode(), key.encode()) for key in keys]
    if scheme.lower() != "bearer" or not any(matches):
        _fail(web.HTTPUnauthorized, "missing or invalid API key: send Authorization: Bearer <key>")


def _reject_constant(name: str) -> NoReturn:
    msg = f"{name} is not a JSON number"
    raise ValueError(msg)


def _check_tokens(event: LLMEvent) -> None:
    usage = event.usage
    for name, value in (
        ("inputTokens", usage.input_tokens),
        ("outputTokens", usage.output_tokens),
        ("cachedTokens", usage.cached_tokens),
    ):
        if value is not None and value > MAX_TOKENS:
            _fail(web.HTTPBadRequest, f"usage.{name}: must be at most {MAX_TOKENS}, got {value}")


def _user_id(event: LLMEvent) -> str | None:
    user = event.metadata.user if event.metadata else None
    return user.id if isinstance(user, TrackedUser) else user


async def _post_event(request: web.Request) -> web.Response:
    _check_key(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        _fail(web.HTTPBadRequest, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[_MAX_BODY]
        raise web.HTTPRequestEntityTooLarge(
            limit, text=_error(f"body is over {limit} bytes"), content_type="application/json"
        ) from None
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        _fail(web.HTTPBadRequest, f"body is not valid JSON: {exc}")
    try:
        event = to_event(body)
        stored_body = encode_event(event).decode()
    except (TypeError, ValueError) as exc:
        _fail(web.HTTPBadRequest, str(exc))
    _check_tokens(event)
    price = price_usage(event.usage)
    usage, metadata = event.usage, event.metadata
    record = EventRecord(
        idempotency_key=key,
        provider=usage.provider,
        model=usage.model,
        feature=metadata.feature if metadata else None,
        user_id=_user_id(event),
        status=event.status.value,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        latency_ms=usage.latency_in_ms,
        cost=price.cost,
        price_status=price.status,
        body=stored_body,
    )
    try:
        answer = await request.app[_STORE].add(record)
    except sqlite3.Error as exc:
        log.error("collector: event not stored: %s", exc)
        _fail(web.HTTPServiceUnavailable, "the event could not be stored; try again")
    if price.detail:
        log.info("collector: event %s not priced: %s", answer.id, price.detail)
    return web.json_response(answer_to_json(answer))


def _since(request: web.Request) -> str | None:
    since = request.query.get("since")
    if not since:
        return None
    try:
        return normalise_since(since)
    except ValueError as exc:
        _fail(web.HTTPBadRequest, str(exc))


async def _get_events(request: web.Request) -> web.Response:
    _check_key(request)
    since = _since(request)
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        _fail(web.HTTPBadRequest, f"limit must be an integer from 1 to {MAX_LIMIT}")
    events = await request.app[_STORE].events(since=since, limit=limit)
    return web.json_response({"events": events})


async def _get_summary(request: web.Request) -> web.Response:
    _check_key(request)
    group_by = request.query.get("group_by", "model")
    if group_by not in GROUPS:
        _fail(web.HTTPBadRequest, f"group_by must be one of {', '.join(GROUPS)}")
    rows = await request.app[_STORE].summary(group_by, since=_since(request))
    return web.json_response({"groupBy": group_by, "rows": rows})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
