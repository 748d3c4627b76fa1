"""Tokens: generation, hashing, and the authentication declared on the routes that need one.

Only the SHA-256 of a token is stored; a 256-bit random token needs no salt
or slow hash, and lookup by hash is the constant-time comparison. The store
is asked on every request. Its cache of live tokens empties whenever another
process writes (SQLite), or when the database NOTIFYs a write to the tokens
table (PostgreSQL, a moment after the commit; the job's insert checks the
revocation itself), so a revocation by `pesto token revoke` takes effect on
the next request.

A route needs a token by being declared with a hook of this module as its
`before_request` (`require_token` on the router of the /api routes that need
one, `require_piston_token` on Piston's execute route): Litestar runs it
after routing and before the handler reads anything, and the handler finds
the live token as `request.user`. A hook and not a Litestar guard or an
authentication middleware: a guard is handed a copy of the route handler on
every request and a middleware adds two ASGI layers, each costing more than
the whole check. A handler's own `before_request` would replace the
router's, so handlers under that router declare none (tests/api/test_errors.py
checks every route the OpenAPI document secures).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from litestar import Request

from pesto.clock import month_of, utcnow
from pesto.domain import Token
from pesto.errors import TokenInvalid, TokenMissing
from pesto.limits import check_rate, revoked
from pesto.stores import StoreAPI

log = logging.getLogger("pesto.api")

HEADER = "x-pesto-token"
_HEADER_RAW = HEADER.encode()
_AUTHORIZATION_RAW = b"authorization"
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


async def authenticate(store: StoreAPI, header: str | None) -> Token:
    """The live token for an X-Pesto-Token value (its rate is not counted here).

    Raises TokenMissing / TokenInvalid / TokenRevoked (401). The messages are
    the original service's, which its SDKs match exactly.
    """
    if not header:
        raise TokenMissing("Token must be supplied",
                           hint="this route needs the X-Pesto-Token header; "
                                "create a token with `pesto token create --name NAME`")
    value = header.strip()
    digest = _hashes.get(value) or hash_token(value)
    token = await store.token_by_hash(digest, month_of(utcnow()))
    if token is None:
        if await store.token_revoked(digest):
            raise revoked()
        raise TokenInvalid("Token not registered",
                           hint="no token with this value exists on this server")
    if value not in _hashes:
        if len(_hashes) >= _HASHES_MAX:
            _hashes.clear()
        _hashes[value] = digest
    return token


def _header(scope: Any, name: bytes) -> str | None:
    # Straight from the ASGI scope: building Litestar's Headers for one value
    # costs more than this loop over a handful of (name, value) pairs.
    for key, raw in scope["headers"]:
        if key == name:                    # ASGI servers give names in lower case
            return raw.decode("latin-1")
    return None


async def _admitted(request: Request[Any, Any, Any], token: Token) -> None:
    """Make `token` the request's user once its rate allows this request.

    Raises RateLimited (429). The token is put in the scope first, so that the
    error handler counts a refusal under its name.
    """
    request.scope["user"] = token
    await check_rate(request.app.state.pesto.rates, token)


async def require_token(request: Request[Any, Any, Any]) -> None:
    """The `before_request` hook of routes that need an X-Pesto-Token.

    Raises TokenMissing / TokenInvalid / TokenRevoked (401) or RateLimited
    (429). OPTIONS is answered without one: it tells which methods a path
    takes, nothing more, and a browser's preflight never carries a token.
    """
    scope = request.scope
    if scope["method"] == "OPTIONS":
        return
    token = await authenticate(request.app.state.pesto.store, _header(scope, _HEADER_RAW))
    await _admitted(request, token)


async def require_piston_token(request: Request[Any, Any, Any]) -> None:
    """The `before_request` hook of Piston's execute route: the token of X-Pesto-Token
    or `Authorization: [Bearer] <token>`, else the operator's anonymous token
    (`piston_anonymous_token`), if set.

    Raises TokenMissing / TokenInvalid / TokenRevoked (401) or RateLimited (429).
    """
    services = request.app.state.pesto
    scope = request.scope
    value = _header(scope, _HEADER_RAW) or _header(scope, _AUTHORIZATION_RAW)
    if value:
        if value[:7].lower() == "bearer ":
            value = value[7:]
        token = await authenticate(services.store, value)
    else:
        token = await _anonymous(services.store, services.settings.piston_anonymous_token)
    await _admitted(request, token)


async def _anonymous(store: StoreAPI, name: str | None) -> Token:
    """The live token the operator named for anonymous Piston requests.

    Anonymous traffic is one token's traffic: its rate, monthly and
    concurrency limits hold for all of it together.
    """
    if not name:
        raise TokenMissing("Token must be supplied", hint="send the token in the X-Pesto-Token "
                           "or Authorization header; anonymous Piston requests are off")
    digest = await store.live_token_hash(name)
    token = await store.token_by_hash(digest, month_of(utcnow())) if digest else None
    if token is None:
        log.warning("piston_anonymous_token names %r, which is not a live token", name)
        raise TokenInvalid("Token not registered", hint="the server's anonymous token is missing; "
                           "send a token in the X-Pesto-Token or Authorization header")
    return token
