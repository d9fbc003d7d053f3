"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against `serve`.

Each run keeps its screenshots in build/screenshots/. With FLUXGATE_DOCS_SCREENSHOTS=1
(`make screenshots`) it also writes the ones the docs show into docs/assets/, so the
images on the docs page always come from this test and never from a hand.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Request, ViewportSize, async_playwright
from rich.console import Console
from rich.text import Text

from fluxgate_async import AiEventMetadata, AiEventUsage, CreateAiEventResponse, FluxGate, LLMEvent

from .conftest import CollectorProcess

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
DOCS_ASSETS = ROOT / "docs" / "assets"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
KEY = "dashboard-test-key-5f1c9a"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
PAGE_TIMEOUT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless; the test fails (never skips) when it is missing."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: `make test` installs it with apt-get")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_FLAGS, timeout=PAGE_TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


def _keep(png: bytes, name: str, *, docs: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / name).write_bytes(png)
    if docs and os.environ.get("FLUXGATE_DOCS_SCREENSHOTS") == "1":
        DOCS_ASSETS.mkdir(parents=True, exist_ok=True)
        (DOCS_ASSETS / name).write_bytes(png)


def _assert_money(shown: str, expected: float) -> None:
    """`shown` is `expected` in dollars, rounded to the decimals it shows."""
    digits = shown.strip().lstrip("$").replace(",", "")
    decimals = len(digits.partition(".")[2])
    assert float(digits) == pytest.approx(expected, abs=0.5 * 10**-decimals + 1e-12)


def _nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p / 100 * len(ordered)) - 1]


KNOWN = [
    # model, provider, feature, user, input, output, latency ms, status
    ("gpt-4o", "openai", "chat", "alice", 1200, 400, 820.0, "SUCCESS"),
    ("gpt-4o", "openai", "chat", "bob", 900, 300, 640.0, "SUCCESS"),
    ("gpt-4o-mini", "openai", "search", "alice", 3000, 200, 210.0, "SUCCESS"),
    ("gpt-4o-mini", "openai", "search", "carol", 2500, 150, 190.0, "ERROR"),
    ("claude-sonnet-4-5", "anthropic", "summarise", "bob", 5000, 800, 1450.0, "SUCCESS"),
    ("claude-sonnet-4-5", "anthropic", "chat", "carol", 700, 900, 1800.0, "SUCCESS"),
    ("acme-internal-7b", "acme", "search", "alice", 400, 100, 95.0, "SUCCESS"),
    ("gpt-4o", "openai", "summarise", "bob", 6000, 700, 2300.0, "MAX_TOKENS"),
]


def _event(row: tuple[str, str, str, str, int, int, float, str]) -> LLMEvent:
    model, provider, feature, user, input_tokens, output_tokens, latency, status = row
    return LLMEvent(
        AiEventUsage(
            input_tokens, output_tokens, model=model, provider=provider, latency_in_ms=latency
        ),
        status=status,
        metadata=AiEventMetadata(feature=feature, user=user),
    )


async def _send(url: str, key: str, events: list[LLMEvent]) -> list[CreateAiEventResponse]:
    async with FluxGate(key, endpoint=url) as fg:
        answers = await asyncio.gather(*(fg.record_event(e) for e in events))
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


async def _text(page: Page, selector: str) -> str:
    return (await page.locator(selector).inner_text()).strip()


async def test_dashboard_signs_in_with_the_key_and_shows_the_numbers_sent(
    db: Path, browser: Browser
) -> None:
    """Behind a key, the form admits only the key; the page shows the numbers of the events sent."""
    collector = CollectorProcess(db, "--api-key", KEY)
    collector.start()
    try:
        answers = await _send(collector.url, KEY, [_event(row) for row in KNOWN])
        context = await browser.new_context(viewport=VIEWPORT)
        page = await context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        seen: list[str] = []

        def record(request: Request) -> None:
            seen.append(request.url)

        page.on("request", record)

        await page.goto(f"{collector.base_url}/?range=24h")
        assert page.url.startswith(f"{collector.base_url}/login?next=")
        await page.fill("#key", "not-the-key")
        async with page.expect_response(f"{collector.base_url}/login") as refused:
            await page.click("button[type=submit]")
        assert (await refused.value).status == 401
        assert "not one this collector accepts" in await _text(page, "#login-error")
        assert await context.cookies() == []
        _keep(await page.screenshot(), "sign-in-refused.png", docs=False)

        await page.fill("#key", KEY)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{collector.base_url}/?range=24h")
        cookies = await context.cookies()
        assert [c["name"] for c in cookies] == ["fluxgate_session"]
        assert cookies[0]["httpOnly"] is True
        assert cookies[0]["sameSite"] == "Strict"
        assert KEY not in cookies[0]["value"]
        assert await page.evaluate("document.cookie") == ""

        calls = len(KNOWN)
        cost = sum(a.cost for a in answers if a.cost is not None)
        errors = sum(1 for row in KNOWN if row[7] != "SUCCESS")
        _assert_money(await _text(page, "#kpi-spend .value"), cost)
        assert await _text(page, "#kpi-spend .sub") == "1 unpriced call"
        assert await _text(page, "#kpi-calls .value") == str(calls)
        tokens = sum(row[4] + row[5] for row in KNOWN)
        assert await _text(page, "#kpi-tokens .value") == f"{tokens:,}"
        assert await _text(page, "#kpi-errors .value") == f"{errors / calls * 100:.1f}%"
        latencies = [row[6] for row in KNOWN]
        for p in (50, 95, 99):
            shown = await _text(page, f"#latency-p{p} dd")
            expected = _nearest_rank(latencies, p)
            assert shown == (
                f"{expected / 1000:,.2f} s" if expected >= 1000 else f"{expected:,.0f} ms"
            )

        by_user: dict[str, float] = defaultdict(float)
        for row, answer in zip(KNOWN, answers, strict=True):
            by_user[row[3]] += answer.cost or 0.0
        ranked = sorted(by_user, key=lambda user: -by_user[user])
        shown_users = await page.locator("#top-users tbody th .label").all_inner_texts()
        assert shown_users == ranked
        top_cost = await _text(page, "#top-users tbody tr:first-child td.cost")
        _assert_money(top_cost, by_user[ranked[0]])

        # One stacked segment per (hour, priced model); the bars are in the hours stored.
        hours_models = {
            (a.created_at[:13], row[0])
            for row, a in zip(KNOWN, answers, strict=True)
            if a.cost is not None
        }
        assert await page.locator("#spend-chart rect.bar").count() == len(hours_models)
        priced_models = {model for _, model in hours_models}
        legend = await page.locator("#spend-chart + .legend li").all_inner_texts()
        assert sorted(text.strip() for text in legend) == sorted(priced_models)
        hours = {a.created_at[:13] for a in answers}
        assert await page.locator("#tokens-chart rect.bar").count() == 2 * len(hours)
        assert await page.locator("#calls-chart rect.bar").count() == len(hours) + len(
            {
                a.created_at[:13]
                for row, a in zip(KNOWN, answers, strict=True)
                if row[7] != "SUCCESS"
            }
        )
        assert await page.locator("#latency-chart polyline").count() == 3
        assert await page.locator("#latency-chart circle").count() == 3 * len(hours)
        # Every chart is drawn: the browser lays each one out at a real size.
        for chart in ("spend", "tokens", "calls", "latency"):
            box = await page.locator(f"#{chart}-chart").bounding_box()
            assert box is not None
            assert box["width"] > 300
            assert box["height"] > 100

        _keep(await page.screenshot(full_page=True), "dashboard-signed-in.png", docs=False)

        # The session opens the dashboard only: the API still wants the key itself.
        api = await context.request.get(f"{collector.base_url}/api/events")
        assert api.status == 401

        await page.click("text=Sign out")
        await page.wait_for_url(f"{collector.base_url}/login")
        await page.goto(f"{collector.base_url}/")
        assert page.url.startswith(f"{collector.base_url}/login")
        assert not any(KEY in url for url in seen)
        await context.close()
    finally:
        collector.stop()


MODELS = [
    ("gpt-4o", "openai", 1.0),
    ("claude-sonnet-4-5", "anthropic", 0.7),
    ("gpt-4o-mini", "openai", 2.5),
    ("gemini-2.5-flash", "google", 1.2),
]
FEATURES = ["support-chat", "search", "summaries", "code-review", "onboarding"]
USERS = [f"{name}@example.com" for name in ("ana", "ben", "chloe", "dev", "emma", "farid")]


def _week_of_events(rng: random.Random, now: datetime) -> list[tuple[LLMEvent, str]]:
    """A plausible week: weekday traffic, a few failures, each event with the time it happened."""
    events = []
    for day in range(7):
        for _ in range(rng.randint(25, 45)):
            model, provider, _ = rng.choices(MODELS, weights=[m[2] for m in MODELS])[0]
            if day == 0:  # today: up to now, never in the future
                when = now - timedelta(minutes=rng.uniform(0, min(now.hour * 60 + 29, 600)))
            else:  # office hours of an earlier day
                start = now.replace(hour=6, minute=0) - timedelta(days=day)
                when = start + timedelta(minutes=rng.uniform(0, 15 * 60))
            status = "ERROR" if rng.random() < 0.04 else "SUCCESS"
            usage = AiEventUsage(
                rng.randint(300, 6000),
                rng.randint(50, 1500),
                model=model,
                provider=provider,
                latency_in_ms=round(rng.lognormvariate(6.6, 0.5), 1),
            )
            metadata = AiEventMetadata(
                feature=rng.choice(FEATURES), user=rng.choices(USERS, weights=[6, 5, 3, 2, 1, 1])[0]
            )
            event = LLMEvent(usage, status=status, metadata=metadata)
            events.append((event, when.isoformat(timespec="microseconds")))
    return events


def _backdate(db: Path, times: dict[str, str]) -> None:
    """Move stored events to the times they happened, as a week of real traffic would be."""
    with closing(sqlite3.connect(db, timeout=10)) as conn, conn:
        conn.executemany(
            "UPDATE events SET created_at = ? WHERE id = ?",
            [(when, event_id) for event_id, when in times.items()],
        )


async def test_dashboard_draws_a_week_and_the_picker_changes_the_window(
    db: Path, browser: Browser, collector_process: CollectorProcess
) -> None:
    """Open without a key: a week draws 7 daily bars; the stack switch and range picker redraw."""
    now = datetime.now(UTC).replace(minute=30)
    events = _week_of_events(random.Random(7), now)
    answers = await _send(collector_process.url, "any", [e for e, _ in events])
    _backdate(db, {a.id: when for a, (_, when) in zip(answers, events, strict=True)})
    days = {when[:10] for _, when in events}

    context = await browser.new_context(viewport=VIEWPORT, color_scheme="light")
    page = await context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    await page.goto(f"{collector_process.base_url}/")
    assert await _text(page, "h1") == "Usage"
    assert await page.locator("text=Sign out").count() == 0
    assert await _text(page, "#kpi-calls .value") == f"{len(events):,}"
    assert "daily" in await _text(page, "#window")
    segments = page.locator("#spend-chart rect.bar")
    xs = {await segments.nth(i).get_attribute("x") for i in range(await segments.count())}
    assert len(xs) == len(days) == 7
    legend = await page.locator("#spend-chart + .legend li").all_inner_texts()
    assert sorted(t.strip() for t in legend) == sorted(m[0] for m in MODELS)
    await page.click("text=Show the numbers as a table")
    rows = page.locator("#spend-table tbody tr")
    assert await rows.count() == 7
    calls = [
        int((await rows.nth(i).locator("td").nth(1).inner_text()).replace(",", ""))
        for i in range(7)
    ]
    assert sum(calls) == len(events)
    await page.click("text=Show the numbers as a table")
    _keep(await page.screenshot(full_page=True), "dashboard.png")

    await page.click("nav.segmented >> text=User")
    await page.wait_for_url(re.compile(r".*stack=user.*"))
    legend = await page.locator("#spend-chart + .legend li").all_inner_texts()
    assert sorted(t.strip() for t in legend) == sorted(USERS)

    def last_24_hours() -> int:
        # The window is the current hour and the 23 before it.
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        since = (hour - timedelta(hours=23)).isoformat()
        return sum(1 for _, when in events if when >= since)

    before = last_24_hours()
    await page.select_option("select[name=range]", "24h")
    await page.click("form.picker button[type=submit]")
    await page.wait_for_url(re.compile(r".*range=24h.*"))
    assert "hourly" in await _text(page, "#window")
    assert await page.get_attribute("select[name=range] option[selected]", "value") == "24h"
    shown = int((await _text(page, "#kpi-calls .value")).replace(",", ""))
    assert shown in {before, last_24_hours()}  # the hour may turn meanwhile
    hours = await page.locator("#latency-chart .xlabel").all_text_contents()
    assert 2 <= len(hours) <= 24
    assert all(re.fullmatch(r"\d\d:00|[A-Z][a-z]{2} \d\d", hour) for hour in hours), hours
    await context.close()

    dark = await browser.new_context(viewport=VIEWPORT, color_scheme="dark")
    page = await dark.new_page()
    await page.goto(f"{collector_process.base_url}/?stack=feature")
    _keep(await page.screenshot(full_page=True), "dashboard-dark.png")
    await dark.close()

    # The report as a terminal shows it, colours included, for the docs.
    report = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fluxgate_async", "report", "--db", str(db), "--by", "feature"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FORCE_COLOR": "1", "COLUMNS": "100"},
    )
    assert report.returncode == 0, report.stderr
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(Text("$ fluxgate-async report --by feature\n", style="bold"), end="")
    console.print(Text.from_ansi(report.stdout))
    terminal = await browser.new_page(viewport=ViewportSize(width=900, height=400))
    await terminal.set_content(console.export_html(inline_styles=True, code_format=_TERMINAL))
    assert "summaries" in await terminal.inner_text("pre")
    _keep(await terminal.locator("pre").screenshot(), "report.png")
    await terminal.close()


_TERMINAL = """<!doctype html><html><body style="margin:0;background:#0f1216">
<pre style="margin:0;padding:18px 22px;color:#e6e9ee;background:#0f1216;
font:14px/1.4 'DejaVu Sans Mono',monospace;display:inline-block">{code}</pre></body></html>"""
