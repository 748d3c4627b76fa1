"""One real `pesto serve` for the fuzz tests, or a running one named by the environment.

PESTO_FUZZ_URL and PESTO_FUZZ_TOKEN: fuzz a server that is already running
(a deployment, another build) instead of starting one from this checkout.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.api.conftest import Server, add_token
from tests.conftest import UID_BASE

TARGET = os.environ.get("PESTO_FUZZ_URL")


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, token) of the server under test."""
    if TARGET:
        yield TARGET, os.environ["PESTO_FUZZ_TOKEN"]
        return
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    token = add_token(data_dir, "fuzzer")
    server = Server(data_dir, "--workers", "2", uids=(UID_BASE + 760, 20))
    try:
        yield server.url, token
    finally:
        server.stop()
