"""Fixtures for the compatibility suites: the published clients, a real server.

`node_modules` installs the clients pinned by package.json/package-lock.json
from the npm registry (`npm ci`, once: .ci/run does it before the tests);
`server` is a real `pesto serve` on a free port whose anonymous Piston
traffic counts against the token `piston-public`; `node(script, ...)` runs
one check script of js/ against it and returns the JSON line it printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.api.conftest import Server, add_token, revoke, wait_uids_free
from tests.conftest import UID_BASE

HERE = Path(__file__).resolve().parent
# Below tests/conftest.py's sub-ranges (engine 0-400, layer tests 450+).
COMPAT_UIDS = (UID_BASE + 400, 40)


def _stamp() -> str:
    return (HERE / "package-lock.json").read_text()


@pytest.fixture(scope="session")
def node_modules() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed to run the published JavaScript clients; "
                    "install.sh installs them with the javascript language")
    modules = HERE / "node_modules"
    stamp = modules / ".pesto-lock"
    # Installed again whenever the lock file changed since the last install.
    if not stamp.is_file() or stamp.read_text() != _stamp():
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund",
                               "--loglevel=error"], cwd=HERE, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, "npm ci failed:\n" + done.stdout + done.stderr
        stamp.write_text(_stamp())
    return modules


class Compat:
    """The running server, its tokens, and a way to run a check script."""

    def __init__(self, server: Server, tokens: dict[str, str]) -> None:
        self.server = server
        self.url = server.url
        self.tokens = tokens

    def node(self, script: str, *args: str, **env: str) -> Any:
        proc = subprocess.run(
            ["node", str(HERE / "js" / script), *args], capture_output=True, text=True,
            timeout=60, env={**os.environ, "PESTO_URL": self.url,
                             "PESTO_TOKEN": self.tokens["sdk"], **env})
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}{proc.stderr}"
        lines = proc.stdout.strip().splitlines()
        assert lines, f"{script} printed nothing; stderr:\n{proc.stderr}"
        return json.loads(lines[-1])


@pytest.fixture(scope="session")
def compat(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    root = tmp_path_factory.mktemp("compat")
    data = root / "data"
    tokens = {
        "sdk": add_token(data, "sdk"),
        "monthly": add_token(data, "monthly", monthly_limit=1),
        "rate": add_token(data, "rate", rate_limit=1),
        "revoked": add_token(data, "revoked"),
        "piston-public": add_token(data, "piston-public"),
    }
    assert revoke(data, "revoked")
    config = root / "pesto.toml"
    config.write_text('piston_anonymous_token = "piston-public"\n')
    server = Server(data, "--config", str(config), "--workers", "2", uids=COMPAT_UIDS)
    try:
        yield Compat(server, tokens)
    finally:
        server.stop()
    # The server is gone: none of its run uids may be left behind.
    assert wait_uids_free(Path("/var/lib/pesto-sandbox"), *COMPAT_UIDS) == [], server.output()
