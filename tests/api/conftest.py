"""Fixtures for API tests: the real app over a real SQLite file and the real sandbox.

`client(...)` starts `create_app(settings)` with Litestar's TestClient (the
lifespan runs: engine, store, scheduler); `token(...)` writes a token into
the same data dir; `assert_error` is the one check of the error body shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from litestar.testing import TestClient

from pesto.api import create_app
from pesto.api.auth import hash_token, new_token
from pesto.config import Settings, load_settings
from pesto.stores import open_store

REPO = Path(__file__).resolve().parents[2]
PY = {"language": "python"}

# Uids of this test session's own (below tests/conftest.py's blocks), so that
# leak checks never see another Pesto on this host: in-process apps use the
# first 80, the S12 server the next 40, the kill -9 servers the last 40.
API_UID_BASE = 60000 + (os.getpid() % 6) * 160
APP_UIDS = (API_UID_BASE, 80)
S12_UIDS = (API_UID_BASE + 80, 40)
RESTART_UIDS = (API_UID_BASE + 120, 40)


# The PostgreSQL database of a test's data dir (the `data_dir` fixture's "postgresql"
# parameter); a data dir not in here uses SQLite.
STORE_URLS: dict[Path, str] = {}


def store_url(data_dir: Path) -> str | None:
    return STORE_URLS.get(Path(data_dir))


def postgres_only(data_dir: Path) -> None:
    if store_url(data_dir) is None:
        pytest.skip("a PostgreSQL-only property (the SQLite store has no shared queue)")


def sqlite_only(data_dir: Path, why: str) -> None:
    if store_url(data_dir) is not None:
        pytest.skip(f"SQLite only: {why}")


def store_args(data_dir: Path) -> list[str]:
    """The `--store URL` of a data dir's PostgreSQL database for `pesto` commands (or none)."""
    url = store_url(data_dir)
    return [] if url is None else ["--store", url]


def open_test_store(data_dir: Path):
    """The store a test's app uses (an awaitable)."""
    return open_store(load_settings(env={}, data_dir=str(data_dir),
                                    store_url=store_url(data_dir)))


def with_store(data_dir: Path, call: Any) -> Any:
    """`await call(store)` on the test's store, opened and closed around it, from sync code."""
    async def run() -> Any:
        store = await open_test_store(data_dir)
        try:
            return await call(store)
        finally:
            await store.close()

    return asyncio.run(run())


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"workers": 4, "queue_size": 50, "shutdown_timeout": 5.0,
                              "uid_base": APP_UIDS[0], "uid_count": APP_UIDS[1],
                              "store_url": store_url(data_dir), "node_lease": 2.0}
    values.update(overrides)
    return load_settings(env={}, data_dir=str(data_dir), **values)


def add_token(data_dir: Path, name: str = "tester", **limits: Any) -> str:
    """Create a token in the store of data_dir; returns the secret."""
    secret = new_token()

    async def create() -> None:
        store = await open_test_store(data_dir)
        try:
            assert await store.create_token(name, hash_token(secret), **limits) is not None
        finally:
            await store.close()

    asyncio.run(create())
    return secret


def revoke(data_dir: Path, name: str) -> bool:
    return with_store(data_dir, lambda store: store.revoke_token(name))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one check of the error shape: status, JSON {code, message}, no stack trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"code", "message", "details", "hint"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    return body


class Api:
    """A started app plus the token of its default user."""

    def __init__(self, client: TestClient, data_dir: Path, secret: str) -> None:
        self.client = client
        self.data_dir = data_dir
        self.secret = secret
        self.headers = {"X-Pesto-Token": secret}

    @property
    def services(self) -> Any:
        return self.client.app.state.pesto

    def post(self, path: str, body: Any, token: str | None = "default", **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers.setdefault("X-Pesto-Token", self.secret if token == "default" else token)
        return self.client.post(path, json=body, headers=headers, **kw)

    def get(self, path: str, token: str | None = "default") -> httpx.Response:
        headers = {} if token is None else {
            "X-Pesto-Token": self.secret if token == "default" else token}
        return self.client.get(path, headers=headers)

    def delete(self, path: str, token: str | None = "default") -> httpx.Response:
        headers = {} if token is None else {
            "X-Pesto-Token": self.secret if token == "default" else token}
        return self.client.delete(path, headers=headers)

    def wait_job(self, job_id: str, timeout: float = 30.0, token: str | None = "default") -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(f"/api/jobs/{job_id}", token=token).json()
            if body["status"] in ("completed", "failed", "cancelled"):
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.05)

    def wait_status(self, job_id: str, status: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(f"/api/jobs/{job_id}").json()
            if body["status"] == status:
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.02)


@contextlib.contextmanager
def running_app(data_dir: Path, secret: str | None = None, **overrides: Any) -> Iterator[Api]:
    settings = make_settings(data_dir, **overrides)
    secret = secret or add_token(data_dir)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Api(client, data_dir, secret)


@pytest.fixture(params=["sqlite", "postgresql"])
def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The test's data dir; with the "postgresql" parameter its store is a fresh database
    of a real PostgreSQL (the API suite runs against both backends)."""
    path = tmp_path / "data"
    if request.param == "postgresql":
        STORE_URLS[path] = request.getfixturevalue("postgres").new_database()
    yield path
    STORE_URLS.pop(path, None)


@pytest.fixture
def api(data_dir: Path) -> Iterator[Api]:
    with running_app(data_dir) as running:
        yield running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pesto_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `pesto` service commands in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "pesto.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env=os.environ.copy())
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


class Server:
    """A real `pesto serve` subprocess on a free port."""

    def __init__(self, data_dir: Path, *extra: str, uids: tuple[int, int] = RESTART_UIDS,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        env = {**os.environ, "PESTO_UID_BASE": str(uids[0]), "PESTO_UID_COUNT": str(uids[1]),
               **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir.parent / f"serve-{self.port}.log", "w")
        if store_url(data_dir) is not None:
            extra = ("--store", store_url(data_dir), *extra)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pesto.cli", "serve", "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(self.port), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("pesto serve did not start: " + self.output())
            time.sleep(0.1)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.data_dir.parent / f"serve-{self.port}.log").read_text()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self.log.closed:
            self.log.close()


def held_uids(sandbox_dir: Path, base: int, count: int) -> list[int]:
    """Uids of [base, base+count) whose lease lock is held or whose work dir is left over."""
    import fcntl

    held = []
    for uid in range(base, base + count):
        lock = sandbox_dir / "locks" / str(uid)
        if (sandbox_dir / "work" / str(uid)).exists():
            held.append(uid)
            continue
        if not lock.exists():
            continue
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held.append(uid)
        finally:
            os.close(fd)
    return held


def wait_uids_free(sandbox_dir: Path, base: int, count: int, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        held = held_uids(sandbox_dir, base, count)
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.1)
