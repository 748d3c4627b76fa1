"""Every error code of the API.md table, each through the real app."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import PY, Api, add_token, assert_error, revoke, running_app

HELLO = {**PY, "code": "print(1)"}


@pytest.mark.parametrize("body, path", [
    ({"code": "print(1)"}, "$.language"),
    ({**PY, "code": 1}, "$.code"),
    ({**PY, "code": "x", "stdin": 5}, "$.stdin"),
    ({**PY, "code": "x", "args": "notalist"}, "$.args"),
    ({**PY, "code": "x", "args": [1]}, "$.args[0]"),
    ({**PY, "code": "x", "runTimeout": "5"}, "$.runTimeout"),
    ({**PY, "code": "x", "runTimeout": True}, "$.runTimeout"),
    ({**PY, "code": "x", "unknown": 1}, "$.unknown"),
    ({**PY, "files": [{"name": "a.py"}]}, "$.files[0].code"),
    ({**PY, "files": "a.py"}, "$.files"),
    ([1, 2], "$"),
    ("a string", "$"),
    (None, "$"),
])
def test_wrong_types_and_missing_fields(api: Api, body, path) -> None:
    response = api.client.post("/api/execute", content=json.dumps(body),
                               headers={**api.headers, "Content-Type": "application/json"})
    err = assert_error(response, 400, "INVALID_REQUEST")
    # Exactly the one bad field, by its path ("$" is the body itself).
    assert [line.split(": ", 1)[0] for line in err["details"]] == [path], err


@pytest.mark.parametrize("extra", [
    {"runTimeout": 0}, {"runTimeout": 30001}, {"compileTimeout": -1},
    {"memoryLimit": 1024}, {"memoryLimit": 1024 ** 4},
])
def test_out_of_range_limits(api: Api, extra) -> None:
    assert_error(api.post("/api/execute", {**HELLO, **extra}), 400, "INVALID_REQUEST")


def test_code_and_files_rules(api: Api) -> None:
    assert_error(api.post("/api/execute", PY), 400, "INVALID_REQUEST")
    too_many = [{"name": f"f{i}.py", "code": ""} for i in range(21)]
    assert_error(api.post("/api/execute", {**PY, "files": too_many}), 400, "INVALID_REQUEST")


def test_malformed_json(api: Api) -> None:
    for raw in (b"{", b"{'language': 'python'}", b"\xff\xfe", b"", b"[1,]"):
        response = api.client.post("/api/execute", content=raw,
                                   headers={**api.headers, "Content-Type": "application/json"})
        assert_error(response, 400, "INVALID_REQUEST")


def test_runtime_not_found(api: Api) -> None:
    assert_error(api.post("/api/execute", {"language": "cobol-77", "code": "x"}),
                 400, "RUNTIME_NOT_FOUND")
    assert_error(api.post("/api/jobs", {**HELLO, "version": "2.7"}), 400, "RUNTIME_NOT_FOUND")


def test_token_missing_and_invalid(api: Api) -> None:
    for method in ("post", "get"):
        path = "/api/execute" if method == "post" else "/api/jobs/x"
        call = getattr(api.client, method)
        kw = {"json": HELLO} if method == "post" else {}
        assert_error(call(path, **kw), 401, "TOKEN_MISSING")
        assert_error(call(path, headers={"X-Pesto-Token": "pesto_nope"}, **kw),
                     401, "TOKEN_INVALID")


def test_every_route_the_api_document_secures_needs_a_token_and_no_other(api: Api) -> None:
    """Auth is declared on the routes: a route in the OpenAPI document with a security
    requirement refuses a request without a token (before reading its body), and a
    route without one answers it (OPTIONS too)."""
    document = api.client.get("/schema/openapi.json").json()
    secured, public = [], []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            (secured if operation.get("security") else public).append(
                (method.upper(), path.replace("{job_id}", "x")))
    assert ("POST", "/api/execute") in secured and ("POST", "/api/v2/execute") in secured
    assert ("GET", "/api/ping") in public and ("GET", "/healthz") in public
    for method, path in secured:
        response = api.client.request(method, path, content=b"{")
        assert response.status_code == 401, (method, path, response.text)
        if not path.startswith("/api/v2/"):               # Piston's body is {"message"}
            assert response.json()["code"] == "TOKEN_MISSING"
        assert api.client.request("OPTIONS", path).status_code == 204, path
    for method, path in public:
        assert api.client.request(method, path).status_code != 401, (method, path)


def test_revocation_takes_effect_without_restart(api: Api) -> None:
    secret = add_token(api.data_dir, "short-lived")
    assert api.post("/api/execute", HELLO, token=secret).status_code == 200
    assert revoke(api.data_dir, "short-lived")
    body = assert_error(api.post("/api/execute", HELLO, token=secret), 401, "TOKEN_REVOKED")
    assert body["message"] == "Token has been revoked"
    assert api.post("/api/execute", HELLO).status_code == 200     # others unaffected


def test_unknown_route_and_wrong_method(api: Api) -> None:
    assert_error(api.get("/nope", token=None), 404, "NOT_FOUND")
    assert_error(api.get("/api/nope"), 404, "NOT_FOUND")
    assert_error(api.client.post("/api/ping"), 405, "METHOD_NOT_ALLOWED")
    assert_error(api.client.get("/api/execute", headers=api.headers), 405, "METHOD_NOT_ALLOWED")
    assert_error(api.client.put("/api/jobs/abc", headers=api.headers), 405, "METHOD_NOT_ALLOWED")


def test_request_too_large(api: Api) -> None:
    big = {**PY, "code": "#" * (1024 * 1024 + 1)}
    assert_error(api.post("/api/execute", big), 413, "REQUEST_TOO_LARGE")
    # Without Content-Length too (chunked upload).
    def chunks():
        for _ in range(40):
            yield b" " * 65536
    response = api.client.post("/api/jobs", content=chunks(),
                               headers={**api.headers, "Content-Type": "application/json"})
    assert_error(response, 413, "REQUEST_TOO_LARGE")


def test_unsupported_media_type(api: Api) -> None:
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        response = api.client.post("/api/execute", content=json.dumps(HELLO).encode(),
                                   headers={**api.headers, **headers})
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    ok = api.client.post("/api/execute", content=json.dumps(HELLO).encode(),
                         headers={**api.headers, "Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_rate_limited(api: Api) -> None:
    secret = add_token(api.data_dir, "limited", rate_limit=3)
    for _ in range(3):
        assert api.get("/api/jobs/none", token=secret).status_code == 404
    body = assert_error(api.get("/api/jobs/none", token=secret), 429, "RATE_LIMITED")
    assert "3" in body["message"]
    assert api.get("/api/jobs/none").status_code == 404        # other tokens unaffected


def test_quota_exceeded(api: Api) -> None:
    secret = add_token(api.data_dir, "quota", monthly_limit=2)
    assert api.post("/api/execute", HELLO, token=secret).status_code == 200
    assert api.post("/api/jobs", HELLO, token=secret).status_code == 202
    assert_error(api.post("/api/execute", HELLO, token=secret), 429, "QUOTA_EXCEEDED")


def test_too_many_jobs(api: Api) -> None:
    secret = add_token(api.data_dir, "one-at-a-time", max_concurrency=1)
    slow = {**PY, "code": "import time; time.sleep(20)", "runTimeout": 25000}
    first = api.post("/api/jobs", slow, token=secret).json()["id"]
    assert_error(api.post("/api/execute", HELLO, token=secret), 429, "TOO_MANY_JOBS")
    api.delete(f"/api/jobs/{first}", token=secret)
    assert api.post("/api/execute", HELLO, token=secret).status_code == 200


def test_queue_full(data_dir) -> None:
    with running_app(data_dir, workers=1, queue_size=2) as api:
        slow = {**PY, "code": "import time; time.sleep(20)", "runTimeout": 25000}
        ids = [api.post("/api/jobs", slow).json()["id"] for _ in range(3)]   # 1 running + 2 queued
        assert_error(api.post("/api/jobs", slow), 503, "QUEUE_FULL")
        assert_error(api.post("/api/execute", HELLO), 503, "QUEUE_FULL")
        assert_error(api.get("/healthz", token=None), 503, "QUEUE_FULL")
        for job_id in ids:
            assert api.delete(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
        assert api.get("/healthz", token=None).status_code == 200
        assert api.post("/api/execute", HELLO).status_code == 200


def test_internal_error_fails_the_job_and_the_server_keeps_serving(api: Api) -> None:
    # Fault injection at the engine boundary (not a mock of the sandbox): the
    # engine raising something unexpected is exactly the "bug" case.
    engine = api.services.engine
    real = engine.execute

    async def broken(request, job_id):
        raise RuntimeError("secret internal detail /etc/shadow")

    engine.execute = broken
    try:
        response = api.post("/api/execute", HELLO)
        body = assert_error(response, 500, "INTERNAL_ERROR")
        assert "secret" not in response.text and "shadow" not in response.text
        job_id = api.post("/api/jobs", HELLO).json()["id"]
        job = api.wait_job(job_id)
        assert job["status"] == "failed" and job["error"]["code"] == "INTERNAL_ERROR"
        assert "secret" not in json.dumps(job)
    finally:
        engine.execute = real
    assert body["message"]
    assert api.post("/api/execute", HELLO).json()["runtime"]["stdout"] == "1\n"
    assert api.get("/healthz", token=None).status_code == 200
