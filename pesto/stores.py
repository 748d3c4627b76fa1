"""The store interface callers program against, and `open_store` to pick a backend.

`store_url` (config, `PESTO_STORE_URL`, `--store`) chooses:
- absent, or `sqlite:///some/dir`: the embedded SQLite store (`pesto.store`),
  one file in the data dir (or in that directory);
- `postgresql://user:password@host:port/db` (or `postgres://`): the shared
  PostgreSQL store (`pesto.pgstore`) for many nodes (docs/cluster.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pesto.domain import Job, JobStatus, Token
from pesto.errors import ConfigError
from pesto.store import Store


class StoreAPI(Protocol):
    """What the API, the scheduler and the CLI call; both backends implement it.

    A backend with `cluster = True` also offers what `pesto.cluster` needs
    (claims, notifications, heartbeats, and `rate_hit`: the rate window of
    `pesto.limits` shared by every node).
    """

    path: Any

    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...
    async def create_token(self, name: str, token_hash: str, *, rate_limit: int | None = None,
                           monthly_limit: int | None = None,
                           max_concurrency: int | None = None) -> Token | None: ...
    async def ensure_token(self, name: str, token_hash: str) -> bool: ...
    async def token_by_hash(self, token_hash: str, month: str) -> Token | None: ...
    async def token_revoked(self, token_hash: str) -> bool: ...
    async def live_token_hash(self, name: str) -> str | None: ...
    async def list_tokens(self, month: str) -> list[Token]: ...
    async def revoke_token(self, name: str) -> bool: ...
    async def insert_job(self, job: Job) -> None: ...
    async def mark_running(self, job_id: str, started_at: str) -> None: ...
    async def finish_job(self, job_id: str, status: JobStatus, finished_at: str, *,
                         result: str | None = None, error: str | None = None,
                         announce: bool = True) -> None: ...
    async def get_job(self, job_id: str, token_id: int) -> Job | None: ...
    async def fail_running(self, finished_at: str, error: str) -> int: ...
    async def queued_jobs(self) -> list[tuple[Job, Token]]: ...
    async def purge_finished(self, before: str) -> int: ...


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0] in ("postgresql", "postgres")


async def open_store(settings: Any) -> StoreAPI:
    """Open (create, migrate) the store `settings.store_url` names.

    Raises ConfigError for an unknown scheme; otherwise what the backend's
    `open` raises (OSError, RuntimeError, driver errors for an unreachable
    database).
    """
    url = settings.store_url
    if not url:
        return await Store.open(settings.data_dir)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if not path.startswith("/"):
            raise ConfigError(f"store_url {url!r}: write sqlite:///absolute/dir")
        return await Store.open(Path(path))
    if is_postgres(url):
        from pesto.pgstore import PgStore   # asyncpg is imported only when used
        return await PgStore.open(url)
    raise ConfigError(f"store_url must start with sqlite:/// or postgresql:// "
                      f"(got {url.split('://', 1)[0]!r})")
