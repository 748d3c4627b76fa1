"""Every route of API.md against the real app, a real SQLite file and the real sandbox."""

from __future__ import annotations

import stat
import time

from tests.api.conftest import PY, Api, add_token, assert_error, sqlite_only

HELLO = {**PY, "code": "print('Hello World')"}
STAGE_FIELDS = {"stdout", "stderr", "output", "exitCode", "signal", "status", "wallTime",
                "cpuTime", "memory", "truncated"}


def test_ping_healthz_runtimes_and_openapi(api: Api) -> None:
    assert api.get("/api/ping", token=None).json() == {"message": "OK"}
    assert api.get("/healthz", token=None).json() == {"status": "ok"}
    for path in ("/api/runtimes", "/api/list-runtimes"):
        response = api.get(path, token=None)
        assert response.status_code == 200
        runtimes = response.json()["runtime"]
        python = [r for r in runtimes if r["language"] == "Python"]
        assert python and set(python[0]) == {"language", "version", "aliases", "compiled"}
        assert python[0]["compiled"] is False and "py" in python[0]["aliases"]
    schema = api.get("/schema/openapi.json", token=None)
    assert schema.status_code == 200
    assert "/api/execute" in schema.json()["paths"]


def test_execute_python(api: Api) -> None:
    response = api.post("/api/execute", {**HELLO, "language": "Python", "version": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "language", "version", "compile", "runtime"}
    assert body["language"] == "Python"
    assert set(body["compile"]) == STAGE_FIELDS == set(body["runtime"])
    # Python has no compile stage: "skipped" with exitCode 0, as the original service.
    assert body["compile"]["status"] == "skipped" and body["compile"]["exitCode"] == 0
    assert body["runtime"]["status"] == "ok"
    assert body["runtime"]["stdout"] == "Hello World\n"
    assert body["runtime"]["exitCode"] == 0
    job = api.get(f"/api/jobs/{body['id']}").json()
    assert job["status"] == "completed" and job["error"] is None
    assert job["result"] == body
    assert job["createdAt"].endswith("Z") and job["finishedAt"] >= job["startedAt"]


def test_execute_stdin_args_and_program_failure_is_200(api: Api) -> None:
    code = "import sys; print(sys.stdin.read().upper(), sys.argv[1:]); sys.exit(3)"
    response = api.post("/api/execute", {**PY, "code": code, "stdin": "abc", "args": ["x", "y"]})
    assert response.status_code == 200
    run = response.json()["runtime"]
    assert run["stdout"] == "ABC ['x', 'y']\n"
    assert run["status"] == "error" and run["exitCode"] == 3


def test_execute_files_with_entrypoint(api: Api) -> None:
    files = [{"name": "lib/helper.py", "code": "X = 42"},
             {"name": "main.py", "code": "import sys; sys.path.insert(0, 'lib')\n"
                                         "import helper; print(helper.X)", "entrypoint": True}]
    response = api.post("/api/execute", {**PY, "files": files})
    assert response.status_code == 200, response.text
    assert response.json()["runtime"]["stdout"] == "42\n"


def test_async_job_lifecycle(api: Api) -> None:
    response = api.post("/api/jobs", HELLO)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/api/jobs/{body['id']}"
    job = api.wait_job(body["id"])
    assert job["status"] == "completed"
    assert job["result"]["runtime"]["stdout"] == "Hello World\n"
    assert job["result"]["id"] == body["id"]


def test_cancel_running_and_queued_jobs(data_dir) -> None:
    from tests.api.conftest import running_app

    with running_app(data_dir, workers=1) as api:
        slow = {**PY, "code": "import time; time.sleep(20)", "runTimeout": 25000}
        running = api.post("/api/jobs", slow).json()["id"]
        queued = api.post("/api/jobs", slow).json()["id"]
        api.wait_status(running, "running")
        assert api.get(f"/api/jobs/{queued}").json()["status"] == "queued"

        response = api.delete(f"/api/jobs/{queued}")
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"

        started = time.monotonic()
        response = api.delete(f"/api/jobs/{running}")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "cancelled" and body["finishedAt"]
        assert body["error"] is None and body["result"] is None
        assert time.monotonic() - started < 5
        # Cancelling again, or a finished job, answers it as it stands.
        assert api.delete(f"/api/jobs/{running}").json()["status"] == "cancelled"
        # The slot is free again.
        assert api.post("/api/execute", HELLO).json()["runtime"]["stdout"] == "Hello World\n"
        assert api.services.scheduler.stats()["running"] == 0


def test_jobs_are_private_to_their_token(api: Api) -> None:
    other = add_token(api.data_dir, "other")
    job_id = api.post("/api/execute", HELLO).json()["id"]
    assert_error(api.get(f"/api/jobs/{job_id}", token=other), 404, "NOT_FOUND")
    assert_error(api.delete(f"/api/jobs/{job_id}", token=other), 404, "NOT_FOUND")
    assert_error(api.get("/api/jobs/doesnotexist"), 404, "NOT_FOUND")
    assert api.get(f"/api/jobs/{job_id}").status_code == 200


def test_data_dir_is_private(api: Api) -> None:
    sqlite_only(api.data_dir, "the SQLite file's directory")
    mode = stat.S_IMODE(api.data_dir.stat().st_mode)
    assert mode == 0o700
    assert (api.data_dir / "pesto.sqlite3").exists()
