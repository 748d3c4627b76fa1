"""Restart recovery, kill -9, graceful shutdown, retention, the store's schema and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx

from tests.api.conftest import (PY, RESTART_UIDS, Server, add_token, assert_error, open_test_store,
                                pesto_cli, running_app, sqlite_only, wait_uids_free)
from pesto.domain import Job, JobStatus
from pesto.store import DB_NAME, MIGRATIONS, Store

HELLO = {**PY, "code": "print(1)"}
SLOW = {**PY, "code": "import time; time.sleep(20)", "runTimeout": 25000}


def test_graceful_shutdown_fails_running_keeps_queued_then_restart_runs_them(data_dir: Path) -> None:
    secret = add_token(data_dir)
    with running_app(data_dir, secret, workers=1, shutdown_timeout=0.5) as api:
        running = api.post("/api/jobs", SLOW).json()["id"]
        queued = api.post("/api/jobs", HELLO).json()["id"]
        api.wait_status(running, "running")
        started = time.monotonic()
    assert time.monotonic() - started < 10       # did not wait the 20 s of the program
    with running_app(data_dir, secret, workers=1) as api:
        failed = api.get(f"/api/jobs/{running}").json()
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "INTERRUPTED"
        done = api.wait_job(queued)
        assert done["status"] == "completed"
        assert done["result"]["runtime"]["stdout"] == "1\n"


def test_restart_recovers_jobs_left_queued_and_running(data_dir: Path) -> None:
    """What a crash leaves behind (rows queued and running) is settled at start-up."""
    secret = add_token(data_dir)

    async def leave_rows() -> None:
        store = await open_test_store(data_dir)
        try:
            token = (await store.list_tokens("2000-01"))[0]
            await store.insert_job(Job(id="crashed", token_id=token.id, status=JobStatus.RUNNING,
                                       request='{"language":"python","code":"print(2)"}',
                                       created_at="2026-01-01T00:00:00.000Z",
                                       started_at="2026-01-01T00:00:00.000Z"))
            await store.insert_job(Job(id="waiting", token_id=token.id, status=JobStatus.QUEUED,
                                       request='{"language":"python","code":"print(3)"}',
                                       created_at="2026-01-01T00:00:01.000Z"))
            # Queued under a previous configuration: this server's maximum is lower.
            await store.insert_job(Job(id="over", token_id=token.id, status=JobStatus.QUEUED,
                                       request='{"language":"python","code":"print(4)",'
                                               '"runTimeout":1000000000}',
                                       created_at="2026-01-01T00:00:02.000Z"))
        finally:
            await store.close()

    asyncio.run(leave_rows())
    with running_app(data_dir, secret) as api:
        crashed = api.get("/api/jobs/crashed").json()
        assert crashed["status"] == "failed" and crashed["error"]["code"] == "INTERRUPTED"
        assert "not run again" in crashed["error"]["message"]
        waiting = api.wait_job("waiting")
        assert waiting["status"] == "completed"
        assert waiting["result"]["runtime"]["stdout"] == "3\n"
        over = api.wait_job("over")
        assert over["status"] == "failed", over
        assert "$.runTimeout: must be between 1 and" in over["error"]["message"], over


def test_finished_jobs_are_purged_after_retention(data_dir: Path) -> None:
    secret = add_token(data_dir)

    async def old_job() -> None:
        store = await open_test_store(data_dir)
        try:
            token = (await store.list_tokens("2000-01"))[0]
            await store.insert_job(Job(id="ancient", token_id=token.id,
                                       status=JobStatus.COMPLETED, request="{}",
                                       created_at="2001-01-01T00:00:00.000Z",
                                       finished_at="2001-01-01T00:00:01.000Z", result="{}"))
        finally:
            await store.close()

    asyncio.run(old_job())
    with running_app(data_dir, secret, retention_days=7) as api:
        fresh = api.post("/api/execute", HELLO).json()["id"]
        deadline = time.monotonic() + 5
        while api.get("/api/jobs/ancient").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert api.get(f"/api/jobs/{fresh}").status_code == 200


def test_schema_is_versioned_and_reopened(data_dir: Path) -> None:
    sqlite_only(data_dir, "the SQLite file and its directory (PostgreSQL: tests/api/test_cluster.py)")
    async def check() -> None:
        store = await Store.open(data_dir)
        assert await store.schema_version() == len(MIGRATIONS)
        await store.close()
        store = await Store.open(data_dir)          # second open: nothing to migrate
        assert await store.schema_version() == len(MIGRATIONS)
        await store.close()

    asyncio.run(check())
    assert oct(os.stat(data_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(data_dir / DB_NAME).st_mode & 0o777) == "0o600"


def test_token_cli(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    out = pesto_cli("token", "create", "--name", "ci", "--rate-limit", "60",
                    "--monthly-limit", "1000", "--max-concurrency", "2", "--data-dir", data)
    secret = out.stdout.strip().splitlines()[-1]
    assert secret.startswith("pesto_") and len(secret) > 40
    again = pesto_cli("token", "create", "--name", "ci", "--data-dir", data, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    listing = pesto_cli("token", "list", "--data-dir", data).stdout
    assert "ci" in listing and "60" in listing and "1000" in listing
    assert secret not in listing
    assert secret not in (tmp_path / "data" / DB_NAME).read_bytes().decode("latin-1")
    with running_app(tmp_path / "data", secret) as api:
        assert api.post("/api/execute", HELLO).status_code == 200
        assert pesto_cli("token", "revoke", "ci", "--data-dir", data).returncode == 0
        assert_error(api.post("/api/execute", HELLO), 401, "TOKEN_REVOKED")
    assert pesto_cli("token", "revoke", "ci", "--data-dir", data, check=False).returncode == 1
    bad = pesto_cli("token", "create", "--name", "x", "--rate-limit", "0", "--data-dir", data,
                    check=False)
    assert bad.returncode == 2


def test_kill_9_with_20_jobs_then_restart_settles_every_job(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    out = pesto_cli("token", "create", "--name", "survivor", "--data-dir", str(data_dir))
    secret = out.stdout.strip().splitlines()[-1]
    headers = {"X-Pesto-Token": secret}
    server = Server(data_dir, "--workers", "2")
    try:
        ids = []
        for i in range(20):
            body = {**PY, "code": f"import time; time.sleep(1); print({i})"}
            response = httpx.post(server.url + "/api/jobs", json=body, headers=headers)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 10
        while "running" not in [httpx.get(f"{server.url}/api/jobs/{i}", headers=headers)
                                .json()["status"] for i in ids]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        server.kill9()
    server = Server(data_dir, "--workers", "2")
    try:
        final = {}
        deadline = time.monotonic() + 60
        for job_id in ids:
            while True:
                job = httpx.get(f"{server.url}/api/jobs/{job_id}", headers=headers).json()
                if job["status"] in ("completed", "failed", "cancelled"):
                    final[job_id] = job
                    break
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
        statuses = [final[i]["status"] for i in ids]
        assert set(statuses) <= {"completed", "failed"}, statuses
        assert len(final) == 20
        for i, job_id in enumerate(ids):
            job = final[job_id]
            if job["status"] == "completed":
                assert job["result"]["runtime"]["stdout"] == f"{i}\n"
            else:
                assert job["error"]["code"] == "INTERRUPTED", server.output()[-3000:]
        assert 1 <= statuses.count("failed") <= 2      # the ones running at the kill
        assert statuses.count("completed") >= 18
        # The token survived, and still works.
        assert httpx.post(server.url + "/api/execute", json=HELLO,
                          headers=headers).json()["runtime"]["stdout"] == "1\n"
        assert "survivor" in pesto_cli("token", "list", "--data-dir", str(data_dir)).stdout
    finally:
        server.stop()
    assert wait_uids_free(Path("/var/lib/pesto-sandbox"), *RESTART_UIDS) == []


def test_sigterm_lets_running_jobs_finish_and_keeps_queued_ones(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secret = add_token(data_dir, "graceful")
    headers = {"X-Pesto-Token": secret}
    server = Server(data_dir, "--workers", "1")
    try:
        body = {**PY, "code": "import time; time.sleep(1); print('finished')"}
        running = httpx.post(server.url + "/api/jobs", json=body, headers=headers).json()["id"]
        queued = httpx.post(server.url + "/api/jobs", json=HELLO, headers=headers).json()["id"]
        started = time.monotonic()
        server.proc.terminate()
        # uvicorn re-raises the signal after its graceful shutdown.
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 15
        assert "Traceback" not in server.output()
    finally:
        server.stop()
    server = Server(data_dir, "--workers", "1")
    try:
        job = httpx.get(f"{server.url}/api/jobs/{running}", headers=headers).json()
        assert job["status"] == "completed", job
        assert job["result"]["runtime"]["stdout"] == "finished\n"
        deadline = time.monotonic() + 30
        while (job := httpx.get(f"{server.url}/api/jobs/{queued}", headers=headers).json())[
                "status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job["status"] == "completed"
        log = server.output()
    finally:
        server.stop()
    # One INFO line per job, never the token nor the program's output.
    assert f"job {queued} token=graceful language=python" in log     # as the client sent it
    assert secret not in log and "finished\n" not in log.replace(f"job {running}", "")


def test_a_shared_data_dir_is_refused_not_chmod_ed(tmp_path: Path) -> None:
    from pesto.errors import ConfigError

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    (shared / "someone-else.txt").write_text("x")

    async def open_it() -> None:
        store = await Store.open(shared)
        await store.close()

    try:
        asyncio.run(open_it())
    except ConfigError as exc:
        assert "chmod 700" in exc.message
    else:
        raise AssertionError("a shared data dir was accepted")
    assert oct(os.stat(shared).st_mode & 0o777) == "0o755"
    proc = pesto_cli("token", "list", "--data-dir", str(shared), check=False)
    assert proc.returncode == 2 and "chmod 700" in proc.stderr
