"""The client's tests: `pesto_client` from this checkout against a real `pesto serve`.

The source tree goes on sys.path, so the tests exercise this checkout's
client; `test_install.py` proves separately that it installs and imports
on its own, with httpx and nothing of the server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.api.conftest import Server, add_token
from tests.conftest import UID_BASE

CLIENT_SRC = Path(__file__).resolve().parents[2] / "clients" / "python"
sys.path.insert(0, str(CLIENT_SRC))


class Served:
    def __init__(self, server: Server, token: str, data_dir: Path) -> None:
        self.server = server
        self.url = server.url
        self.token = token
        self.data_dir = data_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("client") / "data"
    token = add_token(data_dir, "client")
    server = Server(data_dir, "--workers", "2", uids=(UID_BASE + 780, 20))
    try:
        yield Served(server, token, data_dir)
    finally:
        server.stop()
