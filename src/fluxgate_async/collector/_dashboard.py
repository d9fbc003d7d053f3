"""The dashboard at `/`: spend, tokens, errors and latency over a time window, as one HTML page.

Rendered on the server with inline SVG charts: no script, no network, nothing
loaded from elsewhere. When the collector has API keys, a person signs in with
one of them through a form; the browser then holds a session cookie derived from
that key (never the key itself), so the key appears in no URL and no page.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import logging
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

import attrs
from aiohttp import web

from ._charts import HALF_WIDTH, Series, bar_chart, line_chart
from ._keys import matching_key
from ._pricing import require
from ._store import EventStore, StoreUnavailableError
from ._usage import PERCENTILES, STACKS, Totals, Usage, UsageWindow

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = [
    "CUSTOM",
    "DEFAULT_RANGE",
    "MAX_DAYS",
    "MAX_HOURLY_DAYS",
    "RANGES",
    "SESSION_COOKIE",
    "SESSION_LIFETIME",
    "add_dashboard",
    "format_cost",
    "session_token",
]

log = logging.getLogger("fluxgate_async.collector")

SESSION_COOKIE = "fluxgate_session"
"""The cookie that holds a signed-in browser's session token."""
SESSION_LIFETIME = 12 * 3600
"""Seconds a sign-in lasts."""
RANGES: Final = {
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
    "90d": ("Last 90 days", timedelta(days=90)),
}
"""The time-range picker's presets, each ending with the current hour or day."""
CUSTOM = "custom"
"""The picker's choice that reads the `from` and `to` dates."""
DEFAULT_RANGE = "7d"
MAX_DAYS = 366
"""The longest window a custom range may cover."""
MAX_HOURLY_DAYS = 14
"""The longest window drawn hour by hour (336 bars)."""
_AUTO_HOURLY = timedelta(days=2)
"""Up to this span, `bucket=auto` draws hours; beyond it, days."""
_TOP = 8
_STACK_NAMES = {"model": "Model", "feature": "Feature", "user": "User"}
_NONE_LABEL = {"model": "(no model)", "feature": "(no feature)", "user": "(no user)"}
_SESSION_CONTEXT = b"fluxgate-async dashboard session\n"
_HEADERS = {
    # The page loads only its own stylesheet, and no page can frame it.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STORE: Final = web.AppKey("dashboard_store", EventStore)
_KEYS: Final = web.AppKey("dashboard_keys", tuple)
_TEMPLATES: Final[web.AppKey[Environment]] = web.AppKey("dashboard_templates")
_CSS: Final = web.AppKey("dashboard_css", bytes)


def add_dashboard(app: web.Application, store: EventStore, api_keys: tuple[str, ...]) -> None:
    """Serve the dashboard at `/`, its sign-in at `/login`, from the events in `store`."""
    jinja2 = require("jinja2", needed_by="the collector's dashboard")
    files = importlib.resources.files(__package__) / "dashboard"
    app[_STORE] = store
    app[_KEYS] = api_keys
    app[_TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app[_CSS] = (files / "dashboard.css").read_bytes()
    app.router.add_get("/", _dashboard)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/static/dashboard.css", _stylesheet)


def session_token(api_key: str, issued_at: int) -> str:
    """The session token for a sign-in with `api_key` at `issued_at` (Unix seconds).

    An HMAC of the time keyed by the API key: it proves the key was known without
    revealing it, stays valid across collector restarts and on every instance
    that accepts the key, and dies with the key when the key is removed.
    """
    message = _SESSION_CONTEXT + str(issued_at).encode()
    digest = hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest()
    return f"{issued_at}.{digest}"


def _signed_in(request: web.Request) -> bool:
    keys: tuple[str, ...] = request.app[_KEYS]
    if not keys:
        return True
    token = request.cookies.get(SESSION_COOKIE, "")
    issued, _, _digest = token.partition(".")
    if not issued.isdigit():
        return False
    age = time.time() - int(issued)
    if not -60 <= age <= SESSION_LIFETIME:  # a minute of clock skew between instances
        return False
    return matching_key(keys, token, lambda key: session_token(key, int(issued))) is not None


def _safe_next(target: str) -> str:
    # Only a path on this site. Browsers drop tabs and newlines and read "\\" as "/",
    # so "/\t/evil" or "/\\evil" would leave it: refuse those characters altogether.
    if (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and all(ch.isprintable() and not ch.isspace() for ch in target)
    ):
        return target
    return "/"


def _page(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    html = (
        request.app[_TEMPLATES]
        .get_template(template)
        .render(signed_in_with_key=bool(request.app[_KEYS]), **context)
    )
    return web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


async def _login_form(request: web.Request) -> web.StreamResponse:
    target = _safe_next(request.query.get("next", "/"))
    if _signed_in(request):
        raise web.HTTPSeeOther(target)
    return _page(request, "login.html", next=target, error=None)


async def _login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    target = _safe_next(str(form.get("next", "/")))
    keys: tuple[str, ...] = request.app[_KEYS]
    if not keys:
        raise web.HTTPSeeOther(target)
    key = matching_key(keys, str(form.get("key", "")))
    if key is None:
        return _page(
            request,
            "login.html",
            status=401,
            next=target,
            error="That key is not one this collector accepts.",
        )
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE,
        session_token(key, int(time.time())),
        max_age=SESSION_LIFETIME,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_over_https(request),
    )
    raise response


def _over_https(request: web.Request) -> bool:
    # Trusting the proxy's header is safe here: it can only make the cookie stricter.
    forwarded = request.headers.get("X-Forwarded-Proto", "").partition(",")[0]
    return request.secure or forwarded.strip().lower() == "https"


async def _logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login" if request.app[_KEYS] else "/")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def _stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[_CSS],
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


class _BadQuery(ValueError):
    """A query parameter of the dashboard is not one it understands."""


@attrs.frozen
class _Choice:
    """The window the page shows and how the picker was set to ask for it."""

    window: UsageWindow
    range: str
    start: date
    end: date
    """The last day shown, inclusive."""
    bucket_choice: str


def _parse_day(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name, "")
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        msg = f"{name} must be a date as YYYY-MM-DD, got {raw!r}"
        raise _BadQuery(msg) from None


def _floor(moment: datetime, bucket: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def _choose(request: web.Request, now: datetime) -> _Choice:
    query = request.query
    stack = query.get("stack", "model")
    if stack not in STACKS:
        msg = f"stack must be one of {', '.join(STACKS)}, got {stack!r}"
        raise _BadQuery(msg)
    bucket_choice = query.get("bucket", "auto")
    if bucket_choice not in {"auto", "hour", "day"}:
        msg = f"bucket must be auto, hour or day, got {bucket_choice!r}"
        raise _BadQuery(msg)
    range_choice = query.get("range", DEFAULT_RANGE)
    if range_choice not in RANGES and range_choice != CUSTOM:
        msg = f"range must be one of {', '.join(RANGES)}, {CUSTOM}, got {range_choice!r}"
        raise _BadQuery(msg)
    first, last = _parse_day(request, "from"), _parse_day(request, "to")
    if range_choice == CUSTOM:
        last = last or now.date()
        first = first or last - timedelta(days=6)
        if first > last:
            msg = f"from ({first}) must not be after to ({last})"
            raise _BadQuery(msg)
        span = timedelta(days=(last - first).days + 1)
        if span.days > MAX_DAYS:
            msg = f"a custom range covers at most {MAX_DAYS} days, got {span.days}"
            raise _BadQuery(msg)
        since = datetime(first.year, first.month, first.day, tzinfo=UTC)
        until = since + span
    else:
        span = RANGES[range_choice][1]
    bucket = bucket_choice
    if bucket == "auto":
        bucket = "hour" if span <= _AUTO_HOURLY else "day"
    if bucket == "hour" and span > timedelta(days=MAX_HOURLY_DAYS):
        msg = f"bucket=hour covers at most {MAX_HOURLY_DAYS} days; choose day for a longer range"
        raise _BadQuery(msg)
    if range_choice != CUSTOM:
        # The current hour or day is the last bucket, so the newest events show.
        step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        until = _floor(now, bucket) + step
        since = until - span
    window = UsageWindow(
        since=since.isoformat(timespec="microseconds"),
        until=until.isoformat(timespec="microseconds"),
        bucket="hour" if bucket == "hour" else "day",
        stack_by=stack,
        top=_TOP,
    )
    return _Choice(
        window,
        range_choice,
        since.date(),
        (until - timedelta(microseconds=1)).date(),
        bucket_choice,
    )


async def _dashboard(request: web.Request) -> web.StreamResponse:
    if not _signed_in(request):
        raise web.HTTPSeeOther(f"/login?next={quote(request.rel_url.path_qs, safe='')}")
    try:
        choice = _choose(request, datetime.now(UTC))
    except _BadQuery as exc:
        return _page(
            request, "error.html", status=400, heading="That view does not exist", message=str(exc)
        )
    try:
        usage = await request.app[_STORE].usage(choice.window)
    except StoreUnavailableError as exc:
        log.error("collector: dashboard could not read the database: %s", exc)
        return _page(
            request,
            "error.html",
            status=503,
            heading="The database cannot be read right now",
            message="The collector could not read its events; try again in a moment.",
        )
    return _page(request, "dashboard.html", **_view(choice, usage, request))


# Formatting: the words and numbers a person reads.


def format_cost(value: float | None) -> str:
    """Money as people read it: cents from a dollar up, four decimals from a cent, else more.

    >>> format_cost(1234.5), format_cost(0.41896), format_cost(0.00075), format_cost(None)
    ('$1,234.50', '$0.4190', '$0.00075', 'n/a')
    """
    if value is None:
        return "n/a"
    if value == 0 or value >= 1:
        return f"${value:,.2f}"
    if value >= 0.01:
        return f"${value:.4f}"
    if value < 0.000001:
        return "<$0.000001"
    return "$" + f"{value:.6f}".rstrip("0")


def _format_ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value / 1000:,.2f} s"
    return f"{value:,.0f} ms"


def _format_count(value: float) -> str:
    return f"{value:,.0f}"


def _decimals(ticks: list[float], scale: float, least: int = 0) -> int:
    # The fewest decimals that write every tick exactly, so no two labels read the same.
    return next(
        (
            d
            for d in range(least, 9)
            if all(abs(round(t / scale, d) - t / scale) < 1e-9 for t in ticks)
        ),
        9,
    )


def _money_axis(ticks: list[float]) -> list[str]:
    digits = _decimals(ticks, 1.0, least=2)
    return [f"${t:,.{digits}f}" for t in ticks]


def _count_axis(ticks: list[float]) -> list[str]:
    scale, suffix = next(
        ((s, x) for s, x in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if ticks[-1] >= s), (1.0, "")
    )
    digits = _decimals(ticks, scale)
    return [f"{t / scale:,.{digits}f}{suffix}" if t else "0" for t in ticks]


def _ms_axis(ticks: list[float]) -> list[str]:
    scale, suffix = (1000.0, " s") if ticks[-1] >= 1000 else (1.0, " ms")
    digits = _decimals(ticks, scale)
    return [f"{t / scale:,.{digits}f}{suffix}" for t in ticks]


def _buckets(window: UsageWindow) -> Iterator[tuple[str, str, str]]:
    """(key, label, axis label) of each bucket in the window, keys as the store groups them."""
    step = timedelta(hours=1) if window.bucket == "hour" else timedelta(days=1)
    moment = datetime.fromisoformat(window.since)
    until = datetime.fromisoformat(window.until)
    while moment < until:
        if window.bucket == "hour":
            # On the axis, hours alone, and the date where a day starts.
            tick = moment.strftime("%b %d" if moment.hour == 0 else "%H:00")
            yield moment.strftime("%Y-%m-%dT%H"), moment.strftime("%b %d %H:00"), tick
        else:
            day = moment.strftime("%b %d")
            yield moment.strftime("%Y-%m-%d"), day, day
        moment += step


def _value_label(stack: str, value: str | None) -> str:
    return _NONE_LABEL[stack] if value is None else value


def _view(choice: _Choice, usage: Usage, request: web.Request) -> dict[str, Any]:
    window = choice.window
    buckets = list(_buckets(window))
    keys = [key for key, _, _ in buckets]
    labels = [label for _, label, _ in buckets]
    ticks = [tick for _, _, tick in buckets]
    empty = Totals()
    per_bucket = [usage.buckets.get(key, empty) for key in keys]

    stacked = usage.stacked_cost
    series, rows = [], []
    for i, value in enumerate(v.value for v in usage.top[window.stack_by]):
        costs = [stacked.get(value, {}).get(key, 0.0) for key in keys]
        if any(costs):
            series.append(Series(_value_label(window.stack_by, value), f"s{i}"))
            rows.append(costs)
    other = [
        max((t.cost or 0.0) - sum(row[i] for row in rows), 0.0) for i, t in enumerate(per_bucket)
    ]
    # Rounding leaves dust in "other" when every value is named; a nano-dollar is not spend.
    if any(v > 1e-9 for v in other):
        series.append(Series("Other", "other"))
        rows.append(other)
    spend = bar_chart(labels, series, rows, format_cost, _money_axis, ticks=ticks)

    tokens = bar_chart(
        labels,
        [Series("Input", "input"), Series("Output", "output")],
        [[t.input_tokens for t in per_bucket], [t.output_tokens for t in per_bucket]],
        _format_count,
        _count_axis,
        ticks=ticks,
        width=HALF_WIDTH,
    )
    calls = bar_chart(
        labels,
        [Series("Succeeded", "ok"), Series("Failed", "error")],
        [[t.calls - t.errors for t in per_bucket], [t.errors for t in per_bucket]],
        _format_count,
        _count_axis,
        ticks=ticks,
        width=HALF_WIDTH,
    )
    latency_rows = [[usage.bucket_latency.get(key, {}).get(p) for key in keys] for p in PERCENTILES]
    latency = line_chart(
        labels,
        [Series(f"p{p}", f"p{p}") for p in PERCENTILES],
        latency_rows,
        _format_ms,
        _ms_axis,
        ticks=ticks,
    )
    totals = usage.totals
    base_query = {k: v for k, v in request.query.items() if k in {"range", "from", "to", "bucket"}}
    return {
        "choice": choice,
        "totals": totals,
        "latency": {p: _format_ms(usage.latency.get(p)) for p in PERCENTILES},
        "spend": spend,
        "tokens": tokens,
        "calls": calls,
        "latency_chart": latency,
        "table": [
            {
                "label": label,
                "cost": format_cost(t.cost),
                "totals": t,
                "latency": [
                    _format_ms(usage.bucket_latency.get(key, {}).get(p)) for p in PERCENTILES
                ],
            }
            for key, label, t in zip(keys, labels, per_bucket, strict=True)
            if t.calls
        ],
        "top": {
            name: [
                {
                    "label": _value_label(name, v.value),
                    "named": v.value is not None,
                    "totals": v.totals,
                    "cost": format_cost(v.totals.cost),
                    "share": _share(v.totals.cost, totals.cost),
                }
                for v in values
            ]
            for name, values in usage.top.items()
        },
        "stacks": [
            (name, title, "/?" + urlencode({**base_query, "stack": name}))
            for name, title in _STACK_NAMES.items()
        ],
        "ranges": [(name, label) for name, (label, _) in RANGES.items()],
        "format_cost": format_cost,
        "format_ms": _format_ms,
        "window_text": _window_text(choice),
        "percentiles": PERCENTILES,
    }


def _share(part: float | None, whole: float | None) -> float:
    if not part or not whole:
        return 0.0
    return min(part / whole, 1.0)


def _window_text(choice: _Choice) -> str:
    since = datetime.fromisoformat(choice.window.since)
    last = datetime.fromisoformat(choice.window.until) - timedelta(minutes=1)
    if choice.window.bucket == "day":
        return f"{since:%b %d} to {last:%b %d, %Y}, daily, in UTC"
    return f"{since:%b %d %H:%M} to {last:%b %d, %Y %H:%M}, hourly, in UTC"
