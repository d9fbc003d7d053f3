"""The collector's HTTP API: the routes of FluxGate's, answered from its database."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Final, NoReturn

from aiohttp import web

from .._models import LLMEvent, TrackedUser
from .._wire import answer_to_json, to_event
from ._dashboard import add_dashboard
from ._json import dump_json, event_json, parse_json
from ._keys import matching_key
from ._openapi import (
    DEFAULT_LIMIT,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY,
    MAX_LIMIT,
    MAX_TOKENS,
    OPENAPI_PATH,
    openapi_document,
    query_parameters,
)
from ._pricing import load_prices, price_usage
from ._store import (
    GROUPS,
    EventRecord,
    EventStore,
    StoreUnavailableError,
    normalise_since,
    open_store,
)

__all__ = ["DEFAULT_MAX_BODY_SIZE", "MAX_TOKENS", "create_app"]

log = logging.getLogger("fluxgate_async.collector")

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
"""Bytes: a larger request body gets 413. An event is a few hundred bytes."""

# The codings aiohttp decodes (br and zstd when their packages are importable);
# any other body would be read as if it were plain JSON.
_DECODED_ENCODINGS: Final = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})
_IDEMPOTENCY_KEY: Final = re.compile(IDEMPOTENCY_KEY_PATTERN)
_LIMIT: Final = re.compile(r"[0-9]{1,4}")

_STORE: Final = web.AppKey("store", EventStore)
_KEYS: Final = web.AppKey("api_keys", tuple)
_MAX_BODY: Final = web.AppKey("max_body_size", int)
_OPENAPI: Final = web.AppKey("openapi", dict)
_QUERY: Final = web.AppKey("query_parameters", dict)


def create_app(
    db: str | Path,
    *,
    api_keys: Iterable[str] = (),
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> web.Application:
    """Build the collector's `aiohttp.web` application, storing events in `db`.

    The database is opened when the app starts and closed, after the last
    request, when it stops. The app describes its own API as an OpenAPI 3.1
    document at `/openapi.json`.

    `GET /` serves the dashboard, a page for people: spend, tokens, errors and
    latency over a time range. With `api_keys`, it asks for one of them once, at
    `/login`, and keeps a session cookie derived from it.

    Args:
        db: A SQLite file, created when missing, or a `postgresql://` URL (needs the
            `postgres` extra); see `open_store`.
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
    app[_STORE] = open_store(db)
    app[_OPENAPI] = openapi_document(max_body_size=max_body_size, keys_required=bool(keys))
    app[_QUERY] = query_parameters(app[_OPENAPI])
    app.cleanup_ctx.append(_store_lifetime)
    app.router.add_post("/api/events", _post_event)
    app.router.add_get("/api/events", _get_events)
    app.router.add_get("/api/summary", _get_summary)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get(OPENAPI_PATH, _openapi)
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
    if matching_key(keys, token) is None or scheme.lower() != "bearer":
        raise web.HTTPUnauthorized(
            text=_error("missing or invalid API key: send Authorization: Bearer <key>"),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="fluxgate"'},
        )


def _check_query(request: web.Request) -> None:
    if not request.query_string:
        return
    # A misspelt parameter (`?group=feature`) would otherwise be ignored without a word.
    method = "GET" if request.method == "HEAD" else request.method
    resource = request.match_info.route.resource
    assert resource is not None  # only the app's own routes call this
    known = request.app[_QUERY][method, resource.canonical]
    unknown = sorted({name for name in request.query if name not in known})
    if unknown:
        expected = ", ".join(sorted(known)) or "none"
        _fail(
            web.HTTPBadRequest,
            f"unknown query parameter(s) {', '.join(map(repr, unknown))}; expected: {expected}",
        )
    repeated = sorted({name for name in request.query if len(request.query.getall(name)) > 1})
    if repeated:
        _fail(web.HTTPBadRequest, f"query parameter(s) given more than once: {', '.join(repeated)}")


def _integral_tokens(body: object) -> None:
    # JSON has one number type: 100.0 is the integer 100 to JSON Schema, and to
    # senders whose numbers are all floats; 100.5 stays a float, and is refused.
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return
    for name in ("inputTokens", "outputTokens", "cachedTokens"):
        value = usage.get(name)
        if isinstance(value, float) and value.is_integer():
            usage[name] = int(value)


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
    _check_query(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        _fail(
            web.HTTPBadRequest,
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters",
        )
    raw = await _read_body(request)
    try:
        body = parse_json(raw)
    except (ValueError, RecursionError) as exc:
        _fail(web.HTTPBadRequest, f"body is not valid JSON: {exc}")
    _integral_tokens(body)
    try:
        event = to_event(body)
        stored_body = event_json(event)
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
    except StoreUnavailableError as exc:
        log.error("collector: event not stored: %s", exc)
        _unavailable("the event could not be stored; try again")
    if price.detail:
        log.info("collector: event %s not priced: %s", answer.id, price.detail)
    return web.Response(body=dump_json(answer_to_json(answer)), content_type="application/json")


async def _read_body(request: web.Request) -> bytes:
    encoding = request.headers.get("Content-Encoding", "")
    if not encoding.isascii() or encoding.lower() not in _DECODED_ENCODINGS:
        _fail(
            web.HTTPUnsupportedMediaType,
            f"Content-Encoding {encoding!r} is not supported: send the body as identity, "
            "gzip or deflate",
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[_MAX_BODY]
        raise web.HTTPRequestEntityTooLarge(
            limit, text=_error(f"body is over {limit} bytes"), content_type="application/json"
        ) from None
    except web.RequestPayloadError:
        # What aiohttp could not decode or de-chunk: corrupt gzip, a cut chunked body.
        _fail(web.HTTPBadRequest, f"body could not be read as {encoding or 'identity'} data")


def _since(request: web.Request) -> str | None:
    since = request.query.get("since")
    if since is None:
        return None
    try:
        return normalise_since(since)
    except ValueError as exc:
        _fail(web.HTTPBadRequest, str(exc))
    except OverflowError:
        # A valid date whose offset moves it past year 1 or 9999 once in UTC.
        _fail(web.HTTPBadRequest, f"since is out of range once in UTC, got {since!r}")


async def _get_events(request: web.Request) -> web.Response:
    _check_key(request)
    _check_query(request)
    since = _since(request)
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    # Only ASCII digits: int() would also take " 5", "1_0" and other scripts' digits.
    limit = int(raw_limit) if _LIMIT.fullmatch(raw_limit) else 0
    if not 1 <= limit <= MAX_LIMIT:
        _fail(web.HTTPBadRequest, f"limit must be an integer from 1 to {MAX_LIMIT}")
    try:
        page = await request.app[_STORE].page(
            since=since, cursor=request.query.get("cursor") or None, limit=limit
        )
    except ValueError as exc:
        _fail(web.HTTPBadRequest, str(exc))
    except StoreUnavailableError as exc:
        log.error("collector: events not listed: %s", exc)
        _unavailable("the database cannot be read right now; try again")
    return web.json_response(
        {"events": page.events, "cursor": page.cursor, "hasMore": page.has_more}
    )


async def _get_summary(request: web.Request) -> web.Response:
    _check_key(request)
    _check_query(request)
    group_by = request.query.get("group_by", "model")
    if group_by not in GROUPS:
        _fail(web.HTTPBadRequest, f"group_by must be one of {', '.join(GROUPS)}")
    try:
        rows = await request.app[_STORE].summary(group_by, since=_since(request))
    except StoreUnavailableError as exc:
        log.error("collector: summary not read: %s", exc)
        _unavailable("the database cannot be read right now; try again")
    return web.json_response({"groupBy": group_by, "rows": rows})


# 503 with Retry-After: the client retries it, by then the database may be back.
RETRY_AFTER_S = 1


def _unavailable(message: str) -> NoReturn:
    raise web.HTTPServiceUnavailable(
        text=_error(message),
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _healthz(request: web.Request) -> web.Response:
    _check_query(request)
    try:
        await request.app[_STORE].check()
    except StoreUnavailableError as exc:
        # Unauthenticated: say that the database is the problem, not where it is.
        log.warning("collector: unhealthy: %s", exc)
        return web.json_response(
            {"status": "unavailable", "error": "the database cannot be used"}, status=503
        )
    return web.json_response({"status": "ok"})


async def _openapi(request: web.Request) -> web.Response:
    _check_query(request)
    return web.json_response(request.app[_OPENAPI])
