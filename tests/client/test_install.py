"""The client installs on its own: a fresh venv, `pip install clients/python`, nothing else.

pip resolves its one dependency (httpx) from the package index; the
server's packages (litestar, msgspec, attrs, pesto) must not be there, and
the installed client must still talk to a real server.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.client.conftest import CLIENT_SRC

SCRIPT = textwrap.dedent("""
    import importlib.util, sys
    from pesto_client import Client, Program
    import pesto_client
    server_side = [m for m in ("pesto", "litestar", "msgspec", "attrs", "cattrs", "uvicorn",
                               "aiosqlite") if importlib.util.find_spec(m) is not None]
    assert not server_side, server_side
    assert "site-packages" in pesto_client.__file__, pesto_client.__file__
    with Client(sys.argv[1], sys.argv[2]) as pesto:
        print(pesto.execute(Program("python", "print(6 * 7)")).run.stdout, end="")
""")


def test_installs_and_runs_with_only_httpx(served, tmp_path: Path):
    venv = tmp_path / "venv"
    # Built from a copy: pip builds in the source tree (build/, *.egg-info).
    source = tmp_path / "pesto-client"
    shutil.copytree(CLIENT_SRC, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # cwd elsewhere: nothing of this checkout may be importable by accident.
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
         str(source)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"],
                            capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    names = {line.split("==")[0].lower() for line in listed.split()}
    assert "pesto-client" in names and "httpx" in names
    assert not names & {"pesto", "litestar", "msgspec", "attrs", "cattrs", "uvicorn"}, names
    run = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", SCRIPT, served.url,
                          served.token], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "42\n"
