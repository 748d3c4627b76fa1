"""The PostgreSQL store's held connections (PgStore._on_path), against a real PostgreSQL.

The statements on a job's path (its insert, claim, finish, the read of its
outcome) run on connections the store keeps out of its pool. A connection
lost while held, or left mid-statement by a cancel, must never cost a job
its insert or its finish, nor leave a connection or the store's close hung.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from pesto.clock import utcnow
from pesto.domain import Job, JobStatus
from pesto.pgstore import HELD_CONNECTIONS, PgStore


def _job(token_id: int) -> Job:
    now = utcnow()
    return Job(id=uuid.uuid4().hex, token_id=token_id, status=JobStatus.RUNNING,
               request='{"language": "python", "code": "print(1)"}', created_at=now,
               started_at=now)


async def _store_with_token(url: str) -> tuple[PgStore, int]:
    store = await PgStore.open(url)
    token = await store.create_token("held", "h" * 64)
    assert token is not None
    return store, token.id


async def _run_jobs(store: PgStore, token_id: int, count: int) -> list[str]:
    """Insert and finish `count` jobs, two at a time (so several held connections are used)."""
    async def one() -> str:
        job = _job(token_id)
        assert await store.submit_job(job, "node", None) == "ok"
        await store.finish_job(job.id, JobStatus.COMPLETED, utcnow(), result="{}",
                               announce=False)
        return job.id
    done: list[str] = []
    for _ in range(count // 2):
        done += await asyncio.gather(one(), one())
    return done


def _with_store(postgres: Any, scenario: Any) -> None:
    """`await scenario(store, token_id, admin, database)` on a fresh database: the store
    with one token, and a connection of the test's own; the store must close in 10 s."""
    url = postgres.new_database()

    async def run() -> None:
        store, token_id = await _store_with_token(url)
        admin = await asyncpg.connect(url)
        try:
            await scenario(store, token_id, admin, url.rsplit("/", 1)[1])
        finally:
            await admin.close()
            await asyncio.wait_for(store.close(), 10)
        assert store._pool.is_closing()

    asyncio.run(run())


async def _backends(admin: asyncpg.Connection, database: str) -> list[int]:
    return [row[0] for row in await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid != pg_backend_pid()",
        database)]


def test_connections_lost_while_held_cost_no_statement(postgres: Any) -> None:
    async def scenario(store: PgStore, token_id: int, admin: Any, database: str) -> None:
        await _run_jobs(store, token_id, 20)
        before = {conn.get_server_pid() for conn in store._held}
        assert before                                         # taken, and idle now
        # Every connection of the store ends, as when the server restarts.
        for pid in await _backends(admin, database):
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)                              # the client sees them close
        ids = await _run_jobs(store, token_id, 20)
        statuses = {row[0] for row in await admin.fetch(
            "SELECT status FROM jobs WHERE id = ANY($1::text[])", ids)}
        assert statuses == {"completed"}
        after = {conn.get_server_pid() for conn in store._held}
        assert after and not after & before                   # others were taken
        assert store._held_out <= HELD_CONNECTIONS

    _with_store(postgres, scenario)


def test_a_statement_cancelled_on_a_held_connection_leaves_the_store_working(
        postgres: Any) -> None:
    async def scenario(store: PgStore, token_id: int, admin: Any, database: str) -> None:
        await _run_jobs(store, token_id, 10)
        job = _job(token_id)
        assert await store.submit_job(job, "node", None) == "ok"
        # Another session holds the job's row: the finish waits on its lock, and is
        # cancelled there (as a shutdown cancels a run's last steps).
        locker = await asyncpg.connect(store.url)
        tx = locker.transaction()
        await tx.start()
        await locker.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.id)
        finish = asyncio.create_task(store.finish_job(
            job.id, JobStatus.COMPLETED, utcnow(), result="{}", announce=False))
        await asyncio.sleep(0.3)
        assert not finish.done()
        finish.cancel()
        await asyncio.gather(finish, return_exceptions=True)
        await tx.rollback()
        await locker.close()
        # The store goes on (the cancelled statement may or may not have committed:
        # the cancel request races the lock's release).
        ids = await _run_jobs(store, token_id, 10)
        assert await admin.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND status = 'completed'",
            ids) == 10
        await store.finish_job(job.id, JobStatus.COMPLETED, utcnow(), result="{}",
                               announce=False)
        assert await admin.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == \
            "completed"
        # The store never holds more connections than its pool allows, listener apart.
        assert len(await _backends(admin, database)) <= store._pool.get_max_size()

    _with_store(postgres, scenario)


def test_the_token_caches_forget_on_a_notify_after_their_ttl_and_when_the_listener_reconnects(
        postgres: Any, monkeypatch: Any) -> None:
    """Tokens by hash and anonymous Piston's token by name are cached per node. A
    revocation reaches them by NOTIFY; when that is lost, two bounds remain: the
    cache's lifetime, and the emptying when the listener connects again."""
    import pesto.pgstore
    monkeypatch.setattr(pesto.pgstore, "TOKEN_CACHE_TTL", 0.5)
    month = utcnow()[:7]

    async def scenario(store: PgStore, token_id: int, admin: Any, database: str) -> None:
        await store.listen({})
        # Revocations below are not announced: the trigger is off.
        await admin.execute("ALTER TABLE tokens DISABLE TRIGGER tokens_changed")

        async def revoke_quietly() -> None:
            await admin.execute("UPDATE tokens SET revoked_at = $1 WHERE name = 'held'"
                                " AND revoked_at IS NULL", utcnow())

        assert await store.token_by_hash("h" * 64, month) is not None    # cached now
        assert await store.live_token_hash("held") == "h" * 64
        await revoke_quietly()
        assert await store.token_by_hash("h" * 64, month) is not None    # still trusted
        assert await store.live_token_hash("held") == "h" * 64
        await asyncio.sleep(0.7)                                         # past the TTL
        assert await store.token_by_hash("h" * 64, month) is None
        assert await store.live_token_hash("held") is None

        await admin.execute("INSERT INTO tokens (name, hash, created_at)"
                            " VALUES ('held', $1, $2)", "g" * 64, utcnow())
        assert await store.token_by_hash("g" * 64, month) is not None    # cached now
        assert await store.live_token_hash("held") == "g" * 64
        await revoke_quietly()
        await store.listen({})                                           # reconnects
        assert await store.token_by_hash("g" * 64, month) is None
        assert await store.live_token_hash("held") is None

        # Announced (the trigger on): the cache empties when the NOTIFY arrives.
        await admin.execute("ALTER TABLE tokens ENABLE TRIGGER tokens_changed")
        await admin.execute("INSERT INTO tokens (name, hash, created_at)"
                            " VALUES ('held', $1, $2)", "f" * 64, utcnow())
        await asyncio.sleep(0.2)
        assert await store.live_token_hash("held") == "f" * 64           # cached now
        await admin.execute("UPDATE tokens SET revoked_at = $1 WHERE name = 'held'"
                            " AND revoked_at IS NULL", utcnow())
        for _ in range(20):
            if await store.live_token_hash("held") is None:
                break
            await asyncio.sleep(0.01)
        assert await store.live_token_hash("held") is None     # in 0.2 s: before the TTL

    _with_store(postgres, scenario)


def test_one_tokens_concurrent_inserts_are_all_counted_and_its_quota_holds(
        postgres: Any) -> None:
    """A token's executions are counted in shards (migration 4), so that its concurrent
    inserts do not queue behind one row's lock: every one is still counted, once, and a
    monthly quota still admits exactly its limit."""
    month = utcnow()[:7]

    async def scenario(store: PgStore, token_id: int, admin: Any, database: str) -> None:
        conns = [await asyncpg.connect(store.url) for _ in range(8)]

        async def client(conn: Any, token: int, count: int) -> list[str]:
            verdicts = []
            for _ in range(count):
                job = _job(token)
                verdicts.append(await conn.fetchval(
                    "SELECT pesto_submit($1, $2, $3, $4, $5, $6, $7)", job.id, token,
                    "running", job.request, job.created_at, "node", None))
            return verdicts

        try:
            verdicts = await asyncio.gather(*(client(c, token_id, 25) for c in conns))
            assert {v for vs in verdicts for v in vs} == {"ok"}
            token = await store.token_by_hash("h" * 64, month)
            assert token is not None and token.month_executions == 200
            listed = [t for t in await store.list_tokens(month) if t.id == token_id]
            assert listed[0].month_executions == 200
            assert await admin.fetchval("SELECT count(*) FROM usage WHERE token_id = $1",
                                        token_id) > 1                   # spread over rows
            # A quota of 10, asked for by 8 clients at once, twice each.
            quota = await store.create_token("quota", "q" * 64, monthly_limit=10)
            assert quota is not None
            verdicts = await asyncio.gather(*(client(c, quota.id, 2) for c in conns))
            flat = [v for vs in verdicts for v in vs]
            assert flat.count("ok") == 10 and flat.count("quota") == 6, flat
            assert (await store.token_by_hash("q" * 64, month)).month_executions == 10
        finally:
            for conn in conns:
                await conn.close()

    _with_store(postgres, scenario)


def test_migration_4_keeps_the_counts_of_a_schema_3_database(postgres: Any,
                                                              monkeypatch: Any) -> None:
    import pesto.pgstore
    url = postgres.new_database()      # migrated to the current schema: start over at 3
    month = utcnow()[:7]

    async def run() -> None:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            monkeypatch.setattr(pesto.pgstore, "MIGRATIONS", pesto.pgstore.MIGRATIONS[:3])
            store, token_id = await _store_with_token(url)
            for _ in range(3):
                job = _job(token_id)
                assert await store.submit_job(job, "node", None) == "ok"
            await store.close()
            assert await admin.fetchval("SELECT max(version) FROM pesto_schema") == 3
            monkeypatch.undo()
            store = await PgStore.open(url)
            try:
                assert await store.schema_version() == 4
                assert (await store.token_by_hash("h" * 64, month)).month_executions == 3
                job = _job(token_id)
                assert await store.submit_job(job, "node", None) == "ok"
                assert (await store.token_by_hash("h" * 64, month)).month_executions == 4
            finally:
                await store.close()
        finally:
            await admin.close()

    asyncio.run(run())
