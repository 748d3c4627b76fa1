"""A real PostgreSQL for the tests: the server named by PESTO_TEST_POSTGRES_URL, or a
throwaway cluster (initdb in a temp dir, Debian's `postgresql` package) started here.

Each test gets a database of its own, copied from a template that already
holds Pesto's schema (CREATE DATABASE ... TEMPLATE is a file copy, far quicker
than migrating again).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import asyncio

ENV = "PESTO_TEST_POSTGRES_URL"


def _initdb() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return found[-1] if found else (shutil.which("initdb") or None)


class Postgres:
    """One PostgreSQL server: `new_database()` returns the URL of a fresh, migrated database."""

    def __init__(self, base_url: str, proc_dir: Path | None = None, owner: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._dir = proc_dir
        self._owner = owner
        self._names = itertools.count()
        self._prefix = f"pesto_t{os.getpid()}_"
        self._template = self._prefix + "template"
        self._sql(f"DROP DATABASE IF EXISTS {self._template}")
        self._sql(f"CREATE DATABASE {self._template}")

        async def migrate() -> None:
            from pesto.pgstore import PgStore
            store = await PgStore.open(self.url(self._template))
            await store.close()

        asyncio.run(migrate())

    def url(self, database: str) -> str:
        return f"{self.base_url}/{database}"

    def _sql(self, statement: str) -> None:
        async def run() -> None:
            import asyncpg
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())

    def new_database(self) -> str:
        name = f"{self._prefix}{next(self._names)}"
        self._sql(f"CREATE DATABASE {name} TEMPLATE {self._template}")
        return self.url(name)

    @classmethod
    def start(cls, *, durable: bool = False) -> "Postgres":
        """Reuse $PESTO_TEST_POSTGRES_URL (a server URL without database), or start a cluster:
        with fsync and synchronous commits off (a throwaway), or `durable` (the defaults).

        Raises RuntimeError with the reason when neither is possible.
        """
        if os.environ.get(ENV):
            return cls(os.environ[ENV])
        initdb = _initdb()
        if initdb is None:
            raise RuntimeError("no PostgreSQL: set PESTO_TEST_POSTGRES_URL or install Debian's "
                               "postgresql package (apt-get install -y postgresql)")
        bindir = Path(initdb).parent
        owner = None
        if os.geteuid() == 0:        # postgres refuses to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no postgres user") from None
            owner = "postgres"
        # Not under pytest's tmp dirs: those are root's 0700, which the postgres user cannot enter.
        tmp = Path(tempfile.mkdtemp(prefix="pesto-pg-"))
        data, sock = tmp / "data", tmp / "sock"
        sock.mkdir(exist_ok=True)
        if owner:
            shutil.chown(tmp, owner)
            shutil.chown(sock, owner)
            os.chmod(tmp, 0o700)
        port = _free_port()

        def run(*argv: str) -> None:
            cmd = ["runuser", "-u", owner, "--", *argv] if owner else list(argv)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)
            if proc.returncode != 0:
                raise RuntimeError(f"{argv[0]} failed: {proc.stderr or proc.stdout}")

        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8")
        # fsync off: a throwaway test cluster; max_connections: several nodes' pools at once.
        quick = "" if durable else \
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "start",
            "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 {quick}"
                  "-c max_connections=300")
        server = cls(f"postgresql://postgres@127.0.0.1:{port}", data, owner)
        server._pg_ctl = [*(["runuser", "-u", owner, "--"] if owner else []),
                          str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        return server

    def stop(self) -> None:
        if self._dir is not None:
            subprocess.run(self._pg_ctl, capture_output=True, timeout=60)
            shutil.rmtree(self._dir.parent, ignore_errors=True)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value (returned) or the timeout passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
