"""Start-up refuses a layout in which runs would fail (or see the data dir),
and a stage whose sandbox cannot be set up answers SANDBOX_SETUP_FAILED.

A language here is a real folder whose read path lies in a directory the
test makes private (0700), as a clone in root's home is: under /var/lib,
since a path under /tmp is hidden from runs by their own /tmp (a refusal of
its own, also tested).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pesto.config import load_settings
from pesto.errors import ConfigError
from tests.conftest import UID_BASE

REPO = Path(__file__).resolve().parent.parent
UIDS = (UID_BASE + 520, 10)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the check switches to an unprivileged uid")


@pytest.fixture
def private_dir():
    """A fresh directory run uids cannot enter (0700), outside /tmp."""
    path = Path(tempfile.mkdtemp(prefix="pesto-reach-", dir="/var/lib"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def languages_with(tmp_path: Path, read_path: str) -> Path:
    """A languages dir: Python, and "Walled", a Python whose read path is given."""
    langs = tmp_path / "languages"
    shutil.copytree(REPO / "languages" / "python", langs / "python")
    (langs / "walled").mkdir()
    (langs / "walled" / "language.toml").write_text(
        'language = "Walled"\nversion = "1.0"\nextension = "py"\n'
        'run = ["/usr/bin/python3", "-E", "-s", "{file}"]\n'
        f'read_paths = ["{read_path}"]\n')
    return langs


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pesto.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PESTO_UID_BASE": str(UIDS[0]),
                               "PESTO_UID_COUNT": str(UIDS[1]), **env})


def test_doctor_and_serve_refuse_a_language_runs_cannot_reach(tmp_path, private_dir):
    runtime = private_dir / "runtime"
    runtime.mkdir(mode=0o755)
    env = {"PESTO_LANGUAGES_DIR": str(languages_with(tmp_path, str(runtime))),
           "PESTO_DATA_DIR": str(tmp_path / "data")}
    doctor = cli("doctor", **env)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert f"{runtime} (needed by walled)" in doctor.stdout, doctor.stdout
    assert f"chmod o+x {private_dir}" in doctor.stdout, doctor.stdout
    assert "refuses to start" in doctor.stderr
    serve = cli("serve", "--host", "127.0.0.1", "--port", "1", **env)
    assert serve.returncode == 2, serve.stderr
    assert f"{runtime} (needed by walled)" in serve.stderr and "Traceback" not in serve.stderr
    # Made reachable, the same layout passes.
    private_dir.chmod(0o711)
    doctor = cli("doctor", **env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_engine_start_refuses_too(tmp_path, private_dir):
    """`pesto run` and the app's lifespan go through Engine.start: the spawner checks."""
    from pesto.engine import Engine
    runtime = private_dir / "runtime"
    runtime.mkdir(mode=0o755)
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"),
                             languages_dir=str(languages_with(tmp_path, str(runtime))),
                             uid_base=UIDS[0], uid_count=UIDS[1], workers=1)
    with pytest.raises(ConfigError, match="needed by walled"):
        asyncio.run(Engine.start(settings))


def test_a_path_under_tmp_is_refused_where_runs_get_their_own_tmp(tmp_path):
    hidden = tmp_path / "runtime"    # pytest's tmp_path lives under /tmp
    hidden.mkdir()
    os.chmod(tmp_path, 0o755)
    doctor = cli("doctor", "--json", PESTO_LANGUAGES_DIR=str(languages_with(tmp_path, str(hidden))),
                 PESTO_DATA_DIR=str(tmp_path / "data"))
    import json
    report = json.loads(doctor.stdout)
    if not report["namespaces"]["enabled"]:
        pytest.skip("no namespaces here: runs share the host's /tmp")
    assert doctor.returncode == 1
    assert any("sees as its own empty tmpfs" in p for p in report["paths"]["problems"]), report


def test_data_dir_runs_could_read_is_refused(private_dir):
    private_dir.chmod(0o755)
    data = private_dir / "open-data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    doctor = cli("doctor", "--data-dir", str(data))
    assert doctor.returncode == 1, doctor.stdout
    assert f"{data} (the data dir: database and tokens): a run's uid can list or enter it" \
        in doctor.stdout, doctor.stdout
    data.chmod(0o700)
    assert cli("doctor", "--data-dir", str(data)).returncode == 0


def test_sandbox_dir_runs_cannot_enter_is_refused(tmp_path, private_dir):
    sandbox = private_dir / "sandbox"
    serve = cli("serve", "--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1",
                "--port", "1", PESTO_SANDBOX_DIR=str(sandbox))
    assert serve.returncode == 2
    assert "the work root of every run" in serve.stderr and "Traceback" not in serve.stderr
    assert f"chmod o+x {private_dir}" in serve.stderr, serve.stderr


def test_a_stage_whose_setup_fails_answers_sandbox_setup_failed(tmp_path, private_dir):
    """Reachable at start, walled off later: the job gets a clear code, and
    the server goes on serving."""
    from tests.api.conftest import assert_error, running_app
    private_dir.chmod(0o755)
    runtime = private_dir / "runtime"
    runtime.mkdir(mode=0o755)
    langs = languages_with(tmp_path, str(runtime))
    with running_app(tmp_path / "data", languages_dir=str(langs), uid_base=UIDS[0],
                     uid_count=UIDS[1], workers=1) as api:
        ok = api.post("/api/execute", {"language": "walled", "code": "print('in')"})
        assert ok.status_code == 200 and ok.json()["runtime"]["stdout"] == "in\n", ok.text
        private_dir.chmod(0o700)
        r = api.post("/api/execute", {"language": "walled", "code": "print('in')"})
        body = assert_error(r, 500, "SANDBOX_SETUP_FAILED")
        assert "landlock" in body["message"] and "pesto doctor" in body["message"], body
        assert str(private_dir) not in body["message"]   # paths are for the log
        again = api.post("/api/execute", {"language": "python", "code": "print('still up')"})
        assert again.status_code == 200 and again.json()["runtime"]["stdout"] == "still up\n"
