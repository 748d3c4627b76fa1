"""The PostgreSQL store: the same records and methods as `pesto.store.Store`,
for many Pesto nodes sharing one database (docs/cluster.md).

Every SQL statement of the PostgreSQL backend lives in this file. The driver
is asyncpg (a connection pool for statements, one more connection that only
LISTENs). Timestamps of jobs and tokens are the same ISO 8601 text as in
SQLite, so callers see identical records; node heartbeats and rate-limit
hits use the database's own clock (`now()`, `clock_timestamp()`), the one
clock every node agrees on.

What the SQLite store does in the process, this one does in the database,
so that it holds across nodes:
- the queue: `claim` takes queued jobs with `FOR UPDATE SKIP LOCKED`, so two
  nodes never take the same job;
- wake-ups: a queued insert NOTIFYs `pesto_queue`, a finish another node may
  wait for NOTIFYs `pesto_done` (payload: the job id), a cancel of a job
  running elsewhere NOTIFYs `pesto_cancel`, a write to the tokens table
  NOTIFYs `pesto_tokens` (a trigger; it empties every node's token cache);
  NOTIFY is sent at commit, so a listener that hears it reads the committed
  row;
- token limits: `pesto_submit` refuses a revoked token's job and checks a
  limited token's concurrency and monthly quota under a lock of its row, and
  `pesto_rate_hit` keeps the sliding one-minute window of each rate-limited
  token in `rate_hits`;
- nodes: each node upserts its heartbeat; `reap` fails the running jobs of
  nodes whose heartbeat is older than the lease (never re-runs them).

Migrations are numbered like SQLite's and applied at start under an advisory
lock, so several nodes starting at once apply each one exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import asyncpg

from pesto.clock import utcnow
from pesto.domain import Delivery, Job, JobStatus, RequestStatus, Token, TokenRequest
from pesto.errors import RequestRefused

log = logging.getLogger("pesto.store")

PURGE_BATCH = 500
MIGRATE_LOCK = 0x7065_7374    # "pest": the advisory lock key held while migrating

# Each entry moves the schema from version i to i+1. Never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tokens (
        id              bigserial PRIMARY KEY,
        name            text NOT NULL,
        hash            text NOT NULL UNIQUE,
        created_at      text NOT NULL,
        last_used_at    text,
        rate_limit      integer,
        monthly_limit   integer,
        max_concurrency integer,
        revoked_at      text
    );
    CREATE UNIQUE INDEX tokens_live_name ON tokens(name) WHERE revoked_at IS NULL;

    CREATE TABLE nodes (
        id           text PRIMARY KEY,
        name         text NOT NULL,
        workers      integer NOT NULL,
        running      integer NOT NULL DEFAULT 0,
        started_at   timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE jobs (
        id          text PRIMARY KEY,
        seq         bigserial NOT NULL,          -- queue order, independent of node clocks
        token_id    bigint NOT NULL REFERENCES tokens(id),
        status      text NOT NULL,
        request     text NOT NULL,
        result      text,
        error       text,
        created_at  text NOT NULL,
        started_at  text,
        finished_at text,
        node_id     text                         -- the node running it
    );
    CREATE INDEX jobs_queued ON jobs(seq) WHERE status = 'queued';
    CREATE INDEX jobs_running ON jobs(node_id) WHERE status = 'running';
    CREATE INDEX jobs_unfinished_token ON jobs(token_id) WHERE status IN ('queued', 'running');
    CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;

    CREATE TABLE usage (
        token_id     bigint NOT NULL REFERENCES tokens(id),
        month        text NOT NULL,
        executions   integer NOT NULL DEFAULT 0,
        last_used_at text,
        PRIMARY KEY (token_id, month)
    );

    CREATE TABLE rate_hits (
        token_id bigint NOT NULL,
        at       timestamptz NOT NULL
    );
    CREATE INDEX rate_hits_token ON rate_hits(token_id, at);

    -- One round trip per submit. A token with a concurrency or monthly limit
    -- is locked (its row) while its jobs are counted and the new one is
    -- inserted, so two nodes cannot both admit the last allowed job.
    CREATE FUNCTION pesto_submit(p_id text, p_token bigint, p_status text, p_request text,
                                 p_created text, p_node text, p_queue_limit integer)
    RETURNS text LANGUAGE plpgsql AS $$
    DECLARE
        t tokens%ROWTYPE;
        n integer;
    BEGIN
        SELECT * INTO t FROM tokens WHERE id = p_token;
        IF t.max_concurrency IS NOT NULL OR t.monthly_limit IS NOT NULL THEN
            PERFORM 1 FROM tokens WHERE id = p_token FOR UPDATE;
            IF t.max_concurrency IS NOT NULL THEN
                SELECT count(*) INTO n FROM jobs
                    WHERE token_id = p_token AND status IN ('queued', 'running');
                IF n >= t.max_concurrency THEN RETURN 'concurrency'; END IF;
            END IF;
            IF t.monthly_limit IS NOT NULL THEN
                SELECT coalesce(max(executions), 0) INTO n FROM usage
                    WHERE token_id = p_token AND month = substr(p_created, 1, 7);
                IF n >= t.monthly_limit THEN RETURN 'quota'; END IF;
            END IF;
        END IF;
        IF p_status = 'queued' AND p_queue_limit IS NOT NULL THEN
            SELECT count(*) INTO n FROM jobs WHERE status = 'queued';
            IF n >= p_queue_limit THEN RETURN 'full'; END IF;
        END IF;
        INSERT INTO jobs (id, token_id, status, request, created_at, started_at, node_id)
            VALUES (p_id, p_token, p_status, p_request, p_created,
                    CASE WHEN p_status = 'running' THEN p_created END,
                    CASE WHEN p_status = 'running' THEN p_node END);
        INSERT INTO usage (token_id, month, executions, last_used_at)
            VALUES (p_token, substr(p_created, 1, 7), 1, p_created)
            ON CONFLICT (token_id, month) DO UPDATE
            SET executions = usage.executions + 1, last_used_at = excluded.last_used_at;
        IF p_status = 'queued' THEN
            PERFORM pg_notify('pesto_queue', '');
        END IF;
        RETURN 'ok';
    END $$;

    -- A sliding one-minute window per token, on the database's clock. The
    -- advisory lock serializes the hits of one token across nodes. Returns 0
    -- when the hit counts, else the seconds until the oldest hit leaves.
    CREATE FUNCTION pesto_rate_hit(p_token bigint, p_limit integer)
    RETURNS double precision LANGUAGE plpgsql AS $$
    DECLARE
        n integer;
        oldest timestamptz;
    BEGIN
        PERFORM pg_advisory_xact_lock(1885697396, p_token::integer);
        DELETE FROM rate_hits
            WHERE token_id = p_token AND at <= clock_timestamp() - interval '60 seconds';
        SELECT count(*), min(at) INTO n, oldest FROM rate_hits WHERE token_id = p_token;
        IF n >= p_limit THEN
            RETURN greatest(0.001, extract(epoch FROM oldest + interval '60 seconds'
                                                       - clock_timestamp()));
        END IF;
        INSERT INTO rate_hits (token_id, at) VALUES (p_token, clock_timestamp());
        RETURN 0;
    END $$;
    """,
    # 2: what the SQLite store's migration 3 of each feature added: signed webhooks
    # (a callback secret per token, one row per delivery) and token requests from the
    # page at / (pesto/api/front.py).
    """
    ALTER TABLE tokens ADD COLUMN callback_secret text
        DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    CREATE TABLE deliveries (
        id              bigserial PRIMARY KEY,
        job_id          text NOT NULL,
        token_id        bigint NOT NULL REFERENCES tokens(id),
        url             text NOT NULL,
        payload         text NOT NULL,
        status          text NOT NULL DEFAULT 'pending',   -- pending, delivered, failed
        attempts        integer NOT NULL DEFAULT 0,
        created_at      double precision NOT NULL,         -- Unix time
        next_attempt_at double precision NOT NULL,
        finished_at     double precision,
        last_error      text
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_job ON deliveries(job_id);

    CREATE TABLE token_requests (
        id          bigserial PRIMARY KEY,
        name        text NOT NULL,
        email       text NOT NULL,
        purpose     text NOT NULL,
        address     text NOT NULL,
        claim_hash  text NOT NULL UNIQUE,
        public_key  bytea NOT NULL,
        status      text NOT NULL,
        created_at  text NOT NULL,
        decided_at  text,
        reason      text,
        token_id    bigint REFERENCES tokens(id),
        sealed      bytea,
        claimed_at  text
    );
    CREATE UNIQUE INDEX token_requests_email ON token_requests(email) WHERE status != 'rejected';
    CREATE INDEX token_requests_pending ON token_requests(status) WHERE status = 'pending';
    """,
    # 3: every write to tokens (a revoke, a new token, a new callback secret, from any
    # node or `pesto token` anywhere) NOTIFYs pesto_tokens at its commit: each node's
    # cache of live tokens (PgStore.token_by_hash) empties when it hears it.
    """
    CREATE FUNCTION pesto_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('pesto_tokens', '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokens
        FOR EACH STATEMENT EXECUTE FUNCTION pesto_tokens_changed();

    -- pesto_submit, and a revoked token's job is refused ('revoked'): a node's cached
    -- token may not have heard of its revocation yet; its insert has. Migration 1's
    -- function stays as it is, renamed, behind this check.
    ALTER FUNCTION pesto_submit(text, bigint, text, text, text, text, integer)
        RENAME TO pesto_submit_admitted;
    CREATE FUNCTION pesto_submit(p_id text, p_token bigint, p_status text, p_request text,
                                 p_created text, p_node text, p_queue_limit integer)
    RETURNS text LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM tokens WHERE id = p_token AND revoked_at IS NOT NULL) THEN
            RETURN 'revoked';
        END IF;
        RETURN pesto_submit_admitted(p_id, p_token, p_status, p_request, p_created, p_node,
                                     p_queue_limit);
    END $$;
    """,
    # 4: a token's executions in a month are counted in up to 16 rows (`shard`: the row
    # its job id hashes to), summed where read. With one row, every insert of a token
    # updated the same row, which stays locked until the insert's commit: concurrent
    # inserts of one token (a platform sending every job with its one token), from any
    # node, each waited for the one before to be committed. Measured with durable
    # commits (PostgreSQL's defaults), 8 clients: 1,444 inserts/s of one token against
    # 3,121 of 8 tokens before; 2,529 against 2,801 after.
    # pesto_submit_admitted is migration 1's, with those two changes (marked).
    """
    ALTER TABLE usage ADD COLUMN shard smallint NOT NULL DEFAULT 0;
    ALTER TABLE usage DROP CONSTRAINT usage_pkey;
    ALTER TABLE usage ADD PRIMARY KEY (token_id, month, shard);

    CREATE OR REPLACE FUNCTION pesto_submit_admitted(
        p_id text, p_token bigint, p_status text, p_request text, p_created text,
        p_node text, p_queue_limit integer)
    RETURNS text LANGUAGE plpgsql AS $$
    DECLARE
        t tokens%ROWTYPE;
        n integer;
        p_month text := substr(p_created, 1, 7);
    BEGIN
        SELECT * INTO t FROM tokens WHERE id = p_token;
        IF t.max_concurrency IS NOT NULL OR t.monthly_limit IS NOT NULL THEN
            PERFORM 1 FROM tokens WHERE id = p_token FOR UPDATE;
            IF t.max_concurrency IS NOT NULL THEN
                SELECT count(*) INTO n FROM jobs
                    WHERE token_id = p_token AND status IN ('queued', 'running');
                IF n >= t.max_concurrency THEN RETURN 'concurrency'; END IF;
            END IF;
            IF t.monthly_limit IS NOT NULL THEN
                -- changed: the sum of the shards
                SELECT coalesce(sum(executions), 0) INTO n FROM usage
                    WHERE token_id = p_token AND month = p_month;
                IF n >= t.monthly_limit THEN RETURN 'quota'; END IF;
            END IF;
        END IF;
        IF p_status = 'queued' AND p_queue_limit IS NOT NULL THEN
            SELECT count(*) INTO n FROM jobs WHERE status = 'queued';
            IF n >= p_queue_limit THEN RETURN 'full'; END IF;
        END IF;
        INSERT INTO jobs (id, token_id, status, request, created_at, started_at, node_id)
            VALUES (p_id, p_token, p_status, p_request, p_created,
                    CASE WHEN p_status = 'running' THEN p_created END,
                    CASE WHEN p_status = 'running' THEN p_node END);
        -- changed: the job's shard
        INSERT INTO usage AS u (token_id, month, shard, executions, last_used_at)
            VALUES (p_token, p_month, hashtext(p_id) & 15, 1, p_created)
            ON CONFLICT (token_id, month, shard) DO UPDATE
            SET executions = u.executions + 1, last_used_at = excluded.last_used_at;
        IF p_status = 'queued' THEN
            PERFORM pg_notify('pesto_queue', '');
        END IF;
        RETURN 'ok';
    END $$;
    """,
)

_TOKEN_COLUMNS = ("t.id, t.name, t.created_at, coalesce((SELECT max(l.last_used_at) FROM usage l"
                  " WHERE l.token_id = t.id), t.last_used_at), t.rate_limit, t.monthly_limit,"
                  " t.max_concurrency, t.revoked_at")
# A token's executions in the month $1 (migration 4: the sum of its shards).
_MONTH_EXECUTIONS = ("coalesce((SELECT sum(u.executions) FROM usage u"
                     " WHERE u.token_id = t.id AND u.month = $1), 0)")
_JOB_COLUMNS = "id, token_id, status, request, created_at, started_at, finished_at, result, error"
_DELIVERY_COLUMNS = ("id, job_id, token_id, url, payload, status, attempts, created_at,"
                     " next_attempt_at, last_error")
_REQUEST_COLUMNS = ("id, name, email, purpose, address, status, created_at, decided_at, reason,"
                    " token_id, claimed_at")
DELIVERY_LEASE = 120      # seconds a node holds a due webhook delivery while it sends it
TOKEN_CACHE_TTL = 5.0     # seconds a cached token is trusted without a word from pesto_tokens
TOKEN_CACHE_MAX = 1024    # cached tokens; the cache empties when full (tokens in use are few)
# Pool connections held out of the pool for the statements on a job's path (`_on_path`).
HELD_CONNECTIONS = 3


def _job(row: Any) -> Job:
    return Job(id=row[0], token_id=row[1], status=JobStatus(row[2]), request=row[3],
               created_at=row[4], started_at=row[5], finished_at=row[6], result=row[7],
               error=row[8])


def _token_request(row: Any) -> TokenRequest:
    return TokenRequest(row[0], row[1], row[2], row[3], row[4], RequestStatus(row[5]), *row[6:])


async def _migrate(conn: asyncpg.Connection) -> None:
    # Session-level advisory lock: a second node starting now waits here and
    # then finds the schema already current.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS pesto_schema (version integer NOT NULL)")
        version = await conn.fetchval("SELECT max(version) FROM pesto_schema") or 0
        if version > len(MIGRATIONS):
            raise RuntimeError(f"the database has schema version {version}, newer than this "
                               f"Pesto ({len(MIGRATIONS)}); upgrade Pesto")
        for number in range(version, len(MIGRATIONS)):
            async with conn.transaction():
                await conn.execute(MIGRATIONS[number])
                await conn.execute("INSERT INTO pesto_schema (version) VALUES ($1)", number + 1)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing to undo (PgStore.open says why)."""


def _open(conn: Any) -> bool:
    """Whether a connection held out of the pool can still be used."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:       # it closed, and the pool took it back
        return False


def safe_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs and `pesto doctor`."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}"


class PgStore:
    """Async access to a PostgreSQL database. Open with `await PgStore.open(url)`."""

    cluster = True      # the scheduler shares the queue through this store

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self.url = url
        self.path = safe_url(url)       # what logs print where SQLite prints its file
        self._listener: asyncpg.Connection | None = None
        self._callbacks: dict[str, Callable[[str], None]] = {}
        # Live tokens by hash, with the monotonic time each stops being trusted; kept
        # only while the listener is up (token_by_hash). `_tokens_seen` counts the
        # emptyings: a read that began before one is not cached.
        self._tokens: dict[str, tuple[float, Token]] = {}
        self._tokens_month = ""
        self._tokens_seen = 0
        self._token_names: dict[str, tuple[float, str]] = {}     # live_token_hash's, the same way
        # Connections taken from the pool once and kept (`_on_path`): idle ones, and
        # how many are out of the pool (idle, in use, or being taken).
        self._held: list[Any] = []
        self._held_out = 0
        self._held_tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @classmethod
    async def open(cls, url: str) -> "PgStore":
        """Connect, migrate (once across nodes), return the store.

        Raises OSError / asyncpg errors when the database cannot be reached,
        RuntimeError when its schema is newer than this code.
        """
        # The migration holds a session-level advisory lock: on a connection of its
        # own, closed after, so no session state can reach the pool (below).
        conn = await asyncpg.connect(url)
        try:
            await _migrate(conn)
        finally:
            await conn.close()
        # reset=_keep_session: asyncpg's default sends a reset query (unlock advisory
        # locks, CLOSE ALL, UNLISTEN *, RESET ALL) each time a connection goes back
        # to the pool, one more round trip after every statement. No statement made
        # on the pool leaves session state behind (no SET, LISTEN, cursor or session
        # lock: the listener has its own connection, the migration above too), and
        # asyncpg still rolls back a transaction left open before calling it.
        pool = await asyncpg.create_pool(url, min_size=1, max_size=10,
                                         command_timeout=60, reset=_keep_session)
        return cls(pool, url)

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        for task in list(self._held_tasks):
            task.cancel()
        await asyncio.gather(*self._held_tasks, return_exceptions=True)
        held, self._held = self._held, []
        for conn in held:
            await self._pool.release(conn)
        await self._pool.close()

    # --- the statements on a job's path ------------------------------------------

    async def _on_path(self, method: str, query: str, *args: Any) -> Any:
        """Run one statement of a job's path (its insert, claim, finish, the read of
        its outcome elsewhere) on a connection this store holds, else on the pool.

        Why: the pool's acquire and release cost more than the statement's own
        client side (measured: a `SELECT 1` after 5 ms idle took 0.80 ms through
        the pool, 0.56 ms on a connection, and 0.31 against 0.20 ms of CPU).
        The held connections are still the pool's (it opened them and closes
        them in `close`); only the hand-out per statement is skipped.
        """
        while self._held and not _open(self._held[-1]):
            # Lost while idle (the server restarted, an administrator ended it): the
            # pool took it back; another is taken below.
            self._held_out -= 1
            self._held.pop()
        if not self._held:
            self._take_held()
            return await getattr(self._pool, method)(query, *args)
        conn = self._held.pop()
        try:
            result = await getattr(conn, method)(query, *args)
        except BaseException:
            # Failed or cancelled mid-statement: the connection may be mid-protocol or
            # gone, so it goes back to the pool, which waits out a cancellation or
            # closes it (a new one is taken on a later statement). Not awaited here:
            # a cancelled task must not wait.
            self._held_out -= 1
            self._background(self._pool.release(conn))
            raise
        if self._closing:            # `close` gave back the idle ones: this one goes too
            self._held_out -= 1
            await self._pool.release(conn)
        else:
            self._held.append(conn)
        return result

    def _take_held(self) -> None:
        """Take one more connection from the pool to hold, if fewer than HELD_CONNECTIONS are."""
        if self._held_out >= HELD_CONNECTIONS or self._closing:
            return
        self._held_out += 1

        async def take() -> None:
            try:
                conn = await self._pool.acquire()
            except BaseException:
                self._held_out -= 1
                raise
            if self._closing:
                self._held_out -= 1
                await self._pool.release(conn)
            else:
                self._held.append(conn)
        self._background(take())

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._held_tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._held_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("PostgreSQL: a held connection: %s", task.exception())

    async def schema_version(self) -> int:
        return await self._pool.fetchval("SELECT max(version) FROM pesto_schema") or 0

    # --- notifications ----------------------------------------------------------

    async def listen(self, callbacks: dict[str, Callable[[str], None]]) -> None:
        """LISTEN on the channels, calling `callbacks[channel](payload)` on the loop.

        Call again after `listening` turns False (the connection was lost) to
        reconnect; notifications sent meanwhile are lost, which is why the
        scheduler also polls slowly.
        """
        self._callbacks = callbacks
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        self._listener = await asyncpg.connect(self.url)
        for channel in callbacks:
            await self._listener.add_listener(channel, self._notified)
        await self._listener.add_listener("pesto_tokens", self._tokens_changed)
        # A token written while no one listened was not heard: forget them all.
        self._tokens_changed()

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        callback = self._callbacks.get(channel)
        if callback is not None:
            callback(payload)

    def _tokens_changed(self, *_args: Any) -> None:
        self._tokens.clear()
        self._token_names.clear()
        self._tokens_seen += 1

    async def notify_cancel(self, job_id: str) -> None:
        await self._pool.execute("SELECT pg_notify('pesto_cancel', $1)", job_id)

    # --- nodes ------------------------------------------------------------------

    async def heartbeat(self, node_id: str, name: str, workers: int, running: int) -> None:
        await self._pool.execute(
            "INSERT INTO nodes (id, name, workers, running) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), running = excluded.running,"
            " workers = excluded.workers", node_id, name, workers, running)

    async def leave(self, node_id: str) -> None:
        """A node's clean exit: its row goes (its jobs were recorded before)."""
        await self._pool.execute("DELETE FROM nodes WHERE id = $1", node_id)

    async def nodes(self, lease: float) -> list[dict[str, Any]]:
        """Nodes whose heartbeat is within the lease, oldest first."""
        rows = await self._pool.fetch(
            "SELECT id, name, workers, running, started_at, extract(epoch FROM now() - heartbeat_at)"
            " FROM nodes WHERE heartbeat_at >= now() - make_interval(secs => $1)"
            " ORDER BY started_at", lease)
        return [{"id": r[0], "name": r[1], "workers": r[2], "running": r[3],
                 "startedAt": r[4].isoformat(), "heartbeatAge": float(r[5])} for r in rows]

    async def reap(self, lease: float, finished_at: str,
                   error: str) -> list[tuple[str, int, str]]:
        """Fail the running jobs of nodes silent for longer than `lease`; their
        (id, token id, request).

        The dead nodes' rows go in the same statement. A job running on a
        node that has no row at all (it was reaped before) is failed too.
        Each failed job is NOTIFYed on `pesto_done`.
        """
        rows = await self._pool.fetch(
            "WITH dead AS (DELETE FROM nodes"
            "   WHERE heartbeat_at < now() - make_interval(secs => $1) RETURNING id),"
            " failed AS (UPDATE jobs SET status = 'failed', finished_at = $2, error = $3"
            "   WHERE status = 'running' AND (node_id IN (SELECT id FROM dead)"
            "     OR node_id IS NULL"
            "     OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = jobs.node_id))"
            "   RETURNING id, token_id, request)"
            " SELECT id, token_id, request, pg_notify('pesto_done', id) FROM failed",
            lease, finished_at, error)
        return [(row[0], row[1], row[2]) for row in rows]

    # --- tokens -----------------------------------------------------------------

    async def create_token(self, name: str, token_hash: str, *, rate_limit: int | None = None,
                           monthly_limit: int | None = None,
                           max_concurrency: int | None = None) -> Token | None:
        """Insert a token; None when a live token already has this name."""
        now = utcnow()
        try:
            token_id = await self._pool.fetchval(
                "INSERT INTO tokens (name, hash, created_at, rate_limit, monthly_limit,"
                " max_concurrency) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                name, token_hash, now, rate_limit, monthly_limit, max_concurrency)
        except asyncpg.UniqueViolationError:
            return None
        return Token(id=token_id, name=name, created_at=now, last_used_at=None,
                     rate_limit=rate_limit, monthly_limit=monthly_limit,
                     max_concurrency=max_concurrency)

    async def ensure_token(self, name: str, token_hash: str) -> bool:
        """Make `name` the live token with this hash; True when one was created.

        Several nodes start with the same PESTO_ADMIN_TOKEN: the transaction
        holds an advisory lock so exactly one of them creates it.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK + 1)
            if await conn.fetchval("SELECT 1 FROM tokens WHERE hash = $1 AND revoked_at IS NULL",
                                   token_hash):
                return False
            now = utcnow()
            await conn.execute("UPDATE tokens SET revoked_at = $1 WHERE name = $2"
                               " AND revoked_at IS NULL", now, name)
            await conn.execute("INSERT INTO tokens (name, hash, created_at) VALUES ($1, $2, $3)",
                               name, token_hash, now)
            return True

    async def token_by_hash(self, token_hash: str, month: str) -> Token | None:
        """The live token with this hash and its executions in `month`.

        Asked on every request, so a token is cached while this store listens
        (a node; `pesto token` commands read every time). Every write to the
        tokens table NOTIFYs pesto_tokens at its commit (migration 3's
        trigger), which empties the cache: a revocation anywhere counts on
        every node once its notification arrives, a moment after the commit.
        `TOKEN_CACHE_TTL` bounds how long an entry lives should a notification
        be lost without the connection being seen to drop.

        A token with a monthly limit is read every time: its month count must
        count the other nodes' executions (`limits.check_month`; the job's
        insert checks the quota again in the database). For other tokens the
        cached count is not used for any decision.
        """
        now = time.monotonic()
        cached = self._cached(self._tokens, token_hash, now) \
            if month == self._tokens_month else None
        if cached is not None:
            return cached
        seen = self._tokens_seen
        row = await self._pool.fetchrow(
            f"SELECT {_TOKEN_COLUMNS}, {_MONTH_EXECUTIONS} FROM tokens t"
            " WHERE t.hash = $2 AND t.revoked_at IS NULL", month, token_hash)
        if row is None:
            return None              # unknown tokens are not cached: they are not bounded
        token = Token(*row)
        if token.monthly_limit is None:
            if month != self._tokens_month:
                self._tokens.clear()
                self._tokens_month = month
            self._keep(self._tokens, token_hash, token, now, seen)
        return token

    @staticmethod
    def _cached(cache: dict[str, tuple[float, Any]], key: str, now: float) -> Any:
        """A token cache's live entry for `key`, or None."""
        entry = cache.get(key)
        return entry[1] if entry is not None and entry[0] > now else None

    def _keep(self, cache: dict[str, tuple[float, Any]], key: str, value: Any, now: float,
              seen: int) -> None:
        """Cache a read of the tokens table begun when `_tokens_seen` was `seen`.

        Only if no write to tokens was heard while the read was out: a revocation
        committed after the read's snapshot NOTIFYs after it too, so it either
        empties the cache before the entry goes in or stops it here.
        """
        if not self.listening or seen != self._tokens_seen:
            return
        if len(cache) >= TOKEN_CACHE_MAX:
            cache.clear()
        cache[key] = (now + TOKEN_CACHE_TTL, value)

    async def token_revoked(self, token_hash: str) -> bool:
        """Whether a revoked token has this hash (asked only after a failed lookup)."""
        return await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE hash = $1 AND revoked_at IS NOT NULL)",
            token_hash)

    async def live_token_hash(self, name: str) -> str | None:
        """The hash of the live token called `name` (config `piston_anonymous_token`).

        Asked on every anonymous Piston request: cached like `token_by_hash`'s
        tokens, and emptied with them.
        """
        now = time.monotonic()
        cached = self._cached(self._token_names, name, now)
        if cached is not None:
            return cached
        seen = self._tokens_seen
        digest = await self._pool.fetchval(
            "SELECT hash FROM tokens WHERE name = $1 AND revoked_at IS NULL", name)
        if digest is not None:
            self._keep(self._token_names, name, digest, now, seen)
        return digest

    async def rate_hit(self, token_id: int, limit: int) -> float:
        """Count one request of a rate-limited token, cluster-wide.

        0 when it counts; else the seconds until the window has room (the
        request is then not counted).
        """
        return await self._pool.fetchval("SELECT pesto_rate_hit($1, $2)", token_id, limit)

    async def list_tokens(self, month: str) -> list[Token]:
        """Every token, revoked ones too, oldest first, with usage in `month`."""
        rows = await self._pool.fetch(
            f"SELECT {_TOKEN_COLUMNS}, {_MONTH_EXECUTIONS} FROM tokens t ORDER BY t.id", month)
        return [Token(*row) for row in rows]

    async def revoke_token(self, name: str) -> bool:
        """Revoke the live token called `name`; False when there is none."""
        status = await self._pool.execute(
            "UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
            utcnow(), name)
        return status != "UPDATE 0"

    # --- jobs -------------------------------------------------------------------

    async def submit_job(self, job: Job, node_id: str | None, queue_limit: int | None) -> str:
        """Insert a new queued or running job (running: on `node_id`), counting one execution.

        Returns 'ok', or without inserting: 'revoked' (the token was revoked),
        'concurrency' (the token has its maximum of unfinished jobs), 'quota'
        (its monthly executions are used up) or 'full' (a queued job and
        `queue_limit` jobs queued already).
        """
        return await self._on_path(
            "fetchval", "SELECT pesto_submit($1, $2, $3, $4, $5, $6, $7)", job.id, job.token_id,
            job.status.value, job.request, job.created_at, node_id, queue_limit)

    async def insert_job(self, job: Job) -> None:
        """Persist a job as given, counting one execution (the Store method, without limits:
        the cluster scheduler submits through `submit_job`)."""
        await self._pool.execute(
            f"WITH j AS (INSERT INTO jobs ({_JOB_COLUMNS})"
            "   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING token_id, created_at)"
            " INSERT INTO usage (token_id, month, shard, executions, last_used_at)"
            " SELECT token_id, substr(created_at, 1, 7), hashtext($1) & 15, 1, created_at FROM j"
            " ON CONFLICT (token_id, month, shard) DO UPDATE"
            " SET executions = usage.executions + 1, last_used_at = excluded.last_used_at",
            job.id, job.token_id, job.status.value, job.request, job.created_at, job.started_at,
            job.finished_at, job.result, job.error)

    async def claim(self, node_id: str, limit: int,
                    started_at: str) -> list[tuple[Job, str, int | None]]:
        """Take up to `limit` queued jobs, oldest first, for `node_id`; each with its
        token's name and concurrency limit.

        SKIP LOCKED: jobs another node is claiming right now are passed over,
        never taken twice.
        """
        rows = await self._on_path(
            "fetch", "UPDATE jobs j SET status = 'running', started_at = $2, node_id = $1"
            " FROM (SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq"
            "       LIMIT $3 FOR UPDATE SKIP LOCKED) c, tokens t"
            " WHERE j.id = c.id AND t.id = j.token_id"
            " RETURNING j.id, j.token_id, j.status, j.request, j.created_at, j.started_at,"
            " j.finished_at, j.result, j.error, t.name, t.max_concurrency, j.seq",
            node_id, started_at, limit)
        rows = sorted(rows, key=lambda r: r[11])
        return [(_job(row), row[9], row[10]) for row in rows]

    async def unclaim(self, node_id: str, job_ids: list[str]) -> None:
        """Put back jobs this node claimed but never started (it is shutting down)."""
        await self._pool.execute(
            "WITH u AS (UPDATE jobs SET status = 'queued', started_at = NULL, node_id = NULL"
            "   WHERE id = ANY($2::text[]) AND node_id = $1 AND status = 'running' RETURNING id)"
            " SELECT pg_notify('pesto_queue', '') FROM u LIMIT 1", node_id, job_ids)

    async def finished_among(self, job_ids: list[str]) -> list[str]:
        """Which of these jobs are finished (or gone)."""
        rows = await self._pool.fetch(
            "SELECT i FROM unnest($1::text[]) i WHERE NOT EXISTS (SELECT 1 FROM jobs"
            " WHERE id = i AND status IN ('queued', 'running'))", job_ids)
        return [row[0] for row in rows]

    async def mark_running(self, job_id: str, started_at: str) -> None:
        await self._pool.execute(
            "UPDATE jobs SET status = 'running', started_at = $2 WHERE id = $1"
            " AND status = 'queued'", job_id, started_at)

    async def finish_job(self, job_id: str, status: JobStatus, finished_at: str, *,
                         result: str | None = None, error: str | None = None,
                         announce: bool = True) -> None:
        """Record the end of a job still queued or running; if it was and `announce`
        (another node may wait for it: `Entry.announce`), NOTIFY `pesto_done`."""
        await self._on_path(
            "execute",
            "WITH u AS (UPDATE jobs SET status = $2, finished_at = $3, result = $4, error = $5"
            "   WHERE id = $1 AND status IN ('queued', 'running') RETURNING id)"
            " SELECT pg_notify('pesto_done', id) FROM u WHERE $6",
            job_id, status.value, finished_at, result, error, announce)

    async def cancel_queued(self, job_id: str, token_id: int, finished_at: str) -> str | None:
        """Cancel the token's job if it is still queued (no node has it); its request
        text if it was, else None."""
        row = await self._pool.fetchrow(
            "WITH u AS (UPDATE jobs SET status = 'cancelled', finished_at = $3"
            "   WHERE id = $1 AND token_id = $2 AND status = 'queued' RETURNING id, request)"
            " SELECT request, pg_notify('pesto_done', id) FROM u", job_id, token_id, finished_at)
        return None if row is None else row[0]

    async def get_job(self, job_id: str, token_id: int) -> Job | None:
        """The job if it exists and belongs to this token, else None."""
        row = await self._pool.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1 AND token_id = $2", job_id, token_id)
        return None if row is None else _job(row)

    async def job_by_id(self, job_id: str) -> Job | None:
        row = await self._on_path("fetchrow", f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1",
                                  job_id)
        return None if row is None else _job(row)

    async def queued_count(self) -> int:
        return await self._pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'")

    async def running_jobs(self) -> list[tuple[str, int, str]]:
        """(id, token id, request) of the running jobs whose node is gone (no row):
        what `fail_running` fails. Jobs of live nodes are theirs."""
        rows = await self._pool.fetch(
            "SELECT id, token_id, request FROM jobs WHERE status = 'running' AND (node_id IS NULL"
            " OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = jobs.node_id))")
        return [(row[0], row[1], row[2]) for row in rows]

    async def fail_running(self, finished_at: str, error: str) -> int:
        """Fail jobs left running by nodes that are gone (no row); how many.

        Unlike SQLite's, this never touches the jobs of live nodes: other
        nodes are running them. Silent nodes are `reap`ed after their lease.
        """
        rows = await self._pool.fetch(
            "WITH failed AS (UPDATE jobs SET status = 'failed', finished_at = $1, error = $2"
            "   WHERE status = 'running' AND (node_id IS NULL"
            "     OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = jobs.node_id))"
            "   RETURNING id)"
            " SELECT pg_notify('pesto_done', id) FROM failed", finished_at, error)
        return len(rows)

    async def queued_jobs(self) -> list[tuple[Job, Token]]:
        """Jobs queued, oldest first, with their tokens (shared: any node may claim them)."""
        rows = await self._pool.fetch(
            f"SELECT j.id, j.token_id, j.status, j.request, j.created_at, j.started_at,"
            f" j.finished_at, j.result, j.error, {_TOKEN_COLUMNS}"
            " FROM jobs j JOIN tokens t ON t.id = j.token_id"
            " WHERE j.status = 'queued' ORDER BY j.seq")
        return [(_job(row[:9]), Token(*row[9:])) for row in rows]

    async def purge_finished(self, before: str) -> int:
        """Delete finished jobs that ended before `before` (and stale rate hits); how many jobs."""
        await self._pool.execute("DELETE FROM rate_hits WHERE at < now() - interval '2 minutes'")
        gone = 0
        while True:
            status = await self._pool.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                " WHERE finished_at IS NOT NULL AND finished_at < $1"
                " AND status IN ('completed', 'failed', 'cancelled') LIMIT $2)",
                before, PURGE_BATCH)
            count = int(status.split()[-1])
            gone += count
            if count < PURGE_BATCH:
                return gone

    # --- webhook deliveries and the secrets they are signed with ------------------

    async def callback_secret(self, token_id: int) -> str | None:
        """The secret this token's callbacks are signed with."""
        return await self._pool.fetchval("SELECT callback_secret FROM tokens WHERE id = $1",
                                         token_id)

    async def set_callback_secret(self, name: str, secret: str) -> bool:
        """Give the live token `name` a new callback secret; False when there is none."""
        status = await self._pool.execute(
            "UPDATE tokens SET callback_secret = $1 WHERE name = $2 AND revoked_at IS NULL",
            secret, name)
        return status != "UPDATE 0"

    async def add_delivery(self, job_id: str, token_id: int, url: str, payload: str,
                           now: float) -> None:
        """Queue one delivery, due at once."""
        await self._pool.execute(
            "INSERT INTO deliveries (job_id, token_id, url, payload, created_at, next_attempt_at)"
            " VALUES ($1, $2, $3, $4, $5, $5)", job_id, token_id, url, payload, now)

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due by `now`, oldest first, taken for this node.

        Several nodes run a delivery loop on the same table: each due row is
        taken with SKIP LOCKED and its next attempt pushed DELIVERY_LEASE
        seconds on, so no other node sends it meanwhile; the attempt's
        `end_delivery` / `retry_delivery` then writes the real state. A node
        that dies mid-attempt leaves the row due again after the lease (a
        webhook may then arrive twice; receivers dedupe by delivery id).
        """
        rows = await self._pool.fetch(
            f"UPDATE deliveries d SET next_attempt_at = $1 + {DELIVERY_LEASE}"
            " FROM (SELECT id, next_attempt_at FROM deliveries WHERE status = 'pending'"
            "       AND next_attempt_at <= $1"
            "       ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) c"
            " WHERE d.id = c.id RETURNING d.id, d.job_id, d.token_id, d.url, d.payload, d.status,"
            " d.attempts, d.created_at, c.next_attempt_at, d.last_error", now, limit)
        return sorted((Delivery(*row) for row in rows), key=lambda d: d.id)

    async def next_delivery_at(self) -> float | None:
        return await self._pool.fetchval(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'")

    async def end_delivery(self, delivery_id: int, status: str, attempts: int, now: float,
                           error: str | None = None) -> None:
        """Record a delivery `delivered` or `failed` for good."""
        await self._pool.execute(
            "UPDATE deliveries SET status = $1, attempts = $2, finished_at = $3, last_error = $4"
            " WHERE id = $5", status, attempts, now, error, delivery_id)

    async def retry_delivery(self, delivery_id: int, attempts: int, next_at: float,
                             error: str) -> None:
        await self._pool.execute(
            "UPDATE deliveries SET attempts = $1, next_attempt_at = $2, last_error = $3"
            " WHERE id = $4", attempts, next_at, error, delivery_id)

    async def deliveries_of(self, job_id: str) -> list[Delivery]:
        """Every delivery of a job, oldest first (for operators and tests)."""
        rows = await self._pool.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE job_id = $1 ORDER BY id", job_id)
        return [Delivery(*row) for row in rows]

    async def purge_deliveries(self, before: float) -> int:
        """Delete deliveries that ended before `before` (Unix time)."""
        status = await self._pool.execute(
            "DELETE FROM deliveries WHERE status != 'pending' AND finished_at < $1", before)
        return int(status.split()[-1])

    # --- token requests -----------------------------------------------------------

    async def add_token_request(self, *, name: str, email: str, purpose: str, address: str,
                                claim_hash: str, public_key: bytes, max_pending: int,
                                issue: tuple[str, str, dict[str, int | None]] | None = None,
                                ) -> TokenRequest:
        """Store a new request, all or nothing (see Store.add_token_request).

        Raises RequestRefused("duplicate") or RequestRefused("full"); the
        pending count is taken under an advisory lock, so requests arriving
        at several nodes at once cannot exceed `max_pending`.
        """
        now = utcnow()
        done = None if issue is None else now
        status = RequestStatus.PENDING if issue is None else RequestStatus.CLAIMED
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK + 2)
            if issue is None and await conn.fetchval(
                    "SELECT count(*) FROM token_requests WHERE status = 'pending'") >= max_pending:
                raise RequestRefused("full")
            try:
                async with conn.transaction():        # a savepoint: the refusal rolls back
                    token_id = None
                    if issue is not None:
                        token_name, token_hash, limits = issue
                        token_id = await self._insert_token(conn, token_name, token_hash,
                                                            limits, now)
                    request_id = await conn.fetchval(
                        "INSERT INTO token_requests (name, email, purpose, address, claim_hash,"
                        " public_key, status, created_at, decided_at, token_id, claimed_at)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                        name, email, purpose, address, claim_hash, public_key, status.value, now,
                        done, token_id, done)
            except asyncpg.UniqueViolationError:
                raise RequestRefused("duplicate") from None
        return TokenRequest(id=request_id, name=name, email=email, purpose=purpose,
                            address=address, status=status, created_at=now, decided_at=done,
                            token_id=token_id, claimed_at=done)

    @staticmethod
    async def _insert_token(conn: Any, name: str, token_hash: str,
                            limits: dict[str, int | None], now: str) -> int:
        return await conn.fetchval(
            "INSERT INTO tokens (name, hash, created_at, rate_limit, monthly_limit,"
            " max_concurrency) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            name, token_hash, now, limits.get("rate_limit"), limits.get("monthly_limit"),
            limits.get("max_concurrency"))

    async def token_requests(self, pending_only: bool = False) -> list[TokenRequest]:
        """Every token request (or the pending ones), oldest first."""
        where = " WHERE status = 'pending'" if pending_only else ""
        rows = await self._pool.fetch(
            f"SELECT {_REQUEST_COLUMNS} FROM token_requests{where} ORDER BY id")
        return [_token_request(row) for row in rows]

    async def token_request(self, request_id: int) -> tuple[TokenRequest, bytes] | None:
        """A request and its public key, or None."""
        row = await self._pool.fetchrow(
            f"SELECT {_REQUEST_COLUMNS}, public_key FROM token_requests WHERE id = $1",
            request_id)
        return None if row is None else (_token_request(row[:-1]), bytes(row[-1]))

    async def approve_token_request(self, request_id: int, token_name: str, token_hash: str,
                                    sealed: bytes, limits: dict[str, int | None]) -> bool:
        """Create the token and keep it sealed for the claim, in one transaction.

        False (and nothing written) unless the request is still pending;
        RequestRefused("duplicate") when a live token already has `token_name`.
        """
        now = utcnow()
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM token_requests WHERE id = $1"
                                   " AND status = 'pending' FOR UPDATE", request_id) is None:
                return False
            try:
                async with conn.transaction():
                    token_id = await self._insert_token(conn, token_name, token_hash, limits, now)
            except asyncpg.UniqueViolationError:
                raise RequestRefused("duplicate") from None
            await conn.execute(
                "UPDATE token_requests SET status = 'approved', decided_at = $1, token_id = $2,"
                " sealed = $3 WHERE id = $4", now, token_id, sealed, request_id)
            return True

    async def reject_token_request(self, request_id: int, reason: str | None) -> bool:
        """Reject a pending request; False when it is not pending."""
        status = await self._pool.execute(
            "UPDATE token_requests SET status = 'rejected', decided_at = $1, reason = $2"
            " WHERE id = $3 AND status = 'pending'", utcnow(), reason, request_id)
        return status != "UPDATE 0"

    async def request_by_claim(self, claim_hash: str) -> TokenRequest | None:
        row = await self._pool.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM token_requests WHERE claim_hash = $1", claim_hash)
        return None if row is None else _token_request(row)

    async def take_sealed_token(self, claim_hash: str) -> bytes | None:
        """Mark an approved request claimed and hand over its sealed token, once
        (the row is locked: two claims racing cannot both get it)."""
        sealed = await self._pool.fetchval(
            "WITH old AS (SELECT id, sealed FROM token_requests"
            "   WHERE claim_hash = $1 AND status = 'approved' FOR UPDATE)"
            " UPDATE token_requests t SET status = 'claimed', claimed_at = $2, sealed = NULL"
            " FROM old WHERE t.id = old.id RETURNING old.sealed", claim_hash, utcnow())
        return None if sealed is None else bytes(sealed)
