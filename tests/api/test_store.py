"""The store's loop-thread connection: token cache, usage counts, batched purge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pesto import store as store_module
from pesto.store import Job, JobStatus, Store

MONTH = "2026-11"


def _job(job_id: str, token_id: int, **kw) -> Job:
    values = {"status": JobStatus.RUNNING, "request": "{}",
              "created_at": f"{MONTH}-26T06:55:00.000Z"}
    values.update(kw)
    return Job(id=job_id, token_id=token_id, **values)


def test_token_lookup_sees_other_connections_and_counts_exactly(data_dir: Path) -> None:
    async def run() -> None:
        ours = await Store.open(data_dir)
        other = await Store.open(data_dir)            # a `pesto token ...` command
        try:
            token = await other.create_token("t", "hash-t", monthly_limit=10)
            assert token is not None
            assert (await ours.token_by_hash("hash-t", MONTH)).month_executions == 0
            for i in range(3):                        # our own inserts keep the count
                await ours.insert_job(_job(f"ours-{i}", token.id))
            assert (await ours.token_by_hash("hash-t", MONTH)).month_executions == 3
            await other.insert_job(_job("theirs", token.id))
            seen = await ours.token_by_hash("hash-t", MONTH)
            assert seen.month_executions == 4
            assert seen.last_used_at == f"{MONTH}-26T06:55:00.000Z"
            assert (await ours.token_by_hash("hash-t", "2026-12")).month_executions == 0
            assert await ours.token_by_hash("hash-nope", MONTH) is None
            assert await other.revoke_token("t")
            assert await ours.token_by_hash("hash-t", MONTH) is None
            assert (await other.list_tokens(MONTH))[0].month_executions == 4
        finally:
            await ours.close()
            await other.close()

    asyncio.run(run())


def test_purge_deletes_in_batches(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PURGE_BATCH", 2)
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 3)

    async def run() -> None:
        store = await Store.open(data_dir)
        try:
            token = await store.create_token("t", "hash-t")
            for i in range(5):
                await store.insert_job(_job(f"old-{i}", token.id, status=JobStatus.COMPLETED,
                                            finished_at="2001-01-01T00:00:00.000Z"))
            await store.insert_job(_job("running", token.id))
            assert await store.purge_finished("2002-01-01T00:00:00.000Z") == 5
            assert await store.get_job("old-0", token.id) is None
            assert (await store.get_job("running", token.id)).status is JobStatus.RUNNING
        finally:
            await store.close()                       # waits for a checkpoint in flight

    asyncio.run(run())


def test_schema_1_migrates_with_usage_and_last_use(data_dir: Path) -> None:
    import sqlite3

    from pesto.store import DB_NAME, MIGRATIONS

    data_dir.mkdir(mode=0o700)
    db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    db.executescript("BEGIN;" + MIGRATIONS[0] + "PRAGMA user_version = 1; COMMIT;")
    db.execute("INSERT INTO tokens (name, hash, created_at) VALUES ('t', 'hash-t', 'x')")
    db.execute("INSERT INTO jobs (id, token_id, status, request, created_at)"
               f" VALUES ('v1', 1, 'queued', '{{}}', '{MONTH}-01T00:00:00.000Z')")
    db.close()

    async def run() -> None:
        store = await Store.open(data_dir)
        try:
            assert await store.schema_version() == len(MIGRATIONS)
            (token,) = await store.list_tokens(MONTH)
            assert (token.month_executions, token.last_used_at) == (1, f"{MONTH}-01T00:00:00.000Z")
            await store.insert_job(_job("v2", token.id))
            (token,) = await store.list_tokens(MONTH)
            assert (token.month_executions, token.last_used_at) == (2, f"{MONTH}-26T06:55:00.000Z")
            assert (await store.token_by_hash("hash-t", MONTH)).month_executions == 2
        finally:
            await store.close()

    asyncio.run(run())
