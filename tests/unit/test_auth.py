"""pesto.api.auth without a server: which token a header names, and the 401s whose
messages the original service's SDKs match. A fake store in memory."""

from __future__ import annotations

import asyncio

import pytest

from pesto.api.auth import PREFIX, authenticate, hash_token, new_token
from pesto.domain import Token
from pesto.errors import TokenInvalid, TokenMissing, TokenRevoked


class FakeStore:
    def __init__(self) -> None:
        self.live: dict[str, Token] = {}
        self.revoked: set[str] = set()
        self.months: list[str] = []

    async def token_by_hash(self, token_hash: str, month: str) -> Token | None:
        self.months.append(month)
        return self.live.get(token_hash)

    async def token_revoked(self, token_hash: str) -> bool:
        return token_hash in self.revoked


def test_a_header_names_a_live_token_or_one_of_three_401s() -> None:
    secret, old = new_token(), new_token()
    assert secret.startswith(PREFIX) and secret != old
    store = FakeStore()
    tok = Token(id=1, name="t", created_at="x", last_used_at=None, rate_limit=None,
                monthly_limit=None, max_concurrency=None)
    store.live[hash_token(secret)] = tok
    store.revoked.add(hash_token(old))

    async def run() -> None:
        assert await authenticate(store, secret) is tok
        assert await authenticate(store, f"  {secret}\t") is tok     # spaces around it
        assert len(store.months[0]) == 7                             # "YYYY-MM"
        cases = ((None, TokenMissing, "Token must be supplied"),
                 ("", TokenMissing, "Token must be supplied"),
                 (old, TokenRevoked, "Token has been revoked"),
                 ("pesto_nope", TokenInvalid, "Token not registered"))
        for header, kind, message in cases:
            with pytest.raises(kind) as refused:
                await authenticate(store, header)
            assert refused.value.status_code == 401 and refused.value.message == message
        # A token revoked after it authenticated is refused at once (no cache of tokens).
        del store.live[hash_token(secret)]
        store.revoked.add(hash_token(secret))
        with pytest.raises(TokenRevoked):
            await authenticate(store, secret)

    asyncio.run(run())
