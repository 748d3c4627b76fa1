"""The SQLite job and token store: every SQLite statement of Pesto lives in this file.

One SQLite file in the data dir, WAL mode, synchronous=NORMAL: a commit is
a write() to the WAL (it survives the process being killed), fsync happens
at checkpoints.

The per-request statements (token lookup, job insert, start, finish and
read) run on the event loop's own thread, on one connection in autocommit
mode: each is a single indexed statement (the usage counter and
`last_used_at` are kept by a trigger on job insert), far less than handing
it to a thread and waking the loop again (docs/benchmarks.md). Being
synchronous, they are done in the order issued and never interleave. That
connection never checkpoints; after every `CHECKPOINT_EVERY` of its writes a
passive checkpoint (the fsyncs) runs on aiosqlite's thread, which also runs
the rare and possibly long statements (start-up, token commands, the
retention purge in short batches), so the loop never waits for a disk.

The schema is versioned with `PRAGMA user_version`; `Store.open` applies the
missing migrations in order. Callers see records, never SQL; a PostgreSQL
store would implement the same methods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Callable, TypeVar

import aiosqlite
import attrs

from pesto.clock import month_of, utcnow
from pesto.domain import Delivery, Job, JobStatus, RequestStatus, Token, TokenRequest
from pesto.errors import ConfigError, RequestRefused

DB_NAME = "pesto.sqlite3"
CHECKPOINT_EVERY = 200      # loop-thread writes between background checkpoints (~1000 WAL pages)
PURGE_BATCH = 500           # jobs deleted per statement: the write lock is held briefly

log = logging.getLogger("pesto.store")
_T = TypeVar("_T")


# Each entry moves the schema from version i to i+1. Never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tokens (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL,
        hash            TEXT NOT NULL UNIQUE,
        created_at      TEXT NOT NULL,
        last_used_at    TEXT,
        rate_limit      INTEGER,
        monthly_limit   INTEGER,
        max_concurrency INTEGER,
        revoked_at      TEXT
    );
    -- A name is unique among live tokens; a revoked name may be reused.
    CREATE UNIQUE INDEX tokens_live_name ON tokens(name) WHERE revoked_at IS NULL;

    CREATE TABLE jobs (
        id          TEXT PRIMARY KEY,
        token_id    INTEGER NOT NULL REFERENCES tokens(id),
        status      TEXT NOT NULL,
        request     TEXT NOT NULL,
        result      TEXT,
        error       TEXT,
        created_at  TEXT NOT NULL,
        started_at  TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_unfinished ON jobs(status) WHERE status IN ('queued', 'running');
    CREATE INDEX jobs_finished_at ON jobs(finished_at);

    CREATE TABLE usage (
        token_id   INTEGER NOT NULL REFERENCES tokens(id),
        month      TEXT NOT NULL,
        executions INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (token_id, month)
    );

    -- Counting executions in the same statement as the job insert keeps the
    -- hot path at one write and the counter exact.
    CREATE TRIGGER jobs_count_usage AFTER INSERT ON jobs BEGIN
        INSERT OR IGNORE INTO usage (token_id, month, executions)
            VALUES (NEW.token_id, substr(NEW.created_at, 1, 7), 0);
        UPDATE usage SET executions = executions + 1
            WHERE token_id = NEW.token_id AND month = substr(NEW.created_at, 1, 7);
        UPDATE tokens SET last_used_at = NEW.created_at WHERE id = NEW.token_id;
    END;
    """,
    # 2: fewer pages written per job (each is a WAL frame on the hot path):
    # unfinished jobs stay out of the finished_at index, and the trigger
    # touches one row (usage, by upsert) instead of usage twice and tokens;
    # a token's last use is now the latest of its usage rows.
    """
    DROP INDEX jobs_finished_at;
    CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
    ALTER TABLE usage ADD COLUMN last_used_at TEXT;
    DROP TRIGGER jobs_count_usage;
    CREATE TRIGGER jobs_count_usage AFTER INSERT ON jobs BEGIN
        INSERT INTO usage (token_id, month, executions, last_used_at)
            VALUES (NEW.token_id, substr(NEW.created_at, 1, 7), 1, NEW.created_at)
            ON CONFLICT (token_id, month) DO UPDATE
            SET executions = executions + 1, last_used_at = excluded.last_used_at;
    END;
    """,
    # 3: token requests from the page at / (pesto/api/front.py). Only hashes of
    # claim codes are kept; `sealed` holds an approved token encrypted to the
    # request's public key (pesto/api/claim.py) until it is claimed, then NULL.
    # An email has at most one request that is not rejected.
    """
    CREATE TABLE token_requests (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        email       TEXT NOT NULL,
        purpose     TEXT NOT NULL,
        address     TEXT NOT NULL,
        claim_hash  TEXT NOT NULL UNIQUE,
        public_key  BLOB NOT NULL,
        status      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        decided_at  TEXT,
        reason      TEXT,
        token_id    INTEGER REFERENCES tokens(id),
        sealed      BLOB,
        claimed_at  TEXT
    );
    CREATE UNIQUE INDEX token_requests_email ON token_requests(email)
        WHERE status != 'rejected';
    CREATE INDEX token_requests_pending ON token_requests(status) WHERE status = 'pending';
    """,
    # 4: signed webhooks (pesto/webhooks.py). Each token gets the secret its
    # callbacks are signed with (tokens made before this migration get one
    # too: `pesto token secret NAME` shows a new one); every delivery is a
    # row, so that retries survive a restart.
    """
    ALTER TABLE tokens ADD COLUMN callback_secret TEXT;
    UPDATE tokens SET callback_secret = lower(hex(randomblob(32)));
    CREATE TRIGGER tokens_callback_secret AFTER INSERT ON tokens
        WHEN NEW.callback_secret IS NULL BEGIN
        UPDATE tokens SET callback_secret = lower(hex(randomblob(32))) WHERE id = NEW.id;
    END;
    CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY,
        job_id          TEXT NOT NULL,
        token_id        INTEGER NOT NULL REFERENCES tokens(id),
        url             TEXT NOT NULL,
        payload         TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending',   -- pending, delivered, failed
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at      REAL NOT NULL,                     -- Unix time
        next_attempt_at REAL NOT NULL,
        finished_at     REAL,
        last_error      TEXT
    );
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_job ON deliveries(job_id);
    """,
)

# last_used_at: usage rows written before schema 2 have none; tokens.last_used_at has it.
_TOKEN_COLUMNS = ("t.id, t.name, t.created_at, coalesce((SELECT max(l.last_used_at) FROM usage l"
                  " WHERE l.token_id = t.id), t.last_used_at), t.rate_limit, t.monthly_limit,"
                  " t.max_concurrency, t.revoked_at")
_REQUEST_COLUMNS = ("id, name, email, purpose, address, status, created_at, decided_at, reason,"
                    " token_id, claimed_at")
_DELIVERY_COLUMNS = ("id, job_id, token_id, url, payload, status, attempts, created_at,"
                     " next_attempt_at, last_error")
_JOB_COLUMNS = "id, token_id, status, request, created_at, started_at, finished_at, result, error"


def _job(row: sqlite3.Row | tuple) -> Job:
    return Job(id=row[0], token_id=row[1], status=JobStatus(row[2]), request=row[3],
               created_at=row[4], started_at=row[5], finished_at=row[6], result=row[7],
               error=row[8])


def _token_request(row: sqlite3.Row | tuple) -> TokenRequest:
    return TokenRequest(row[0], row[1], row[2], row[3], row[4], RequestStatus(row[5]), *row[6:])


def _private_dir(data_dir: Path) -> None:
    """Make sure data_dir exists with mode 0700.

    A new or Pesto-only directory is made 0700; an existing directory holding
    other files is never chmod-ed behind the operator's back (think
    `--data-dir /tmp`): it must already be private, else ConfigError.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode == 0o700:
        return
    ours = {DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + "-journal"}
    if all(entry.name in ours for entry in data_dir.iterdir()):
        os.chmod(data_dir, 0o700)    # mkdir's mode was masked by umask, or an old dir of ours
        return
    raise ConfigError(f"data dir {data_dir} has mode {mode:o} and holds other files; "
                      "make it private (chmod 700) or choose a directory of its own")


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    async with db.execute("PRAGMA user_version") as cur:
        (version,) = await cur.fetchone()
    if version > len(MIGRATIONS):
        raise RuntimeError(f"{path} has schema version {version}, newer than this Pesto "
                           f"({len(MIGRATIONS)}); upgrade Pesto")
    for number in range(version, len(MIGRATIONS)):
        # executescript commits first; the version bump rides in the same script.
        await db.executescript(
            "BEGIN;\n" + MIGRATIONS[number] + f"\nPRAGMA user_version = {number + 1};\nCOMMIT;")


class Store:
    """Async access to the SQLite file. Open with `await Store.open(data_dir)`."""

    def __init__(self, db: aiosqlite.Connection, conn: sqlite3.Connection, path: Path) -> None:
        self._db = db           # aiosqlite's thread: cold paths and checkpoints
        # The event loop thread's connection for every per-request statement
        # (see the module docstring). fetchall() ends each read, so no
        # statement stays open to pin an old snapshot.
        self._conn = conn
        self.path = path
        self._writes = 0                          # since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None
        # Live tokens by hash, with their executions in `_tokens_month`; valid
        # while no other connection has committed (PRAGMA data_version is
        # unchanged): a `pesto token revoke` from another process empties it.
        # This connection's own job inserts keep the counts exact.
        self._tokens: dict[str, Token] = {}
        self._token_hashes: dict[int, str] = {}
        self._tokens_month = ""
        self._data_version = -1

    @classmethod
    async def open(cls, data_dir: Path) -> "Store":
        """Create the data dir (0700) and the database if needed, migrate, return the store.

        Raises ConfigError when the directory is shared and not private,
        OSError when it cannot be made, and RuntimeError when the database is
        newer than this code.
        """
        data_dir = Path(data_dir)
        _private_dir(data_dir)
        path = data_dir / DB_NAME
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: durable at checkpoints, never corrupt
            await db.execute("PRAGMA busy_timeout=5000")    # the CLI writes while the server runs
            await db.execute("PRAGMA foreign_keys=ON")
            await _migrate(db, path)
            conn = sqlite3.connect(path, isolation_level=None)
            for pragma in ("synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON",
                           "wal_autocheckpoint=0"):     # see CHECKPOINT_EVERY
                conn.execute("PRAGMA " + pragma)
        except BaseException:
            await db.close()
            raise
        store = cls(db, conn, path)
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            if (data_dir / name).exists():
                os.chmod(data_dir / name, 0o600)
        return store

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.shield(self._checkpoint)
        self._conn.close()
        await self._db.close()     # the last connection checkpoints the WAL away

    def _wrote(self) -> None:
        """Count one write of the loop's connection; start a checkpoint every so often."""
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY and self._checkpoint is None:
            self._writes = 0
            self._checkpoint = asyncio.ensure_future(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        try:
            # PASSIVE: copies what no reader still needs, never blocks a writer.
            await self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("WAL checkpoint failed; will retry")
        finally:
            self._checkpoint = None

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()
        return version

    # --- tokens -----------------------------------------------------------------

    async def create_token(self, name: str, token_hash: str, *, rate_limit: int | None = None,
                           monthly_limit: int | None = None,
                           max_concurrency: int | None = None) -> Token | None:
        """Insert a token; None when a live token already has this name."""
        now = utcnow()
        try:
            cur = await self._db.execute(
                "INSERT INTO tokens (name, hash, created_at, rate_limit, monthly_limit, max_concurrency)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, token_hash, now, rate_limit, monthly_limit, max_concurrency))
        except sqlite3.IntegrityError:
            return None
        return Token(id=cur.lastrowid, name=name, created_at=now, last_used_at=None,
                     rate_limit=rate_limit, monthly_limit=monthly_limit,
                     max_concurrency=max_concurrency)

    async def ensure_token(self, name: str, token_hash: str) -> bool:
        """Make `name` the live token with this hash (PESTO_ADMIN_TOKEN at start-up).

        A live token of that name with another hash is revoked first (the
        operator changed the secret). Returns True when a token was created.
        """
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = await self._db.execute_fetchall(
                "SELECT name FROM tokens WHERE hash = ? AND revoked_at IS NULL", (token_hash,))
            if rows:
                await self._db.execute("COMMIT")
                return False
            now = utcnow()
            await self._db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name))
            await self._db.execute(
                "INSERT INTO tokens (name, hash, created_at) VALUES (?, ?, ?)", (name, token_hash, now))
            await self._db.execute("COMMIT")
            return True
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def token_by_hash(self, token_hash: str, month: str) -> Token | None:
        """The live (not revoked) token with this hash and its executions in `month`.

        Runs on every request, on the loop's thread. Another connection's
        commit (a `pesto token revoke`, a new token) is seen by the next
        request: it changes PRAGMA data_version, which empties the cache.
        Its `last_used_at` may lag behind this process's own jobs.
        """
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if version != self._data_version or month != self._tokens_month:
            self._data_version = version
            self._tokens_month = month
            self._tokens.clear()
            self._token_hashes.clear()
        token = self._tokens.get(token_hash)
        if token is None:
            rows = self._conn.execute(
                f"SELECT {_TOKEN_COLUMNS}, coalesce(u.executions, 0) FROM tokens t"
                " LEFT JOIN usage u ON u.token_id = t.id AND u.month = ?"
                " WHERE t.hash = ? AND t.revoked_at IS NULL", (month, token_hash)).fetchall()
            if not rows:
                return None          # unknown tokens are not cached: they are not bounded
            token = self._tokens[token_hash] = Token(*rows[0])
            self._token_hashes[token.id] = token_hash
        return token

    async def token_revoked(self, token_hash: str) -> bool:
        """Whether a revoked token has this hash (asked only after a failed lookup)."""
        return self._conn.execute("SELECT 1 FROM tokens WHERE hash = ? AND revoked_at IS NOT NULL",
                                  (token_hash,)).fetchone() is not None

    async def live_token_hash(self, name: str) -> str | None:
        """The hash of the live token called `name` (config `piston_anonymous_token`)."""
        row = self._conn.execute("SELECT hash FROM tokens WHERE name = ? AND revoked_at IS NULL",
                                 (name,)).fetchone()
        return row[0] if row else None

    def _count_execution(self, token_id: int, created_at: str) -> None:
        """Keep a cached token's month count equal to what the insert trigger wrote."""
        token_hash = self._token_hashes.get(token_id)
        if token_hash is None:
            return
        token = self._tokens[token_hash]
        if month_of(created_at) == self._tokens_month:
            self._tokens[token_hash] = attrs.evolve(
                token, month_executions=token.month_executions + 1, last_used_at=created_at)
        else:                        # a new month began: read it again
            del self._tokens[token_hash], self._token_hashes[token_id]

    async def list_tokens(self, month: str) -> list[Token]:
        """Every token, revoked ones too, oldest first, with usage in `month`."""
        async with self._db.execute(
                f"SELECT {_TOKEN_COLUMNS}, coalesce(u.executions, 0) FROM tokens t"
                " LEFT JOIN usage u ON u.token_id = t.id AND u.month = ?"
                " ORDER BY t.id", (month,)) as cur:
            rows = await cur.fetchall()
        return [Token(*row) for row in rows]

    async def revoke_token(self, name: str) -> bool:
        """Revoke the live token called `name`; False when there is none."""
        cur = await self._db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (utcnow(), name))
        return cur.rowcount > 0

    # --- token requests ---------------------------------------------------------

    # Cold paths (a form post, a claim, an operator command). Reads and
    # single statements go to aiosqlite's thread; a change of several
    # statements runs whole in a worker thread (`_write`).

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work(conn)` as one transaction (BEGIN IMMEDIATE .. COMMIT, or
        ROLLBACK on any exception) on a short-lived connection in a worker thread.

        Not on aiosqlite's connection: a transaction there would span several
        steps of the event loop, and a job insert on the loop's own
        connection meanwhile would block the loop in busy_timeout waiting for
        a lock that only the next loop step could release. Here the
        transaction holds the write lock only while its statements run.
        """
        def run() -> _T:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            try:
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA wal_autocheckpoint=0")    # checkpoints are _run_checkpoint's
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    @staticmethod
    def _insert_token(conn: sqlite3.Connection, name: str, token_hash: str,
                      limits: dict[str, int | None], now: str) -> int:
        cur = conn.execute(
            "INSERT INTO tokens (name, hash, created_at, rate_limit, monthly_limit, max_concurrency)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, token_hash, now, limits.get("rate_limit"), limits.get("monthly_limit"),
             limits.get("max_concurrency")))
        return cur.lastrowid

    async def add_token_request(self, *, name: str, email: str, purpose: str, address: str,
                                claim_hash: str, public_key: bytes, max_pending: int,
                                issue: tuple[str, str, dict[str, int | None]] | None = None,
                                ) -> TokenRequest:
        """Store a new request, all or nothing.

        With `issue` = (token name, token hash, limits) the token is created in
        the same transaction and the request is stored already `claimed` (the
        `auto` mode: the caller shows the token at once). Raises
        RequestRefused("duplicate") when the email has a request that was not
        rejected (or a live token has the token name), RequestRefused("full")
        when `max_pending` requests wait.
        """
        now = utcnow()
        done = None if issue is None else now
        status = RequestStatus.PENDING if issue is None else RequestStatus.CLAIMED

        def work(conn: sqlite3.Connection) -> TokenRequest:
            if issue is None:
                (pending,) = conn.execute(
                    "SELECT count(*) FROM token_requests WHERE status = 'pending'").fetchone()
                if pending >= max_pending:
                    raise RequestRefused("full")
            try:
                token_id = None if issue is None else self._insert_token(conn, *issue, now)
                cur = conn.execute(
                    "INSERT INTO token_requests (name, email, purpose, address, claim_hash,"
                    " public_key, status, created_at, decided_at, token_id, claimed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, email, purpose, address, claim_hash, public_key, status.value, now, done,
                     token_id, done))
            except sqlite3.IntegrityError:
                raise RequestRefused("duplicate") from None
            return TokenRequest(id=cur.lastrowid, name=name, email=email, purpose=purpose,
                                address=address, status=status, created_at=now,
                                decided_at=done, token_id=token_id, claimed_at=done)

        return await self._write(work)

    async def token_requests(self, pending_only: bool = False) -> list[TokenRequest]:
        """Every token request (or the pending ones), oldest first."""
        where = " WHERE status = 'pending'" if pending_only else ""
        async with self._db.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM token_requests{where} ORDER BY id") as cur:
            rows = await cur.fetchall()
        return [_token_request(row) for row in rows]

    async def token_request(self, request_id: int) -> tuple[TokenRequest, bytes] | None:
        """A request and its public key, or None."""
        async with self._db.execute(
                f"SELECT {_REQUEST_COLUMNS}, public_key FROM token_requests WHERE id = ?",
                (request_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else (_token_request(row[:-1]), row[-1])

    async def approve_token_request(self, request_id: int, token_name: str, token_hash: str,
                                    sealed: bytes, limits: dict[str, int | None]) -> bool:
        """Create the token and keep it sealed for the claim, in one transaction.

        False (and nothing written) unless the request is still pending;
        RequestRefused("duplicate") when a live token already has `token_name`.
        """
        now = utcnow()

        def work(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM token_requests WHERE id = ? AND status = 'pending'",
                            (request_id,)).fetchone() is None:
                return False
            try:
                token_id = self._insert_token(conn, token_name, token_hash, limits, now)
            except sqlite3.IntegrityError:
                raise RequestRefused("duplicate") from None
            conn.execute(
                "UPDATE token_requests SET status = 'approved', decided_at = ?, token_id = ?,"
                " sealed = ? WHERE id = ?", (now, token_id, sealed, request_id))
            return True

        return await self._write(work)

    async def reject_token_request(self, request_id: int, reason: str | None) -> bool:
        """Reject a pending request; False when it is not pending."""
        cur = await self._db.execute(
            "UPDATE token_requests SET status = 'rejected', decided_at = ?, reason = ?"
            " WHERE id = ? AND status = 'pending'", (utcnow(), reason, request_id))
        return cur.rowcount > 0

    async def request_by_claim(self, claim_hash: str) -> TokenRequest | None:
        async with self._db.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM token_requests WHERE claim_hash = ?",
                (claim_hash,)) as cur:
            row = await cur.fetchone()
        return None if row is None else _token_request(row)

    async def take_sealed_token(self, claim_hash: str) -> bytes | None:
        """Mark an approved request claimed and hand over its sealed token, once.

        In one transaction, so two claims racing cannot both get it; the
        sealed copy leaves the database as it is handed over.
        """
        def work(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT sealed FROM token_requests WHERE claim_hash = ? AND status = 'approved'",
                (claim_hash,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE token_requests SET status = 'claimed', claimed_at = ?, sealed = NULL"
                " WHERE claim_hash = ?", (utcnow(), claim_hash))
            return row[0]

        return await self._write(work)

    # --- jobs -------------------------------------------------------------------

    # The per-job statements run on the loop's thread (module docstring); each
    # is committed when it returns.

    async def insert_job(self, job: Job) -> None:
        """Persist a new job (queued or already running); counts one execution for its token."""
        self._conn.execute(
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.token_id, job.status.value, job.request, job.created_at,
             job.started_at, job.finished_at, job.result, job.error))
        self._count_execution(job.token_id, job.created_at)
        self._wrote()

    async def mark_running(self, job_id: str, started_at: str) -> None:
        self._conn.execute(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
            (started_at, job_id))
        self._wrote()

    async def finish_job(self, job_id: str, status: JobStatus, finished_at: str, *,
                         result: str | None = None, error: str | None = None,
                         announce: bool = True) -> None:
        """Record the end of a job that is still queued or running (never rewrite a finished one).

        `announce` is for a cluster's store (nothing listens on one node)."""
        self._conn.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?"
            " WHERE id = ? AND status IN ('queued', 'running')",
            (status.value, finished_at, result, error, job_id))
        self._wrote()

    async def get_job(self, job_id: str, token_id: int) -> Job | None:
        """The job if it exists and belongs to this token, else None."""
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ? AND token_id = ?",
            (job_id, token_id)).fetchall()
        return _job(rows[0]) if rows else None

    async def running_jobs(self) -> list[tuple[str, int, str]]:
        """(id, token id, request) of every job marked running (at start-up: left by a crash)."""
        async with self._db.execute(
                "SELECT id, token_id, request FROM jobs WHERE status = 'running'") as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def fail_running(self, finished_at: str, error: str) -> int:
        """Mark every job left `running` (by a crash) as failed; how many there were."""
        cur = await self._db.execute(
            "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE status = 'running'",
            (finished_at, error))
        return cur.rowcount

    async def queued_jobs(self) -> list[tuple[Job, Token]]:
        """Jobs left `queued`, oldest first, each with its token (revoked ones too)."""
        async with self._db.execute(
                f"SELECT j.id, j.token_id, j.status, j.request, j.created_at, j.started_at,"
                f" j.finished_at, j.result, j.error, {_TOKEN_COLUMNS}"
                " FROM jobs j JOIN tokens t ON t.id = j.token_id"
                " WHERE j.status = 'queued' ORDER BY j.created_at, j.rowid") as cur:
            rows = await cur.fetchall()
        return [(_job(row[:9]), Token(*row[9:])) for row in rows]

    async def purge_finished(self, before: str) -> int:
        """Delete finished jobs that ended before `before`; how many went.

        In batches, on aiosqlite's thread: the loop's writes wait for the
        write lock (busy_timeout) no longer than one batch takes.
        """
        gone = 0
        while True:
            cur = await self._db.execute(
                "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
                " WHERE finished_at IS NOT NULL AND finished_at < ?"
                " AND status IN ('completed', 'failed', 'cancelled') LIMIT ?)",
                (before, PURGE_BATCH))
            gone += cur.rowcount
            if cur.rowcount < PURGE_BATCH:
                return gone

    # --- webhook deliveries and the secrets they are signed with ------------------

    async def callback_secret(self, token_id: int) -> str | None:
        """The secret this token's callbacks are signed with (loop thread)."""
        rows = self._conn.execute("SELECT callback_secret FROM tokens WHERE id = ?",
                                  (token_id,)).fetchall()
        return rows[0][0] if rows else None

    async def set_callback_secret(self, name: str, secret: str) -> bool:
        """Give the live token `name` a new callback secret; False when there is none."""
        cur = await self._db.execute(
            "UPDATE tokens SET callback_secret = ? WHERE name = ? AND revoked_at IS NULL",
            (secret, name))
        return cur.rowcount > 0

    async def add_delivery(self, job_id: str, token_id: int, url: str, payload: str,
                           now: float) -> None:
        """Queue one delivery, due at once (loop thread, committed on return)."""
        self._conn.execute(
            "INSERT INTO deliveries (job_id, token_id, url, payload, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (job_id, token_id, url, payload, now, now))
        self._wrote()

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due by `now`, oldest first."""
        rows = self._conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE status = 'pending'"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?", (now, limit)).fetchall()
        return [Delivery(*row) for row in rows]

    async def next_delivery_at(self) -> float | None:
        rows = self._conn.execute(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'").fetchall()
        return rows[0][0]

    async def end_delivery(self, delivery_id: int, status: str, attempts: int, now: float,
                           error: str | None = None) -> None:
        """Record a delivery `delivered` or `failed` for good."""
        self._conn.execute(
            "UPDATE deliveries SET status = ?, attempts = ?, finished_at = ?, last_error = ?"
            " WHERE id = ?", (status, attempts, now, error, delivery_id))
        self._wrote()

    async def retry_delivery(self, delivery_id: int, attempts: int, next_at: float,
                             error: str) -> None:
        self._conn.execute(
            "UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE id = ?", (attempts, next_at, error, delivery_id))
        self._wrote()

    async def deliveries_of(self, job_id: str) -> list[Delivery]:
        """Every delivery of a job, oldest first (for operators and tests)."""
        rows = self._conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE job_id = ? ORDER BY id",
            (job_id,)).fetchall()
        return [Delivery(*row) for row in rows]

    async def purge_deliveries(self, before: float) -> int:
        """Delete deliveries that ended before `before` (Unix time)."""
        cur = await self._db.execute(
            "DELETE FROM deliveries WHERE status != 'pending' AND finished_at < ?", (before,))
        return cur.rowcount
