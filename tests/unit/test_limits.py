"""pesto.limits: a token's rate, monthly quota and concurrency, decided in one
place, with the messages and Retry-After docs/api.md fixes. A fake clock; no sleeps."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from pesto.clock import month_of, seconds_to_next_month, utcnow
from pesto.domain import Token
from pesto.errors import QuotaExceeded, RateLimited, TooManyJobs
from pesto.limits import RateWindow, check_concurrency, check_month, check_rate, refusal


def token(id: int = 7, **limits) -> Token:
    values = {"rate_limit": None, "monthly_limit": None, "max_concurrency": None}
    values.update(limits)
    return Token(id=id, name=f"t{id}", created_at="2026-11-01T00:00:00.000Z",
                 last_used_at=None, **values)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_window_slides_over_one_minute() -> None:
    clock = Clock()
    window = RateWindow(clock)
    limited = token(rate_limit=2)

    async def run() -> None:
        await check_rate(window, limited)
        clock.now += 10
        await check_rate(window, limited)
        clock.now += 5
        with pytest.raises(RateLimited) as refused:
            await check_rate(window, limited)
        # The first request leaves the window 60 s after it came: 45 s from now.
        assert refused.value.retry_after == 45
        assert refused.value.message == "this token may make 2 requests per minute; retry in 45 s"
        assert refused.value.status_code == 429 and refused.value.code == "RATE_LIMITED"
        clock.now += 45                        # the first request is out, the second is not
        await check_rate(window, limited)
        with pytest.raises(RateLimited):
            await check_rate(window, limited)

    asyncio.run(run())


def test_a_refused_request_is_not_counted_and_tokens_have_their_own_windows() -> None:
    clock = Clock()
    window = RateWindow(clock)

    async def run() -> None:
        one = token(rate_limit=1)
        await check_rate(window, one)
        for _ in range(5):                     # refused: not counted against the next minute
            with pytest.raises(RateLimited):
                await check_rate(window, one)
        await check_rate(window, token(8, rate_limit=1))      # another token's window
        clock.now += 60
        await check_rate(window, one)
        with pytest.raises(RateLimited):
            await check_rate(window, one)
        for _ in range(100):                   # no limit: never refused
            await check_rate(window, token(9))

    asyncio.run(run())


def test_the_month_allows_exactly_the_limit() -> None:
    check_month(token())                                            # no limit
    check_month(token(monthly_limit=3, month_executions=2))
    check_month(token(monthly_limit=3, month_executions=1), 2)      # a batch of two fits
    for used, count in ((3, 1), (2, 2), (0, 4)):
        with pytest.raises(QuotaExceeded) as refused:
            check_month(token(monthly_limit=3, month_executions=used), count)
        err = refused.value
        assert err.message == "Monthly limit exceeded"              # docs/api.md, the SDKs
        assert err.hint == "this token may run 3 executions per calendar month (UTC)"
        assert 1 <= err.retry_after <= 31 * 86400


def test_concurrency_counts_what_the_token_holds() -> None:
    check_concurrency(token(), 100, 5, 1)
    check_concurrency(token(max_concurrency=2), 1, 1, 1)
    with pytest.raises(TooManyJobs) as refused:
        check_concurrency(token(max_concurrency=2), 2, 1, 3)
    assert refused.value.retry_after == 3
    assert refused.value.message == ("this token may have 2 jobs queued or running at once; "
                                     "wait for one to finish")
    with pytest.raises(TooManyJobs) as refused:
        check_concurrency(token(max_concurrency=2), 1, 2, 1, batch=True)
    assert refused.value.message == ("this token may have 2 jobs queued or running at once "
                                     "(1 now, 2 more asked)")


def test_a_cluster_refusal_reads_as_the_single_node_one() -> None:
    limited = token(monthly_limit=1, max_concurrency=1)
    quota = refusal("quota", limited, 2)
    assert isinstance(quota, QuotaExceeded) and quota.message == "Monthly limit exceeded"
    busy = refusal("concurrency", limited, 2)
    assert isinstance(busy, TooManyJobs) and busy.retry_after == 2
    with pytest.raises(TooManyJobs) as single:
        check_concurrency(limited, 1, 1, 2)
    assert busy.message == single.value.message
    assert refusal("full", limited, 2) is None and refusal("ok", limited, 2) is None


def test_the_clock_months() -> None:
    now = utcnow()
    assert len(now) == 24 and now.endswith("Z") and month_of(now) == now[:7]
    assert month_of("2026-02-28T23:59:59.999Z") == "2026-02"
    utc = dt.timezone.utc
    assert seconds_to_next_month(dt.datetime(2026, 12, 31, 23, 59, 30, tzinfo=utc)) == 30
    assert seconds_to_next_month(dt.datetime(2026, 2, 1, tzinfo=utc)) == 28 * 86400
    assert seconds_to_next_month(dt.datetime(2026, 3, 1, tzinfo=utc)) == 31 * 86400
