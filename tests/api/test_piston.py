"""Piston's v2 API (pesto/api/piston.py) over the real app, store and sandbox.

Shapes, messages and statuses are Piston's own (engineer-man/piston,
api/src/api/v2.js and job.js); tests/compat/ runs a published Piston client.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from pesto.validation import validate_request
from tests.api.conftest import Api, add_token, running_app

@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app for the module: the checks here do not change its state for each other."""
    with running_app(tmp_path_factory.mktemp("piston") / "data") as running:
        yield running


STAGE = {"stdout", "stderr", "code", "signal", "output", "memory", "message", "status",
         "cpu_time", "wall_time"}


def run(api: Api, body: dict, **headers: str):
    headers = headers or {"Authorization": api.secret}
    return api.client.post("/api/v2/execute", json=body, headers=headers)


def py(code: str, **extra) -> dict:
    return {"language": "python", "version": "*", "files": [{"content": code}], **extra}


def message(response, status: int) -> str:
    """Piston's error body: exactly {"message"}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message"} and body["message"], body
    return body["message"]


def test_runtimes_shape(api: Api) -> None:
    runtimes = api.client.get("/api/v2/runtimes").json()
    assert isinstance(runtimes, list) and runtimes
    for rt in runtimes:
        assert set(rt) == {"language", "version", "aliases"}
        assert rt["language"] == rt["language"].lower()
    assert any(rt["language"] == "python" and "py" in rt["aliases"] for rt in runtimes)


def test_interpreted_answer(api: Api) -> None:
    response = run(api, py("import sys\nprint(sys.argv[1:], repr(sys.stdin.read()))",
                           stdin="in", args=["1", "2", "3"],
                           compile_memory_limit=-1, run_memory_limit=-1))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"run", "language", "version"}         # no compile stage
    assert body["language"] == "python"
    assert body["version"] == api.services.engine.registry.resolve("python").version
    assert set(body["run"]) == STAGE
    # Piston adds the missing final newline to stdin.
    assert body["run"]["stdout"] == "['1', '2', '3'] 'in\\n'\n"
    assert body["run"]["code"] == 0 and body["run"]["status"] is None
    assert body["run"]["signal"] is None and body["run"]["message"] is None
    assert body["run"]["wall_time"] >= 0 and body["run"]["memory"] > 0


def test_compiled_answer_and_failed_compile(api: Api) -> None:
    ok = run(api, {"language": "c", "version": "12.x",
                   "files": [{"content": "int main(void) { return 3; }"}]}).json()
    assert set(ok) == {"compile", "run", "language", "version"}
    assert ok["compile"]["code"] == 0 and ok["compile"]["status"] is None
    assert ok["run"]["code"] == 3 and ok["run"]["status"] == "RE"
    assert ok["run"]["message"] == "Exited with error status 3"
    bad = run(api, {"language": "c", "version": "*", "files": [{"content": "int main( {"}]})
    bad = bad.json()
    assert bad["compile"]["status"] == "RE" and bad["compile"]["code"] != 0
    assert "error" in bad["compile"]["stderr"]
    assert bad["run"] == bad["compile"]          # Piston's "backward compatibility"


@pytest.mark.parametrize("selector", ["*", "3.x", "3", "^3.0.0", ">=3 <4", "latest"])
def test_version_selectors(api: Api, selector: str) -> None:
    assert run(api, {**py("print(1)"), "version": selector}).status_code == 200


@pytest.mark.parametrize("selector", ["2.x", "<3", "4.0.0", "nonsense"])
def test_unknown_runtime(api: Api, selector: str) -> None:
    text = message(run(api, {**py("print(1)"), "version": selector}), 400)
    assert text == f"python-{selector} runtime is unknown"
    assert message(run(api, {**py("x"), "language": "cobol"}), 400) == "cobol-* runtime is unknown"


@pytest.mark.parametrize("body, text", [
    ({"version": "*", "files": [{"content": "x"}]}, "language is required as a string"),
    ({"language": 5, "version": "*", "files": [{"content": "x"}]},
     "language is required as a string"),
    ({"language": "python", "files": [{"content": "x"}]}, "version is required as a string"),
    ({"language": "python", "version": "*"}, "files is required as an array"),
    ({"language": "python", "version": "*", "files": "x"}, "files is required as an array"),
    ({"language": "python", "version": "*", "files": [{"name": "a.py"}]},
     "files[0].content is required as a string"),
    ({"language": "python", "version": "*", "files": [{"content": "eA==", "encoding": "base64"}]},
     "files must include at least one utf8 encoded file"),
    (py("x", run_timeout="5"), "If specified, run_timeout must be a number"),
    (py("x", run_timeout=10 ** 9), "run_timeout cannot exceed the configured limit of 30000"),
    (py("x", compile_cpu_time=-5), "compile_cpu_time must be non-negative"),
    (py("x", run_memory_limit=10 ** 12),
     "run_memory_limit cannot exceed the configured limit of 536870912"),
    (py("x", args=[1]), "args must be an array of strings"),
    (py("x", stdin=3), "stdin must be a string"),
])
def test_validation_messages(api: Api, body: dict, text: str) -> None:
    assert message(run(api, body), 400) == text


def test_files_encodings_and_names(api: Api) -> None:
    blob = bytes(range(256))
    code = ("import hashlib, sys\n"
            "print(open('data/blob.bin', 'rb').read() == bytes(range(256)))\n"
            "print(open('h.txt', 'rb').read())\n"
            "print(open('file3.code').read())\n"
            "import helper; print(helper.X)\n")
    body = {"language": "python", "version": "*", "files": [
        {"name": "data/blob.bin", "content": base64.b64encode(blob).decode(),
         "encoding": "base64"},
        {"content": code},                                   # the first utf8 file runs
        {"name": "h.txt", "content": b"\xfe\x00ok".hex(), "encoding": "hex"},
        {"content": "unnamed"},
        {"name": "helper.py", "content": "X = 42", "encoding": "something-else"},
    ]}
    response = run(api, body)
    assert response.status_code == 200, response.text
    assert response.json()["run"]["stdout"] == "True\nb'\\xfe\\x00ok'\nunnamed\n42\n"


def test_bad_file_name_is_refused(api: Api) -> None:
    text = message(run(api, {"language": "python", "version": "*",
                             "files": [{"name": "../x.py", "content": "print(1)"}]}), 400)
    assert "files[0].name" in text
    text = message(run(api, {"language": "python", "version": "*", "files": [
        {"content": "print(1)"}, {"name": "b.bin", "content": "@@", "encoding": "base64"}]}), 400)
    assert "files[1].code: not valid base64" in text


def test_limits_are_applied(api: Api) -> None:
    slow = run(api, py("while True: pass", run_timeout=300)).json()["run"]
    assert slow["status"] == "TO" and slow["signal"] == "SIGKILL" and slow["code"] is None
    assert slow["wall_time"] < 2000
    # A CPU-time limit below the timeout lowers it.
    cpu = run(api, py("while True: pass", run_cpu_time=300)).json()["run"]
    assert cpu["status"] == "TO" and cpu["wall_time"] < 2000
    hog = run(api, py("x = bytearray(200 * 2**20)", run_memory_limit=32 * 2**20)).json()["run"]
    assert hog["status"] in ("SG", "RE") and hog["code"] != 0, hog
    # -1 and 0 keep the default: the same program with room to spare runs.
    fine = run(api, py("x = bytearray(8 * 2**20); print('ok')", run_memory_limit=-1,
                       compile_memory_limit=-1, run_timeout=0)).json()["run"]
    assert fine["stdout"] == "ok\n" and fine["status"] is None


def test_signal_and_output_statuses(api: Api) -> None:
    crash = run(api, py("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")).json()["run"]
    assert crash["status"] == "SG" and crash["signal"] == "SIGSEGV" and crash["code"] is None
    assert crash["message"] == "Caught fatal signal 11"
    loud = run(api, py("import sys\nwhile True: sys.stdout.write('x' * 4096)")).json()["run"]
    assert loud["status"] == "OL" and loud["message"] == "stdout length exceeded"
    noisy = run(api, py("import sys\nwhile True: sys.stderr.write('x' * 4096)")).json()["run"]
    assert noisy["status"] == "EL" and noisy["message"] == "stderr length exceeded"


def test_content_types(api: Api) -> None:
    raw = json.dumps(py("print(1)")).encode()
    for media in ("text/plain;charset=UTF-8", None, "application/json"):
        headers = {"Authorization": api.secret}
        if media:
            headers["Content-Type"] = media
        response = api.client.post("/api/v2/execute", content=raw, headers=headers)
        assert response.status_code == 200, (media, response.text)
    form = api.client.post("/api/v2/execute", data={"language": "python"},
                           headers={"Authorization": api.secret})
    assert message(form, 415) == "requests must be of type application/json"
    broken = api.client.post("/api/v2/execute", content=b"{", headers={"Authorization": api.secret})
    assert message(broken, 400).startswith("malformed JSON")
    huge = run(api, py("#" * (1024 * 1024 + 1)))
    assert message(huge, 413)


def test_auth_headers(api: Api) -> None:
    for headers in ({"Authorization": api.secret}, {"Authorization": f"Bearer {api.secret}"},
                    {"X-Pesto-Token": api.secret}):
        assert run(api, py("print(1)"), **headers).status_code == 200
    assert message(run(api, py("print(1)"), Accept="*/*"), 401).startswith(
        "Token must be supplied")
    assert message(run(api, py("print(1)"), Authorization="pesto_nope"), 401).startswith(
        "Token not registered")


def test_job_is_stored_like_any_other(api: Api) -> None:
    response = run(api, py("print('stored')", stdin="abc"))
    job_id = response.headers["x-pesto-job"]
    job = api.wait_job(job_id)
    assert job["status"] == "completed"
    assert job["result"]["runtime"]["stdout"] == "stored\n"
    # What the store keeps is a native request a restart can run again.
    with contextlib.closing(sqlite3.connect(api.services.store.path)) as db:
        row = db.execute("SELECT request FROM jobs WHERE id = ?", (job_id,)).fetchone()
    stored = validate_request(json.loads(row[0]), api.services.settings,
                              api.services.engine.registry)
    assert stored.stdin == "abc\n" and stored.files[0].entrypoint
    other = add_token(api.data_dir, "other")
    assert api.get(f"/api/jobs/{job_id}", token=other).status_code == 404


def test_anonymous_off_by_default_and_counted_when_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = add_token(data, "piston-public", monthly_limit=2)
    with running_app(data, secret, piston_anonymous_token="piston-public") as api:
        # The body piston-client (npm) sends: no header, every field filled.
        body = {"language": "python", "version": "3.11.2", "files": [{"content": "print(7)"}],
                "stdin": "", "args": ["1", "2", "3"], "compile_timeout": 10000,
                "run_timeout": 3000, "compile_memory_limit": -1, "run_memory_limit": -1}
        raw = json.dumps(body).encode()
        answer = api.client.post("/api/v2/execute", content=raw,
                                 headers={"Content-Type": "text/plain;charset=UTF-8"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["run"]["stdout"] == "7\n"
        assert api.client.post("/api/v2/execute", content=raw).status_code == 200
        # Counted against the named token: its monthly limit of 2 is used up.
        over = api.client.post("/api/v2/execute", content=raw)
        assert message(over, 429).startswith("Monthly limit exceeded")
        assert int(over.headers["retry-after"]) >= 1
        assert api.post("/api/execute", {"language": "python", "code": "1"}).status_code == 429
    with running_app(tmp_path / "data2", piston_anonymous_token="no-such-token") as api:
        assert message(run(api, py("1"), Accept="*/*"), 401).startswith("Token not registered")
    with running_app(tmp_path / "data3") as api:
        assert message(run(api, py("1"), Accept="*/*"), 401).startswith("Token must be supplied")


def test_anonymous_token_setting_sources(tmp_path: Path) -> None:
    from pesto.config import load_settings
    assert load_settings(env={}).piston_anonymous_token is None          # off by default
    assert load_settings(env={"PESTO_PISTON_ANONYMOUS_TOKEN": "public"}) \
        .piston_anonymous_token == "public"
    config = tmp_path / "pesto.toml"
    config.write_text('piston_anonymous_token = "from-file"\n')
    assert load_settings(env={}, config_file=config).piston_anonymous_token == "from-file"
