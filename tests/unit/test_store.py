"""The SQLite store against a real SQLite file in a temporary directory (no root,
no sandbox): tokens, jobs, the usage count the monthly quota reads, token
requests, and the purge."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pesto import store as store_module
from pesto.clock import month_of, utcnow
from pesto.domain import Job, JobStatus, RequestStatus
from pesto.errors import ConfigError, QuotaExceeded, RequestRefused
from pesto.limits import check_month
from pesto.store import DB_NAME, MIGRATIONS, Store

MONTH = "2026-11"


def _job(job_id: str, token_id: int, **kw) -> Job:
    values = {"status": JobStatus.RUNNING, "request": "{}",
              "created_at": f"{MONTH}-26T06:55:00.000Z"}
    values.update(kw)
    return Job(id=job_id, token_id=token_id, **values)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def with_store(data_dir: Path, test: Callable[[Store], Awaitable[None]]) -> None:
    async def run() -> None:
        store = await Store.open(data_dir)
        try:
            await test(store)
        finally:
            await store.close()
    asyncio.run(run())


def test_the_data_dir_is_made_private_and_a_shared_one_refused(tmp_path: Path) -> None:
    async def nothing(store: Store) -> None:
        assert store.path == tmp_path / "new" / DB_NAME

    with_store(tmp_path / "new", nothing)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    (shared / "notes.txt").write_text("someone else's")
    with pytest.raises(ConfigError, match="chmod 700"):
        asyncio.run(Store.open(shared))


def test_tokens_names_revocation_and_lookup(data_dir: Path) -> None:
    async def test(store: Store) -> None:
        token = await store.create_token("t", "hash-t", rate_limit=5, monthly_limit=10,
                                         max_concurrency=2)
        assert token is not None and token.name == "t"
        assert (token.rate_limit, token.monthly_limit, token.max_concurrency) == (5, 10, 2)
        # A live name is unique; a revoked one may be used again.
        assert await store.create_token("t", "hash-other") is None
        found = await store.token_by_hash("hash-t", MONTH)
        assert found is not None and found.id == token.id and found.month_executions == 0
        assert await store.live_token_hash("t") == "hash-t"
        assert not await store.token_revoked("hash-t")
        assert await store.revoke_token("t")
        assert not await store.revoke_token("t")
        assert await store.token_by_hash("hash-t", MONTH) is None
        assert await store.token_revoked("hash-t")
        assert not await store.token_revoked("hash-never")
        assert await store.live_token_hash("t") is None
        again = await store.create_token("t", "hash-t2")
        assert again is not None and again.id != token.id
        listed = await store.list_tokens(MONTH)
        assert [(t.name, t.revoked_at is None) for t in listed] == [("t", False), ("t", True)]

    with_store(data_dir, test)


def test_ensure_token_creates_once_and_rotates_a_changed_secret(data_dir: Path) -> None:
    async def test(store: Store) -> None:
        assert await store.ensure_token("admin", "hash-1")
        assert not await store.ensure_token("admin", "hash-1")
        assert await store.ensure_token("admin", "hash-2")        # the operator changed it
        assert await store.token_by_hash("hash-1", MONTH) is None
        assert await store.token_revoked("hash-1")
        assert (await store.token_by_hash("hash-2", MONTH)).name == "admin"

    with_store(data_dir, test)


def test_jobs_belong_to_their_token_and_end_once(data_dir: Path) -> None:
    async def test(store: Store) -> None:
        mine = await store.create_token("mine", "hash-m")
        other = await store.create_token("other", "hash-o")
        await store.insert_job(_job("q", mine.id, status=JobStatus.QUEUED))
        assert await store.get_job("q", other.id) is None        # never another token's job
        assert (await store.get_job("q", mine.id)).status is JobStatus.QUEUED
        assert [(j.id, t.name) for j, t in await store.queued_jobs()] == [("q", "mine")]
        await store.mark_running("q", f"{MONTH}-26T06:55:01.000Z")
        running = await store.get_job("q", mine.id)
        assert (running.status, running.started_at) == (JobStatus.RUNNING,
                                                        f"{MONTH}-26T06:55:01.000Z")
        await store.finish_job("q", JobStatus.COMPLETED, f"{MONTH}-26T06:55:02.000Z",
                               result='{"ok":1}')
        # A finished job is never rewritten (a late cancel, a second record).
        await store.finish_job("q", JobStatus.FAILED, f"{MONTH}-26T06:55:03.000Z", error="{}")
        done = await store.get_job("q", mine.id)
        assert (done.status, done.result, done.error) == (JobStatus.COMPLETED, '{"ok":1}', None)
        assert done.status.finished and not JobStatus.RUNNING.finished
        # What a crash left running is failed at the next start, not run again.
        await store.insert_job(_job("r", mine.id))
        assert [row[:2] for row in await store.running_jobs()] == [("r", mine.id)]
        assert await store.fail_running(f"{MONTH}-26T07:00:00.000Z", '{"code":"INTERRUPTED"}') == 1
        assert (await store.get_job("r", mine.id)).status is JobStatus.FAILED
        assert await store.queued_jobs() == []

    with_store(data_dir, test)


def test_executions_are_counted_per_token_and_month_for_the_quota(data_dir: Path) -> None:
    async def test(store: Store) -> None:
        token = await store.create_token("t", "hash-t", monthly_limit=2)
        other = await store.create_token("u", "hash-u")
        await store.insert_job(_job("a", token.id))
        await store.insert_job(_job("b", other.id))
        await store.insert_job(_job("old", token.id, created_at="2026-10-31T23:59:59.999Z"))
        seen = await store.token_by_hash("hash-t", MONTH)
        assert seen.month_executions == 1
        check_month(seen)                          # one more fits in a limit of 2
        await store.insert_job(_job("c", token.id))
        seen = await store.token_by_hash("hash-t", MONTH)
        assert seen.month_executions == 2
        with pytest.raises(QuotaExceeded):
            check_month(seen)
        assert (await store.token_by_hash("hash-t", "2026-10")).month_executions == 1
        assert (await store.token_by_hash("hash-t", "2026-12")).month_executions == 0
        assert [t.month_executions for t in await store.list_tokens(MONTH)] == [2, 1]

    with_store(data_dir, test)


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


def test_token_requests_refuse_duplicates_and_a_full_queue(data_dir: Path) -> None:
    form = {"purpose": "teaching", "address": "192.0.2.1", "public_key": b"k" * 32}

    async def test(store: Store) -> None:
        first = await store.add_token_request(name="ann", email="ann@example.org",
                                              claim_hash="c1", max_pending=2, **form)
        assert first.status is RequestStatus.PENDING
        with pytest.raises(RequestRefused) as refused:
            await store.add_token_request(name="ann2", email="ann@example.org",
                                          claim_hash="c2", max_pending=2, **form)
        assert refused.value.why == "duplicate"
        await store.add_token_request(name="bob", email="bob@example.org",
                                      claim_hash="c3", max_pending=2, **form)
        with pytest.raises(RequestRefused) as refused:
            await store.add_token_request(name="cy", email="cy@example.org",
                                          claim_hash="c4", max_pending=2, **form)
        assert refused.value.why == "full"
        # The auto mode issues the token in the same transaction.
        issued = await store.add_token_request(
            name="dee", email="dee@example.org", claim_hash="c5", max_pending=2,
            issue=("dee", "hash-dee", {"rate_limit": 3}), **form)
        assert issued.status is RequestStatus.CLAIMED and issued.token_id is not None
        assert (await store.token_by_hash("hash-dee", month_of(utcnow()))).rate_limit == 3
        assert [r.name for r in await store.token_requests(pending_only=True)] == ["ann", "bob"]

    with_store(data_dir, test)


def test_purge_deletes_in_batches(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PURGE_BATCH", 2)
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 3)

    async def test(store: Store) -> None:
        token = await store.create_token("t", "hash-t")
        for i in range(5):
            await store.insert_job(_job(f"old-{i}", token.id, status=JobStatus.COMPLETED,
                                        finished_at="2001-01-01T00:00:00.000Z"))
        await store.insert_job(_job("running", token.id))
        assert await store.purge_finished("2002-01-01T00:00:00.000Z") == 5
        assert await store.get_job("old-0", token.id) is None
        assert (await store.get_job("running", token.id)).status is JobStatus.RUNNING

    with_store(data_dir, test)     # close() waits for a checkpoint in flight


def test_schema_1_migrates_with_usage_and_last_use(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700)
    db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    db.executescript("BEGIN;" + MIGRATIONS[0] + "PRAGMA user_version = 1; COMMIT;")
    db.execute("INSERT INTO tokens (name, hash, created_at) VALUES ('t', 'hash-t', 'x')")
    db.execute("INSERT INTO jobs (id, token_id, status, request, created_at)"
               f" VALUES ('v1', 1, 'queued', '{{}}', '{MONTH}-01T00:00:00.000Z')")
    db.close()

    async def test(store: Store) -> None:
        assert await store.schema_version() == len(MIGRATIONS)
        (token,) = await store.list_tokens(MONTH)
        assert (token.month_executions, token.last_used_at) == (1, f"{MONTH}-01T00:00:00.000Z")
        await store.insert_job(_job("v2", token.id))
        (token,) = await store.list_tokens(MONTH)
        assert (token.month_executions, token.last_used_at) == (2, f"{MONTH}-26T06:55:00.000Z")
        assert (await store.token_by_hash("hash-t", MONTH)).month_executions == 2

    with_store(data_dir, test)
