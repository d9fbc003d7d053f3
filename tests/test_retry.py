"""Retry policy: full-jitter backoff and Retry-After in both RFC forms."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fluxgate_async._retry import backoff_delay, parse_retry_after


def test_backoff_is_jittered_below_an_exponential_cap() -> None:
    """Each retry waits a random time up to base * 2**n, never more than the cap."""
    for retry in range(8):
        delays = [backoff_delay(retry, base=0.25, cap=2.0) for _ in range(200)]
        bound = min(2.0, 0.25 * 2**retry)
        assert all(0.0 <= d <= bound for d in delays)
        assert len(set(delays)) > 1


def test_backoff_bound_doubles_with_each_retry() -> None:
    """Retry n draws from the whole range up to base * 2**n: later retries wait longer."""
    for retry in range(6):
        bound = 0.1 * 2**retry
        delays = [backoff_delay(retry, base=0.1, cap=100.0) for _ in range(500)]
        # 500 uniform draws all in the lowest or highest tenth: odds of 10**-500 each.
        assert max(delays) > 0.9 * bound
        assert min(delays) < 0.1 * bound
    means = [sum(backoff_delay(n, base=0.1, cap=100.0) for _ in range(500)) / 500 for n in range(4)]
    assert means == sorted(means)
    assert means[3] > 4 * means[0]


NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-4", 0.0),
        ("99999999", 60.0),
        ("Thu, 26 Nov 2026 12:00:10 GMT", 10.0),
        ("Thu, 26 Nov 2026 11:59:00 GMT", 0.0),
        ("Thursday, 26-Nov-26 12:00:05 GMT", 5.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(
    header: str | None, seconds: float | None
) -> None:
    """Delay-seconds and HTTP dates both give seconds from now; junk gives None."""
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_date_without_zone_is_read_as_utc() -> None:
    """An HTTP date missing its zone is taken as GMT, as RFC 9110 requires."""
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:07", now=NOW) == 7.0
