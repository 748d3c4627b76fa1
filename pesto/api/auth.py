"""Tokens: generation, hashing, the request guard and per-token rate limits.

Only the SHA-256 of a token is stored; a 256-bit random token needs no salt
or slow hash, and lookup by hash is the constant-time comparison. The store
is asked on every request (its own cache of live tokens empties whenever
another process writes), so a revocation by `pesto token revoke` takes
effect on the next request.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import math
import secrets
import time
from typing import Any

from litestar import Request

from pesto.errors import RateLimited, TokenInvalid, TokenMissing, TokenRevoked
from pesto.store import Store, Token, utcnow

HEADER = "x-pesto-token"
_HEADER_RAW = HEADER.encode()
PREFIX = "pesto_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


# The hashes of the token values that authenticated lately (every request
# pays a SHA-256 otherwise). Only values that matched a live token get in,
# so its size is bounded by the tokens in use; a revoked token's entry is
# harmless (the store is asked every time) and goes with the next clearing.
_hashes: dict[str, str] = {}
_HASHES_MAX = 1024


class RateLimiter:
    """Sliding one-minute window of request times per token, in memory.

    One process serves the API, so memory is the right place; a restart
    forgets the window (at most one extra minute's worth of requests).
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[int, collections.deque[float]] = {}

    def hit(self, token: Token) -> None:
        """Count one request; raises RateLimited (429) when over the token's limit.

        (pesto.cluster.SharedRateLimiter returns an awaitable instead.)
        """
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


async def authenticate(store: Store, limiter: RateLimiter, header: str | None, *,
                       scope: dict[str, Any] | None = None) -> Token:
    """The live token for an X-Pesto-Token value, rate limit counted.

    Raises TokenMissing / TokenInvalid / TokenRevoked (401) or RateLimited (429).
    The messages are the original service's, which its SDKs match exactly. With
    the request's ASGI `scope`, notes the token's name there (`pesto_token`) for
    the error handler, which counts a refusal under it.
    """
    if not header:
        raise TokenMissing("Token must be supplied",
                           hint="this route needs the X-Pesto-Token header; "
                                "create a token with `pesto token create --name NAME`")
    value = header.strip()
    digest = _hashes.get(value) or hash_token(value)
    token = await store.token_by_hash(digest, utcnow()[:7])
    if token is None:
        revoked = store.token_revoked(digest)
        if inspect.isawaitable(revoked):    # the PostgreSQL store asks the database
            revoked = await revoked
        if revoked:
            raise TokenRevoked("Token has been revoked",
                               hint="an operator revoked this token; ask for a new one")
        raise TokenInvalid("Token not registered",
                           hint="no token with this value exists on this server")
    if value not in _hashes:
        if len(_hashes) >= _HASHES_MAX:
            _hashes.clear()
        _hashes[value] = digest
    if scope is not None:
        scope["pesto_token"] = token.name
    pending = limiter.hit(token)
    if pending is not None:      # the shared limiter (PostgreSQL) asks the database
        await pending
    return token


async def caller(request: Request[Any, Any, Any]) -> Token:
    """The caller's Token; every handler of a route under /api/ that needs one starts here.

    A call rather than a Litestar guard: a guard costs a copy of the route
    handler on every request, and this is the first thing the handler does.
    """
    services = request.app.state.pesto
    # Straight from the ASGI scope: building Litestar's Headers for one value
    # costs more than this loop over a handful of (name, value) pairs.
    value = None
    for name, raw in request.scope["headers"]:
        if name == _HEADER_RAW:            # ASGI servers give names in lower case
            value = raw.decode("latin-1")
            break
    return await authenticate(services.store, services.limiter, value,
                              scope=request.scope)  # type: ignore[arg-type]
