"""A newcomer's install works wherever the clone lands (issue: a clone in
root's 0700 home made every run fail at its Landlock step).

The checkout is copied into a fresh 0700 directory, under a name with a
space, and installed through a symlink to it with the README's install.sh
(`--languages none`: the runtimes installed on this machine are reused;
`--no-link`: /usr/local/bin/pesto is left alone). Then a Python and a C
program run through `pesto run` (via the symlinked path) and through the
HTTP API of `pesto serve` (via the real path, with the space).

The private directory is made under /var/lib, not under /tmp: each run sees
its own empty /tmp, so a clone there would be invisible to runs rather than
unreachable, and would not show the problem.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import UID_BASE

REPO = Path(__file__).resolve().parent.parent
# Uids of these servers: after the blocks tests/conftest.py's users take.
UIDS = (UID_BASE + 500, 20)
LINK = Path("/usr/local/bin/pesto")
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "__pycache__", "*.pyc", "*.egg-info",
                                ".pytest_cache", "node_modules", "pesto-data")

PY = 'import sys\nprint("hello from python", sys.version_info[0])\n'
C = '#include <stdio.h>\nint main(void) { printf("hello from c\\n"); return 0; }\n'

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh and the sandbox need root")


def _link_target() -> str | None:
    return os.readlink(LINK) if LINK.is_symlink() else None


@pytest.fixture(scope="module")
def clone():
    """(private dir, real checkout path with a space, symlink to it), installed."""
    before = _link_target()
    private = Path(tempfile.mkdtemp(prefix="pesto-clone-", dir="/var/lib"))
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        real = private / "my pesto"
        shutil.copytree(REPO, real, ignore=IGNORE, symlinks=True)
        link = private / "link"
        link.symlink_to(real.name)
        started = time.monotonic()
        proc = subprocess.run(["bash", str(link / "install.sh"), "--languages", "none", "--no-link"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        print(f"install.sh --languages none in a private clone: {time.monotonic() - started:.0f} s")
        # The opt-out held: whatever the link pointed to, it still does.
        assert _link_target() == before
        yield private, real, link
    finally:
        shutil.rmtree(private, ignore_errors=True)
    assert _link_target() == before


def _env(private: Path) -> dict[str, str]:
    return {**os.environ, "PESTO_UID_BASE": str(UIDS[0]), "PESTO_UID_COUNT": str(UIDS[1]),
            "PESTO_DATA_DIR": str(private / "data"), "PESTO_WORKERS": "2"}


def _write(private: Path, name: str, text: str) -> Path:
    path = private / name
    path.write_text(text)
    return path


def test_pesto_run_python_and_c_through_a_symlink(clone):
    private, _real, link = clone
    pesto = link / ".venv" / "bin" / "pesto"
    for lang, source, expected in (("python", PY, "hello from python 3\n"),
                                   ("c", C, "hello from c\n")):
        src = _write(private, f"hello.{'py' if lang == 'python' else 'c'}", source)
        proc = subprocess.run([str(pesto), "run", lang, str(src)], capture_output=True,
                              text=True, timeout=120, env=_env(private))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == expected, proc.stderr


def test_doctor_passes_in_a_private_clone(clone):
    private, real, _link = clone
    proc = subprocess.run([str(real / ".venv" / "bin" / "pesto"), "doctor"], capture_output=True,
                          text=True, timeout=120, env=_env(private))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert any(line.startswith("paths") and " ok " in line for line in proc.stdout.splitlines()), \
        proc.stdout
    assert f"languages_dir={real}/languages" in proc.stdout


def test_api_runs_python_and_c_from_a_path_with_a_space(clone):
    private, real, _link = clone
    pesto = str(real / ".venv" / "bin" / "pesto")
    env = _env(private)
    token = subprocess.run([pesto, "token", "create", "--name", "newcomer"], capture_output=True,
                           text=True, timeout=60, env=env, check=True).stdout.strip().splitlines()[-1]
    port = free_port()
    log = open(private / "serve.log", "w")
    proc = subprocess.Popen([pesto, "serve", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, private / "serve.log")
        with httpx.Client(base_url=url, headers={"X-Pesto-Token": token}, timeout=60) as api:
            for lang, source, expected in (("python", PY, "hello from python 3\n"),
                                           ("c", C, "hello from c\n")):
                r = api.post("/api/execute", json={"language": lang, "code": source})
                assert r.status_code == 200, r.text
                assert r.json()["runtime"]["stdout"] == expected, r.text
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("pesto serve did not start:\n" + log.read_text()[-3000:])
