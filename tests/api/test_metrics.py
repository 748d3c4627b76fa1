"""GET /metrics counts what happened; `--log-format json` logs it one object per line.

The counters are read with prometheus_client's own parser, before and after
real runs through the real app, and compared by difference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import PY, Server, add_token, assert_error, running_app


def scrape(api, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = api.client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def moved(before, after, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_counters_move_with_runs_errors_and_refusals(data_dir: Path):
    with running_app(data_dir) as api:
        limited = add_token(data_dir, "limited", rate_limit=1)
        before = scrape(api)
        # Named three ways: one label value, the runtime's own name.
        for name, code in (("python", "print(1)"), ("PY", "print(2)"),
                           ("Python3", "import sys; sys.exit(3)")):
            assert api.post("/api/execute", {"language": name, "code": code}).status_code == 200
        slow = api.post("/api/execute", {**PY, "code": "import time; time.sleep(5)",
                                         "runTimeout": 100}).json()
        assert slow["runtime"]["status"] == "timeout"
        assert_error(api.post("/api/execute", {**PY, "runTimeout": 0, "code": "1"}), 400,
                     "INVALID_REQUEST")
        assert_error(api.get("/no/such/route"), 404, "NOT_FOUND")
        job = api.post("/api/jobs", {**PY, "code": "print(4)"}).json()["id"]
        assert api.wait_job(job)["status"] == "completed"
        assert api.get(f"/api/jobs/{job}").status_code == 200
        assert api.post("/api/execute", {**PY, "code": "1"}, token=limited).status_code == 200
        assert_error(api.post("/api/execute", {**PY, "code": "1"}, token=limited), 429,
                     "RATE_LIMITED")
        time.sleep(0.2)    # the last job's outcome is recorded right after its answer
        after = scrape(api)

    lang = dict(language="Python", version="3.11.2")
    # 5 completed /api/execute runs (the sys.exit(3) one is completed: the
    # program failed, not the job) and 1 /api/jobs run.
    assert moved(before, after, "pesto_jobs_total", **lang, status="completed") == 6
    assert moved(before, after, "pesto_jobs_total", **lang, status="failed") == 0
    assert not [key for key in after if key[0] == "pesto_jobs_total"
                and dict(key[1])["language"] != "Python"]
    assert moved(before, after, "pesto_stage_duration_seconds_count",
                 language="Python", stage="run") == 6
    # Python compiles nothing: no compile stage observed.
    assert moved(before, after, "pesto_stage_duration_seconds_count",
                 language="Python", stage="compile") == 0
    # The timeout run's wall time (>= 100 ms) landed above the 0.05 s bucket.
    assert moved(before, after, "pesto_stage_duration_seconds_bucket",
                 language="Python", stage="run", le="0.05") <= 5
    assert moved(before, after, "pesto_queue_wait_seconds_count") == 6
    ex = dict(method="POST", route="/api/execute")
    assert moved(before, after, "pesto_http_responses_total", **ex, status="200") == 5
    assert moved(before, after, "pesto_http_responses_total", **ex, status="400") == 1
    assert moved(before, after, "pesto_http_responses_total", **ex, status="429") == 1
    assert moved(before, after, "pesto_http_responses_total",
                 method="POST", route="/api/jobs", status="202") == 1
    assert moved(before, after, "pesto_http_responses_total",
                 method="GET", route="/api/jobs/{job_id}", status="200") >= 2
    # An unknown path is one label value, not the path itself.
    assert moved(before, after, "pesto_http_responses_total",
                 method="GET", route="unmatched", status="404") == 1
    assert not any("/no/such/route" in str(key) for key in after)
    assert moved(before, after, "pesto_token_refusals_total",
                 kind="rate_limited", token="limited") == 1
    assert after[("pesto_sandbox_failures_total", ())] == 0
    # Gauges read at scrape time: 4 slots, all idle again, nothing queued.
    assert after[("pesto_slots", ())] == 4
    assert after[("pesto_slots_busy", ())] == 0
    assert after[("pesto_queue_depth", ())] == 0
    assert after[("pesto_slots_ready", ())] == 4


def test_piston_route_refusals_are_counted_like_the_native_ones(data_dir: Path):
    """Piston's route answers its own error body; its token refusals still count."""
    piston = {"language": "python", "version": "*", "files": [{"content": "print(1)"}]}
    with running_app(data_dir) as api:
        tokens = {"rated": add_token(data_dir, "rated", rate_limit=1),
                  "monthly": add_token(data_dir, "monthly", monthly_limit=1),
                  "single": add_token(data_dir, "single", max_concurrency=1)}
        before = scrape(api)
        for name in ("rated", "monthly"):
            assert api.post("/api/v2/execute", piston, token=tokens[name]).status_code == 200
            refused = api.post("/api/v2/execute", piston, token=tokens[name])
            assert refused.status_code == 429 and list(refused.json()) == ["message"]
        sleeper = api.post("/api/jobs", {**PY, "code": "import time; time.sleep(3)"},
                           token=tokens["single"]).json()["id"]
        busy = api.post("/api/v2/execute", piston, token=tokens["single"])
        assert busy.status_code == 429 and "at once" in busy.json()["message"]
        assert api.delete(f"/api/jobs/{sleeper}", token=tokens["single"]).status_code == 200
        after = scrape(api)
    for kind, token in (("rate_limited", "rated"), ("quota_exceeded", "monthly"),
                        ("too_many_jobs", "single")):
        assert moved(before, after, "pesto_token_refusals_total", kind=kind, token=token) == 1


def test_gauges_show_busy_slots_and_queue(data_dir: Path):
    with running_app(data_dir, workers=1) as api:
        first = api.post("/api/jobs", {**PY, "code": "import time; time.sleep(20)"}).json()["id"]
        api.wait_status(first, "running")
        second = api.post("/api/jobs", {**PY, "code": "print(1)"}).json()["id"]
        now = scrape(api)
        assert now[("pesto_slots_busy", ())] == 1
        assert now[("pesto_slots_ready", ())] == 0
        assert now[("pesto_queue_depth", ())] == 1
        api.delete(f"/api/jobs/{second}")
        api.delete(f"/api/jobs/{first}")
        after = scrape(api)
    assert after[("pesto_jobs_total", (("language", "Python"), ("status", "cancelled"),
                                       ("version", "3.11.2")))] == 2
    # The queued job that was cancelled never waited for a slot to the end.
    assert after[("pesto_queue_wait_seconds_count", ())] == 1


def test_metrics_token_guards_the_route(data_dir: Path):
    with running_app(data_dir, metrics_token="m-secret") as api:
        assert_error(api.client.get("/metrics"), 401, "TOKEN_MISSING")
        assert_error(api.client.get("/metrics", headers={"Authorization": "Bearer nope"}), 401,
                     "TOKEN_INVALID")
        # The API token is not the metrics token.
        assert_error(api.client.get("/metrics", headers={"Authorization": f"Bearer {api.secret}"}),
                     401, "TOKEN_INVALID")
        samples = scrape(api, {"Authorization": "Bearer m-secret"})
        assert ("pesto_slots", ()) in samples


def test_metrics_route_is_not_in_the_api_document(api):
    assert "/metrics" not in api.client.get("/schema/openapi.json").json()["paths"]


def log_of(server: Server) -> str:
    return (server.data_dir.parent / f"serve-{server.port}.log").read_text()


def test_json_log_lines_carry_the_job_fields_and_no_output_or_token(tmp_path: Path):
    data_dir = tmp_path / "data"
    secret = add_token(data_dir, "json-logger")
    server = Server(data_dir, "--log-format", "json")
    marker = "program-output-must-not-be-logged"
    try:
        response = httpx.post(server.url + "/api/execute", headers={"X-Pesto-Token": secret},
                              json={**PY, "code": f"print('{marker}')"}, timeout=30)
        assert response.status_code == 200
        job_id = response.json()["id"]
        assert httpx.get(server.url + "/nowhere", timeout=5).status_code == 404
    finally:
        server.stop()
    text = log_of(server)
    assert marker not in text and secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    job_lines = [e for e in lines if e.get("job") == job_id]
    assert len(job_lines) == 1, lines
    entry = job_lines[0]
    assert entry["level"] == "info" and entry["logger"] == "pesto.jobs"
    assert entry["token"] == "json-logger"
    # The language as the client sent it, like the answer and the text line.
    assert (entry["language"], entry["version"], entry["status"], entry["compile"],
            entry["run"]) == ("python", "3.11.2", "completed", "skipped", "ok")
    assert all(isinstance(entry[k], int) for k in ("wall_ms", "queued_ms", "run_ms"))
    # The text form carries the same facts in its message.
    assert f"job {job_id} token=json-logger language=python version=3.11.2" in entry["message"]


def test_text_log_stays_the_default(tmp_path: Path):
    data_dir = tmp_path / "data"
    secret = add_token(data_dir)
    server = Server(data_dir)
    try:
        assert httpx.post(server.url + "/api/execute", headers={"X-Pesto-Token": secret},
                          json={**PY, "code": "print(1)"}, timeout=30).status_code == 200
    finally:
        server.stop()
    lines = [line for line in log_of(server).splitlines() if " pesto.jobs: job " in line]
    assert len(lines) == 1 and not lines[0].startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_a_judged_job_counts_once_with_a_run_per_case(data_dir: Path):
    with running_app(data_dir) as api:
        before = scrape(api)
        answer = api.post("/api/execute", {**PY, "code": "print(int(input()) * 2)", "testCases": [
            {"stdin": "1", "expectedOutput": "2"}, {"stdin": "2", "expectedOutput": "5"},
            {"stdin": "3", "expectedOutput": "6"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["summary"]["passed"] == 2
        time.sleep(0.2)
        after = scrape(api)
    assert moved(before, after, "pesto_jobs_total", language="Python", version="3.11.2",
                 status="completed") == 1
    assert moved(before, after, "pesto_stage_duration_seconds_count",
                 language="Python", stage="run") == 3
