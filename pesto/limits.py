"""A token's limits, decided in one place: may this token make a request, or
submit N jobs, now?

A token may carry three limits (`pesto token create --rate-limit,
--monthly-limit, --max-concurrency`; None is no limit):

- rate: requests per minute, a sliding one-minute window counted on every
  request the token authenticates (`check_rate`, called by pesto.api.auth);
- month: executions per calendar month, UTC (`check_month`, before jobs are
  handed to the scheduler; the store's job insert counts each one);
- concurrency: jobs queued or running at once (`check_concurrency`, asked by
  the scheduler, which holds the count and books a job in the same step, so
  two requests cannot both take the last place).

On many nodes (PostgreSQL) the counts are the database's: the rate window is
`PgStore.rate_hit`, and the month and concurrency are checked again inside
the job's insert (`pesto_submit`), whose verdict `refusal` turns into the
same errors. Every refusal is a 429 with Retry-After, with the messages
docs/api.md fixes; the API's error handler counts it under the token's name
(`pesto_token_refusals_total`).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import Protocol

from pesto.clock import seconds_to_next_month
from pesto.domain import Token
from pesto.errors import PestoError, QuotaExceeded, RateLimited, TokenRevoked, TooManyJobs

WINDOW = 60.0               # seconds of the rate window


class Rates(Protocol):
    """Where request times are counted: `RateWindow` here, `PgStore` on a cluster."""

    async def rate_hit(self, token_id: int, limit: int) -> float:
        """0 after counting one request; else the seconds until the window has room
        (the request is then not counted)."""
        ...


class RateWindow:
    """The sliding one-minute window of request times per token, in this process's memory.

    One process serves the API of a single node, so memory is the right
    place; a restart forgets the window (at most one extra minute's worth of
    requests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[int, collections.deque[float]] = {}

    async def rate_hit(self, token_id: int, limit: int) -> float:
        now = self._clock()
        window = self._windows.setdefault(token_id, collections.deque())
        while window and window[0] <= now - WINDOW:
            window.popleft()
        if len(window) >= limit:
            return window[0] + WINDOW - now
        window.append(now)
        return 0.0


async def check_rate(rates: Rates, token: Token) -> None:
    """Count one request of `token`. Raises RateLimited (429) when its window is full."""
    if token.rate_limit is None:
        return
    wait = await rates.rate_hit(token.id, token.rate_limit)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise RateLimited(
            f"this token may make {token.rate_limit} requests per minute; retry in {retry} s",
            retry_after=retry)


def check_month(token: Token, count: int = 1) -> None:
    """Raise QuotaExceeded (429) unless `token` may run `count` more executions this month.

    `token.month_executions` is the count the store read when the token was
    looked up for this request.
    """
    if token.monthly_limit is not None and token.month_executions + count > token.monthly_limit:
        raise _quota_exceeded(token)


def check_concurrency(token: Token, held: int, count: int, retry_after: int, *,
                      batch: bool = False) -> None:
    """Raise TooManyJobs (429) unless `token`, with `held` jobs queued or running,
    may have `count` more; `retry_after` is the scheduler's guess of a job's run.
    For a `batch` the message says how far over the limit it is."""
    if token.max_concurrency is not None and held + count > token.max_concurrency:
        raise _too_many_jobs(token, retry_after, held if batch else None, count)


def revoked() -> TokenRevoked:
    # docs/api.md fixes the message (the original service's SDKs match it).
    return TokenRevoked("Token has been revoked",
                        hint="an operator revoked this token; ask for a new one")


def refusal(verdict: str, token: Token, retry_after: int) -> PestoError | None:
    """The error for a cluster store's refusal of a job insert ('revoked',
    'concurrency' or 'quota'); None for any other verdict (not the token's)."""
    if verdict == "revoked":            # revoked after this node cached the token
        return revoked()
    if verdict == "concurrency":
        return _too_many_jobs(token, retry_after)
    if verdict == "quota":
        return _quota_exceeded(token)
    return None


def _quota_exceeded(token: Token) -> QuotaExceeded:
    # docs/api.md fixes the message (the original service's SDKs match it).
    return QuotaExceeded(
        "Monthly limit exceeded", retry_after=seconds_to_next_month(),
        hint=f"this token may run {token.monthly_limit} executions per calendar month (UTC)")


def _too_many_jobs(token: Token, retry_after: int, held: int | None = None,
                   count: int = 1) -> TooManyJobs:
    if held is None:
        detail = "; wait for one to finish"
    else:                   # a batch: say how far over it is
        detail = f" ({held} now, {count} more asked)"
    return TooManyJobs(
        f"this token may have {token.max_concurrency} jobs queued or running at once{detail}",
        retry_after=retry_after)
