"""The collector's routes, in process: every answer a client can get from them."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fluxgate_async import FluxGate
from fluxgate_async.collector import MAX_TOKENS, Collector, SQLiteEventStore, StoreUnavailableError


@pytest.fixture
async def collector(db: Path) -> AsyncIterator[Collector]:
    """A collector on a free port, keys required: `good-key`."""
    async with Collector(db, api_keys=["good-key"]) as running:
        yield running


async def _request(
    collector: Collector,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    key: str | None = "good-key",
) -> tuple[int, Any]:
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"{collector.base_url}{path}",
            data=None if body is None else json.dumps(body),
            headers={**sent, **(headers or {})},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def _raw(collector: Collector, head: bytes, body: bytes = b"") -> tuple[int, bytes, Any]:
    """Send bytes no well-behaved client would; return the status, the head and the JSON body."""
    reader, writer = await asyncio.open_connection(collector.host, collector.port)
    try:
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        writer.write(head + length + b"Connection: close\r\n\r\n" + body)
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    answer_head, _, answer_body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), answer_head, json.loads(answer_body)


def _usage(**fields: Any) -> dict[str, Any]:
    return {"usage": {"inputTokens": 100, "outputTokens": 10, **fields}}


async def test_repr_and_urls_name_the_address(collector: Collector) -> None:
    """The collector shows where it listens; the events endpoint is under it."""
    assert repr(collector) == f"<Collector http://127.0.0.1:{collector.port} running>"
    assert collector.url == f"http://127.0.0.1:{collector.port}/api/events"
    await collector.aclose()
    assert "stopped" in repr(collector)
    await collector.aclose()


def test_ipv6_base_url_is_bracketed(db: Path) -> None:
    """An IPv6 host is written in brackets in the URL."""
    assert Collector(db, host="::1", port=9).base_url == "http://[::1]:9"


@pytest.mark.parametrize(
    ("headers", "key"),
    [({}, None), ({}, "bad-key"), ({"Authorization": "Token good-key"}, None)],
)
async def test_every_api_route_requires_the_key(
    collector: Collector, headers: dict[str, str], key: str | None
) -> None:
    """POST and GET routes answer 401 without the right Bearer key; /healthz does not ask."""
    for method, path in [("POST", "/api/events"), ("GET", "/api/events"), ("GET", "/api/summary")]:
        status, answer = await _request(
            collector, method, path, body=_usage(), headers=headers, key=key
        )
        assert status == 401
        assert "good-key" not in json.dumps(answer)
    assert await _request(collector, "GET", "/healthz", key=None) == (200, {"status": "ok"})


@pytest.mark.parametrize("token", [b"g\xffod-key", "g\u00e9od-key".encode(), b"\xc3"])
async def test_non_ascii_authorization_is_refused_not_a_crash(
    collector: Collector, token: bytes
) -> None:
    """A key with bytes that are not ASCII (UTF-8 or not) gets 401 and a Bearer challenge."""
    status, head, answer = await _raw(
        collector,
        b"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + b"\r\n",
    )
    assert status == 401
    assert answer["error"].startswith("missing or invalid API key")
    assert b'WWW-Authenticate: Bearer realm="fluxgate"' in head


@pytest.mark.parametrize("key", [b"\xff\xfe", "cl\u00e9".encode(), b"two words"])
async def test_idempotency_key_outside_visible_ascii_is_refused(
    collector: Collector, key: bytes
) -> None:
    """An Idempotency-Key with spaces or non-ASCII bytes gets 400, not a failed store."""
    status, _, answer = await _raw(
        collector,
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-key\r\n"
        b"Idempotency-Key: " + key + b"\r\n",
        json.dumps(_usage()).encode(),
    )
    assert (status, answer) == (
        400,
        {"error": "Idempotency-Key must be 1 to 255 visible ASCII characters"},
    )


@pytest.mark.parametrize(
    ("encoding", "body", "status", "problem"),
    [
        (b"gzip", b"not gzip at all", 400, "body could not be read as gzip data"),
        (b"deflate", b"not deflate", 400, "body could not be read as deflate data"),
        (b"compress", b"{}", 415, "Content-Encoding 'compress' is not supported"),
        (b"gzip", gzip.compress(json.dumps(_usage()).encode()), 200, None),
    ],
)
async def test_content_encoding_is_decoded_or_refused(
    collector: Collector, encoding: bytes, body: bytes, status: int, problem: str | None
) -> None:
    """A gzip body is read; a corrupt one gets 400 and an unknown coding 415, never a 500."""
    got, _, answer = await _raw(
        collector,
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-key\r\n"
        b"Content-Encoding: " + encoding + b"\r\n",
        body,
    )
    assert got == status
    if problem is None:
        assert answer["id"].startswith("evt_")
    else:
        assert answer["error"].startswith(problem)


async def test_integral_token_counts_written_as_floats_are_integers(
    collector: Collector,
) -> None:
    """`100.0` tokens is the integer 100, as JSON Schema reads it; `100.5` is refused."""
    status, answer = await _request(
        collector, "POST", "/api/events", body=_usage(inputTokens=100.0, cachedTokens=1e2)
    )
    assert status == 200
    _, page = await _request(collector, "GET", "/api/events")
    assert page["events"][0]["event"]["usage"]["inputTokens"] == 100
    assert page["events"][0]["event"]["usage"]["cachedTokens"] == 100
    status, answer = await _request(
        collector, "POST", "/api/events", body=_usage(outputTokens=100.5)
    )
    assert status == 400
    assert answer["error"].startswith("usage.outputTokens")


async def test_openapi_document_is_served_without_a_key(collector: Collector) -> None:
    """GET /openapi.json needs no key and describes this collector: its key is required."""
    status, document = await _request(collector, "GET", "/openapi.json", key=None)
    assert status == 200
    assert document["openapi"] == "3.1.0"
    assert document["paths"]["/api/summary"]["get"]["security"] == [{"apiKey": []}]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "collector.example"])
def test_collector_beyond_loopback_needs_a_key_or_consent(db: Path, host: str) -> None:
    """Collector(host=...) beyond loopback with no key is refused unless allow_anonymous=True."""
    with pytest.raises(ValueError, match="pass api_keys, or allow_anonymous=True") as refusal:
        Collector(db, host=host)
    assert host in str(refusal.value)
    assert Collector(db, host=host, allow_anonymous=True).host == host
    assert Collector(db, host=host, api_keys=["k"]).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_collector_on_loopback_needs_no_key(db: Path, host: str) -> None:
    """On loopback, a collector without keys is allowed as before."""
    assert Collector(db, host=host).host == host


async def test_tracked_user_and_cached_tokens_are_stored(collector: Collector) -> None:
    """A TrackedUser's id is what reports group on; cached tokens are priced at the cache rate."""
    event = _usage(model="gpt-4o", provider="openai", cachedTokens=60)
    event["metadata"] = {"user": {"id": "user-ada", "email": "ada@example.com"}}
    status, answer = await _request(collector, "POST", "/api/events", body=event)
    assert status == 200
    assert answer["cost"] == pytest.approx((40 * 2.5 + 60 * 1.25 + 10 * 10) / 1_000_000)
    _, summary = await _request(collector, "GET", "/api/summary?group_by=user")
    assert summary["rows"][0]["user"] == "user-ada"


async def test_token_counts_over_the_limit_are_refused(collector: Collector) -> None:
    """A token count above MAX_TOKENS gets 400 naming the field."""
    status, answer = await _request(
        collector, "POST", "/api/events", body=_usage(cachedTokens=MAX_TOKENS + 1)
    )
    assert status == 400
    assert answer["error"].startswith("usage.cachedTokens: must be at most")


async def test_infinite_extra_value_is_refused(collector: Collector) -> None:
    """A metadata value JSON cannot carry back (1e999 reads as infinity) gets 400."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            collector.url,
            data=b'{"usage": {"inputTokens": 1, "outputTokens": 1}, "metadata": {"x": 1e999}}',
            headers={"Authorization": "Bearer good-key"},
        ) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("metadata.x: inf is not JSON")


@pytest.mark.parametrize(
    "extra",
    [
        {"big": 2**64 + 1, "small": -(2**70)},  # past what a 64-bit integer holds
        {"nothing": None, "note": "null and void"},
        {"text": "caf\u00e9 \U0001f680", "ratio": 1e-07, "huge": 1.5e300},
    ],
)
async def test_metadata_values_are_listed_as_sent(collector: Collector, extra: Any) -> None:
    """Whatever JSON value an event's metadata carries comes back the same when listed."""
    body = {**_usage(), "metadata": {"feature": "chat", **extra}}
    status, _ = await _request(collector, "POST", "/api/events", body=body)
    assert status == 200
    _, page = await _request(collector, "GET", "/api/events")
    assert page["events"][-1]["event"]["metadata"] == {"feature": "chat", **extra}


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_idempotency_key_length_is_checked(collector: Collector, key: str) -> None:
    """An empty or overlong Idempotency-Key gets 400."""
    status, answer = await _request(
        collector, "POST", "/api/events", body=_usage(), headers={"Idempotency-Key": key}
    )
    assert status == 400
    assert "Idempotency-Key" in answer["error"]


async def test_events_since_and_limit(collector: Collector) -> None:
    """`since` keeps events created at or after it; `limit` caps the count, oldest first."""
    ids = []
    for n in range(3):
        _, answer = await _request(collector, "POST", "/api/events", body=_usage(model=f"m{n}"))
        ids.append(answer)
    _, page = await _request(collector, "GET", "/api/events?limit=2")
    assert [e["id"] for e in page["events"]] == [ids[0]["id"], ids[1]["id"]]
    since = ids[1]["createdAt"]
    _, later = await _request(collector, "GET", f"/api/events?since={since.replace('+', '%2B')}")
    assert [e["id"] for e in later["events"]] == [ids[1]["id"], ids[2]["id"]]
    _, none = await _request(collector, "GET", "/api/events?since=2999-01-01")
    assert none["events"] == []


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("/api/events?limit=0", "limit must be an integer from 1 to 1000"),
        ("/api/events?limit=abc", "limit must be an integer from 1 to 1000"),
        ("/api/events?limit=1001", "limit must be an integer from 1 to 1000"),
        ("/api/events?since=yesterday", "since must be an ISO 8601 date or datetime"),
        ("/api/summary?group_by=colour", "group_by must be one of model, provider"),
        ("/api/summary?since=soon", "since must be an ISO 8601"),
        ("/api/events?since=", "since must be an ISO 8601 date or datetime, got ''"),
        ("/api/events?since=0001-01-01T00:00:00%2B01:00", "since is out of range once in UTC"),
        ("/api/summary?since=9999-12-31T23:59:59-01:00", "since is out of range once in UTC"),
        ("/api/events?limit=%D9%A1", "limit must be an integer from 1 to 1000"),
        ("/api/events?limit=1_0", "limit must be an integer from 1 to 1000"),
        ("/api/summary?group=feature", "unknown query parameter(s) 'group'; expected: group_by"),
        ("/api/events?limit=1&limit=2", "query parameter(s) given more than once: limit"),
        ("/healthz?verbose=1", "unknown query parameter(s) 'verbose'; expected: none"),
    ],
)
async def test_bad_queries_get_400(collector: Collector, query: str, problem: str) -> None:
    """Out-of-range or unreadable query parameters get 400 naming the parameter."""
    status, answer = await _request(collector, "GET", query)
    assert status == 400
    assert problem in answer["error"]


async def test_summary_groups_calls_tokens_and_cost(collector: Collector) -> None:
    """The summary counts calls, sums tokens and cost, and counts unpriced and failed calls."""
    events = [
        _usage(model="gpt-4o", provider="openai") | {"metadata": {"feature": "chat"}},
        _usage(model="gpt-4o", provider="openai")
        | {"metadata": {"feature": "chat"}, "status": {"status": "ERROR", "errorMessage": "x"}},
        _usage(model="mystery") | {"metadata": {"feature": "search"}},
        _usage(),
    ]
    for event in events:
        assert (await _request(collector, "POST", "/api/events", body=event))[0] == 200
    _, by_model = await _request(collector, "GET", "/api/summary")
    assert by_model["groupBy"] == "model"
    gpt, *others = by_model["rows"]
    assert gpt == {
        "model": "gpt-4o",
        "calls": 2,
        "inputTokens": 200,
        "outputTokens": 20,
        "tokens": 220,
        "cost": pytest.approx(2 * (100 * 2.5 + 10 * 10) / 1_000_000),
        "unpriced": 0,
        "errors": 1,
    }
    assert {(row["model"], row["cost"], row["unpriced"]) for row in others} == {
        (None, None, 1),
        ("mystery", None, 1),
    }
    _, by_day = await _request(collector, "GET", "/api/summary?group_by=day&since=2000-01-01")
    assert by_day["rows"][0]["calls"] == 4
    assert len(by_day["rows"][0]["day"]) == 10


async def test_store_failure_answers_503_and_the_client_retries(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database fails, the answer is 503, which the client retries until it is stored."""
    calls = 0
    real_add = SQLiteEventStore.add

    async def failing_once(self: SQLiteEventStore, record: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailableError("disk I/O error")
        return await real_add(self, record)

    monkeypatch.setattr(SQLiteEventStore, "add", failing_once)
    async with FluxGate("good-key", endpoint=collector.url) as fg:
        answer = await fg.record_event(_usage(model="gpt-4o"))
    assert answer is not None
    assert calls == 2


async def test_concurrent_events_are_all_stored_once(collector: Collector) -> None:
    """Many concurrent requests, batched into few commits, are each stored exactly once."""
    async with FluxGate("good-key", endpoint=collector.url) as fg:
        answers = await asyncio.gather(
            *(fg.record_event(_usage(model="gpt-4o")) for _ in range(300))
        )
    assert len({a.id for a in answers if a is not None}) == 300
    _, page = await _request(collector, "GET", "/api/events?limit=1000")
    assert len(page["events"]) == 300


def test_collector_exports_exactly_its_public_names() -> None:
    """`fluxgate_async.collector.__all__` lists exactly its public names."""
    import fluxgate_async.collector as collector_pkg

    public = {n for n in dir(collector_pkg) if not n.startswith("_")}
    assert set(collector_pkg.__all__) == public
