"""PESTO_ADMIN_TOKEN: a first token without `pesto token create`, stable across restarts."""

from __future__ import annotations

import asyncio

from pesto.api.auth import hash_token
from pesto.store import Store


def test_ensure_token_creates_once_and_rotates(tmp_path):
    async def scenario():
        store = await Store.open(tmp_path / "data")
        try:
            h1, h2 = hash_token("first-secret"), hash_token("second-secret")
            assert await store.ensure_token("admin", h1) is True
            assert await store.ensure_token("admin", h1) is False      # restart: unchanged
            assert await store.ensure_token("admin", h2) is True       # secret rotated
            assert await store.token_by_hash(h1, "2026-11") is None     # old one revoked
            assert await store.token_by_hash(h2, "2026-11") is not None
        finally:
            await store.close()
    asyncio.run(scenario())
