"""The dashboard's routes over HTTP, in process: sign-in, sessions, the picker's checks."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from fluxgate_async import AiEventMetadata, AiEventUsage, FluxGate, LLMEvent
from fluxgate_async.collector import Collector
from fluxgate_async.collector._dashboard import (
    SESSION_COOKIE,
    SESSION_LIFETIME,
    format_cost,
    session_token,
)

KEY = "good-key"


@pytest.fixture
async def keyed(db: Path) -> AsyncIterator[Collector]:
    """A collector that wants `good-key` (or `other-key`)."""
    async with Collector(db, api_keys=[KEY, "other-key"]) as running:
        yield running


@pytest.fixture
async def open_collector(db: Path) -> AsyncIterator[Collector]:
    """A collector without keys."""
    async with Collector(db) as running:
        yield running


async def _get(
    collector: Collector, path: str, *, cookie: str | None = None
) -> tuple[int, str, CIMultiDictProxy[str]]:
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{collector.base_url}{path}", headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text(), resp.headers


async def _post(
    collector: Collector, path: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, str, CIMultiDictProxy[str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{collector.base_url}{path}", data=form, headers=headers, allow_redirects=False
        ) as resp,
    ):
        return resp.status, await resp.text(), resp.headers


async def _sign_in(collector: Collector, key: str = KEY) -> str:
    status, _, headers = await _post(collector, "/login", {"key": key, "next": "/"})
    assert status == 303
    cookie = SimpleCookie(headers["Set-Cookie"])
    return cookie[SESSION_COOKIE].value


async def test_without_keys_the_dashboard_is_open(open_collector: Collector) -> None:
    """No key configured: `/` answers the page, and sign-in pages lead back to it."""
    status, html, headers = await _get(open_collector, "/")
    assert status == 200
    assert "<h1>Usage</h1>" in html
    assert "Sign out" not in html
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    assert "No calls were recorded in this window" in html
    for path in ("/login",):
        status, _, headers = await _get(open_collector, path)
        assert (status, headers["Location"]) == (303, "/")
    status, _, headers = await _post(open_collector, "/login", {"key": "x"})
    assert (status, headers["Location"]) == (303, "/")
    status, _, headers = await _post(open_collector, "/logout", {})
    assert (status, headers["Location"]) == (303, "/")


async def test_the_page_asks_for_a_key_and_keeps_where_it_was_going(keyed: Collector) -> None:
    """Without a session, `/` sends to the form, which returns to the asked view after."""
    status, _, headers = await _get(keyed, "/?range=24h&stack=user")
    assert status == 303
    location = urlsplit(headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query) == {"next": ["/?range=24h&stack=user"]}
    status, html, _ = await _get(keyed, "/login?next=%2F%3Frange%3D24h")
    assert status == 200
    assert 'type="password"' in html
    assert 'value="/?range=24h"' in html
    status, _, headers = await _post(keyed, "/login", {"key": KEY, "next": "/?range=24h"})
    assert (status, headers["Location"]) == (303, "/?range=24h")


async def test_a_wrong_key_is_refused_and_sets_no_cookie(keyed: Collector) -> None:
    """A key the collector does not accept gets 401 and the form again."""
    status, html, headers = await _post(keyed, "/login", {"key": "good-ke"})
    assert status == 401
    assert "not one this collector accepts" in html
    assert "Set-Cookie" not in headers
    status, _, _ = await _post(keyed, "/login", {})
    assert status == 401


async def test_the_session_cookie_is_httponly_strict_and_not_the_key(keyed: Collector) -> None:
    """The cookie is an HMAC of the time, bound to the key, hidden from scripts."""
    status, _, headers = await _post(keyed, "/login", {"key": KEY})
    raw = headers["Set-Cookie"]
    assert status == 303
    assert "HttpOnly" in raw
    assert "SameSite=Strict" in raw
    assert f"Max-Age={SESSION_LIFETIME}" in raw
    assert "Path=/" in raw
    token = SimpleCookie(raw)[SESSION_COOKIE].value
    assert KEY not in token
    assert re.fullmatch(r"\d+\.[0-9a-f]{64}", token)
    status, html, _ = await _get(keyed, "/", cookie=token)
    assert status == 200
    assert "Sign out" in html


async def test_the_cookie_is_secure_behind_an_https_proxy(keyed: Collector) -> None:
    """A proxy saying the browser came over HTTPS gets a `Secure` cookie; plain HTTP does not."""
    _, _, headers = await _post(keyed, "/login", {"key": KEY})
    assert "Secure" not in headers["Set-Cookie"]
    _, _, headers = await _post(
        keyed, "/login", {"key": KEY}, headers={"X-Forwarded-Proto": "https, http"}
    )
    assert "Secure" in headers["Set-Cookie"]


async def test_either_key_signs_in(keyed: Collector) -> None:
    """Every configured key opens the dashboard."""
    token = await _sign_in(keyed, "other-key")
    status, _, _ = await _get(keyed, "/", cookie=token)
    assert status == 200


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "",
        f"{int(time.time())}.{'0' * 64}",
        session_token("someone-else", int(time.time())),
        session_token(KEY, int(time.time()) - SESSION_LIFETIME - 5),
        session_token(KEY, int(time.time()) + 3600),
    ],
    ids=["garbage", "empty", "forged", "other-key", "expired", "from-the-future"],
)
async def test_a_forged_or_expired_session_is_sent_to_sign_in(keyed: Collector, token: str) -> None:
    """Only a fresh token made with one of the keys opens the page."""
    status, _, headers = await _get(keyed, "/", cookie=token)
    assert status == 303
    assert headers["Location"].startswith("/login")


async def test_a_signed_in_browser_skips_the_form(keyed: Collector) -> None:
    """`/login` with a valid session goes straight to where it was asked to go."""
    token = await _sign_in(keyed)
    status, _, headers = await _get(keyed, "/login?next=%2F%3Frange%3D30d", cookie=token)
    assert (status, headers["Location"]) == (303, "/?range=30d")


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil", "/\t/evil.example", "/\n/x", "evil"],
)
async def test_sign_in_never_redirects_off_site(keyed: Collector, target: str) -> None:
    """A `next` that would leave the collector is replaced by `/`."""
    status, _, headers = await _post(keyed, "/login", {"key": KEY, "next": target})
    assert (status, headers["Location"]) == (303, "/")


async def test_sign_out_clears_the_cookie(keyed: Collector) -> None:
    """Signing out expires the cookie and returns to the form."""
    status, _, headers = await _post(keyed, "/logout", {})
    assert (status, headers["Location"]) == (303, "/login")
    cleared = SimpleCookie(headers["Set-Cookie"])[SESSION_COOKIE]
    assert cleared.value == ""
    assert cleared["max-age"] == "0"


async def test_the_stylesheet_is_served_from_the_package(open_collector: Collector) -> None:
    """The page's only asset comes from the collector itself."""
    status, css, headers = await _get(open_collector, "/static/dashboard.css")
    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert "prefers-color-scheme: dark" in css


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("range=1y", "range must be one of 24h, 7d, 30d, 90d, custom, got &#39;1y&#39;"),
        ("bucket=minute", "bucket must be auto, hour or day"),
        ("stack=team", "stack must be one of model, feature, user"),
        ("range=custom&from=yesterday", "from must be a date as YYYY-MM-DD"),
        ("range=custom&from=2026-03-05&to=2026-03-01", "from (2026-03-05) must not be after to"),
        ("range=custom&from=2024-01-01&to=2026-01-01", "a custom range covers at most 366 days"),
        ("range=30d&bucket=hour", "bucket=hour covers at most 14 days"),
    ],
)
async def test_a_bad_view_names_the_parameter(
    open_collector: Collector, query: str, message: str
) -> None:
    """An unknown range, bucket, split or date gets 400 and says which parameter is wrong."""
    status, html, _ = await _get(open_collector, f"/?{query}")
    assert status == 400
    assert message in html


async def test_a_custom_range_shows_whole_utc_days(open_collector: Collector) -> None:
    """From and to are inclusive days; the picker shows them back."""
    status, html, _ = await _get(
        open_collector, "/?range=custom&from=2026-03-01&to=2026-03-03&bucket=hour"
    )
    assert status == 200
    assert "Mar 01 00:00 to Mar 03, 2026 23:59, hourly, in UTC" in html
    assert 'name="from" value="2026-03-01"' in html
    assert 'value="custom" selected' in html
    status, html, _ = await _get(open_collector, "/?range=custom&to=2026-03-07")
    assert "Mar 01 to Mar 07, 2026, daily, in UTC" in html


async def test_event_text_is_escaped_and_unpriced_spend_reads_na(
    open_collector: Collector,
) -> None:
    """Names from events are shown as text, never as markup; unknown prices are `n/a`."""
    event = LLMEvent(
        AiEventUsage(10, 5, model="<b>bold</b>", provider="acme", latency_in_ms=1500.0),
        metadata=AiEventMetadata(feature="<script>alert(1)</script>"),
    )
    async with FluxGate("k", endpoint=open_collector.url) as fg:
        assert await fg.record_event(event) is not None
    status, html, _ = await _get(open_collector, "/?range=24h&stack=feature")
    assert status == 200
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html
    assert re.search(r'id="kpi-spend">\s*<h2>Spend</h2>\s*<p class="value">n/a</p>', html)
    assert "1 unpriced call<" in html
    assert "(no user)" in html
    assert "1.50 s" in html


async def test_spend_beyond_the_top_values_is_stacked_as_other(
    open_collector: Collector,
) -> None:
    """The eight costliest features are named; the ninth joins "Other"."""
    events = [
        LLMEvent(
            AiEventUsage(1000 * (n + 1), 10, model="gpt-4o", provider="openai"),
            metadata=AiEventMetadata(feature=f"feature-{n}"),
        )
        for n in range(9)
    ]
    async with FluxGate("k", endpoint=open_collector.url) as fg:
        for event in events:
            assert await fg.record_event(event) is not None
    status, html, _ = await _get(open_collector, "/?range=24h&stack=feature&bucket=day")
    assert status == 200
    legend = html[html.index('<ul class="legend">') :]
    legend = legend[: legend.index("</ul>")]
    assert re.findall(r"</span>([^<]+)</li>", legend) == [
        *(f"feature-{n}" for n in range(8, 0, -1)),
        "Other",
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "n/a"),
        (0.0, "$0.00"),
        (2.5, "$2.50"),
        (1234567.891, "$1,234,567.89"),
        (0.0125, "$0.0125"),
        (0.00075, "$0.00075"),
        (0.0000004, "<$0.000001"),
    ],
)
def test_costs_read_as_money(value: float | None, shown: str) -> None:
    """Cents from a dollar up, more digits below, `n/a` for unknown."""
    assert format_cost(value) == shown


async def test_an_unreadable_database_gets_a_503_page(
    open_collector: Collector, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the database file is gone, the page says so with 503 and the log says why."""
    for path in db.parent.glob(f"{db.name}*"):
        path.unlink()
    with caplog.at_level(logging.ERROR, logger="fluxgate_async.collector"):
        status, html, _ = await _get(open_collector, "/")
    assert status == 503
    assert "The database cannot be read right now" in html
    assert "dashboard could not read the database" in caplog.text
