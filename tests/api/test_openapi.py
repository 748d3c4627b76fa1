"""The OpenAPI document describes what the server really sends."""

from __future__ import annotations

import msgspec

from tests.api.conftest import PY, Api
from pesto.api.schema import ExecuteResponse, JobCreated, JobView, RuntimeList


def test_openapi_document_lists_every_route_with_token_security(api: Api) -> None:
    doc = api.get("/schema/openapi.json", token=None).json()
    paths = doc["paths"]
    for path in ("/api/execute", "/api/jobs", "/api/jobs/{job_id}", "/api/runtimes",
                 "/api/list-runtimes", "/api/ping", "/healthz"):
        assert path in paths, path
    execute = paths["/api/execute"]["post"]
    assert execute["security"] == [{"token": []}]
    body = execute["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["language"] and "runTimeout" in body["properties"]
    assert doc["components"]["securitySchemes"]["token"]["name"] == "X-Pesto-Token"
    assert "exitCode" in doc["components"]["schemas"]["StageDoc"]["properties"]


def test_documented_shapes_match_real_responses(api: Api) -> None:
    executed = api.post("/api/execute", {**PY, "code": "print(1)"})
    msgspec.json.decode(executed.content, type=ExecuteResponse, strict=True)
    created = api.post("/api/jobs", {**PY, "code": "print(2)"})
    msgspec.json.decode(created.content, type=JobCreated, strict=True)
    job_id = created.json()["id"]
    api.wait_job(job_id)
    msgspec.json.decode(api.get(f"/api/jobs/{job_id}").content, type=JobView, strict=True)
    msgspec.json.decode(api.get("/api/runtimes", token=None).content, type=RuntimeList,
                        strict=True)
    # Structs ignore unknown keys when decoding; check the key sets too.
    fields = set(ExecuteResponse.__struct_encode_fields__)
    assert set(executed.json()) == fields
