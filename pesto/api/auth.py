"""Tokens: generation, hashing, the request guard and per-token rate limits.

Only the SHA-256 of a token is stored; a 256-bit random token needs no salt
or slow hash, and lookup by hash is the constant-time comparison. Nothing
about a token is cached between requests, so a revocation by
`pesto token revoke` (another process) takes effect on the next request.
"""

from __future__ import annotations

import collections
import hashlib
import math
import secrets
import time
from typing import Any

from litestar import Request

from pesto.errors import RateLimited, TokenInvalid, TokenMissing
from pesto.store import Store, Token, utcnow

HEADER = "x-pesto-token"
PREFIX = "pesto_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class RateLimiter:
    """Sliding one-minute window of request times per token, in memory.

    One process serves the API, so memory is the right place; a restart
    forgets the window (at most one extra minute's worth of requests).
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[int, collections.deque[float]] = {}

    def hit(self, token: Token) -> None:
        """Count one request; raises RateLimited (429) when over the token's limit."""
        if token.rate_limit is None:
            return
        now = self._clock()
        window = self._windows.setdefault(token.id, collections.deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= token.rate_limit:
            retry = max(1, math.ceil(window[0] + 60.0 - now))
            raise RateLimited(
                f"this token may make {token.rate_limit} requests per minute; retry in {retry} s",
                retry_after=retry)
        window.append(now)


async def authenticate(store: Store, limiter: RateLimiter, header: str | None) -> Token:
    """The live token for an X-Pesto-Token value, rate limit counted.

    Raises TokenMissing / TokenInvalid (401) or RateLimited (429).
    """
    if not header:
        raise TokenMissing("this route needs the X-Pesto-Token header; "
                           "create a token with `pesto token create --name NAME`")
    token = await store.token_by_hash(hash_token(header.strip()), utcnow()[:7])
    if token is None:
        raise TokenInvalid("the X-Pesto-Token is unknown or revoked")
    limiter.hit(token)
    return token


async def caller(request: Request[Any, Any, Any]) -> Token:
    """The caller's Token; every handler of a route under /api/ that needs one starts here.

    A call rather than a Litestar guard: a guard costs a copy of the route
    handler on every request, and this is the first thing the handler does.
    """
    services = request.app.state.pesto
    return await authenticate(services.store, services.limiter, request.headers.get(HEADER))
