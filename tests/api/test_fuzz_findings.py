"""Regressions for what Schemathesis (tests/fuzz/) found, one test each."""

from __future__ import annotations

import re

from tests.api.conftest import Api

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def test_options_allow_names_every_method_of_the_path(api: Api) -> None:
    # ST205: OPTIONS /api/jobs/<id> answered `Allow: GET, OPTIONS` without
    # DELETE (Litestar 2 builds a path's OPTIONS answer from its first
    # handler only; pesto/api/options.py). Every documented path, so that
    # paths other work adds (GET + POST /api/jobs) are held to it too.
    doc = api.get("/schema/openapi.json", token=None).json()
    assert doc["paths"]
    for path, item in doc["paths"].items():
        documented = {m.upper() for m in item if m in METHODS} | {"OPTIONS"}
        concrete = re.sub(r"\{[^}]+\}", "0123abcd", path)
        response = api.client.options(concrete)
        assert response.status_code == 204, (path, response.status_code)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed == documented, (path, allowed, documented)
