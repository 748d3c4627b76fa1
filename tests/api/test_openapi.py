"""The OpenAPI document describes what the server really sends."""

from __future__ import annotations

import json
import re

import msgspec

from tests.api.conftest import PY, Api, make_settings
from pesto.api import create_app
from pesto.api.piston import PistonMessage, PistonResult, PistonRuntime, PistonStage
from pesto.api.schema import ErrorBody, JobCreated, JobView, RuntimeList
from pesto.models import ExecuteRequest, ExecuteResult, StageResult


def test_openapi_document_lists_every_route_with_token_security(api: Api) -> None:
    doc = api.get("/schema/openapi.json", token=None).json()
    paths = doc["paths"]
    for path in ("/api/execute", "/api/jobs", "/api/jobs/{job_id}", "/api/runtimes",
                 "/api/list-runtimes", "/api/ping", "/healthz", "/api/v2/execute",
                 "/api/v2/runtimes"):
        assert path in paths, path
    execute = paths["/api/execute"]["post"]
    assert execute["security"] == [{"token": []}]
    schemas = doc["components"]["schemas"]
    ref = execute["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schemas[ref.rsplit("/", 1)[1]]
    # Generated from the one declaration: its fields, its required ones, and
    # unknown fields refused as the server refuses them.
    assert set(body["properties"]) == set(ExecuteRequest.__struct_encode_fields__)
    assert body["required"] == ["language"] and body["additionalProperties"] is False
    assert paths["/api/jobs"]["post"]["requestBody"] == execute["requestBody"]
    source_file = schemas["SourceFile"]
    assert source_file["properties"]["encoding"]["enum"] == ["utf8", "base64", "hex"]
    assert "hint" in doc["components"]["schemas"]["ErrorBody"]["properties"]
    piston = paths["/api/v2/execute"]["post"]
    piston_ref = piston["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    piston_body = schemas[piston_ref.rsplit("/", 1)[1]]
    assert piston_body["required"] == ["files", "language", "version"]
    assert {"stdin", "args", "compile_timeout", "run_cpu_time", "compile_memory_limit"} <= set(
        piston_body["properties"])
    assert {"token": []} in piston["security"] and {"authorization": []} in piston["security"]
    assert doc["components"]["securitySchemes"]["token"]["name"] == "X-Pesto-Token"
    stage = schemas["StageResult"]
    assert stage["required"] == sorted(StageResult.__struct_encode_fields__)
    assert stage["additionalProperties"] is False


def test_document_states_the_live_limits_and_no_other_maximum(data_dir) -> None:
    """An operator's maxima are the ones the document gives; no fixed number hides
    anywhere in the request shapes (the configurable fields carry no maximum)."""
    settings = make_settings(data_dir, timeout_max=12345, max_files=7, max_test_cases=9,
                             memory_max=300 * 1024 * 1024)
    doc = create_app(settings).openapi_schema.to_schema()
    info = doc["info"]["description"]
    assert "1..12345 ms" in info and "at most 7 `files`, 9 `testCases`" in info, info
    assert f"..{300 * 1024 * 1024} bytes" in info, info
    shapes = json.dumps({name: doc["components"]["schemas"][name]
                         for name in ("ExecuteRequest", "SourceFile", "TestCase", "Checker")})
    for key in ("maximum", "maxItems", "exclusiveMaximum"):
        assert f'"{key}"' not in shapes, key
    assert not re.search(r"30000|20 files|512 MiB|128 MiB", shapes), shapes


def test_documented_shapes_match_real_responses(api: Api) -> None:
    executed = api.post("/api/execute", {**PY, "code": "print(1)"})
    msgspec.json.decode(executed.content, type=ExecuteResult, strict=True)
    created = api.post("/api/jobs", {**PY, "code": "print(2)"})
    msgspec.json.decode(created.content, type=JobCreated, strict=True)
    job_id = created.json()["id"]
    api.wait_job(job_id)
    msgspec.json.decode(api.get(f"/api/jobs/{job_id}").content, type=JobView, strict=True)
    msgspec.json.decode(api.get("/api/runtimes", token=None).content, type=RuntimeList,
                        strict=True)
    # The answer Structs refuse unknown keys but take defaults for missing
    # ones: check the key sets too (the document says every key is there).
    assert set(executed.json()) == set(ExecuteResult.__struct_encode_fields__)
    for stage in ("compile", "runtime"):
        assert set(executed.json()[stage]) == set(StageResult.__struct_encode_fields__)

    # Error bodies, hint included.
    missing = api.post("/api/execute", {**PY, "code": "1"}, token=None)
    assert "hint" in missing.json()
    msgspec.json.decode(missing.content, type=ErrorBody, strict=True)


def test_documented_piston_shapes_match_real_responses(api: Api) -> None:
    headers = {"Authorization": api.secret}
    for language, code in (("python", "print(1)"), ("c", "int main(void){return 0;}"),
                           ("c", "int main( {")):
        answer = api.client.post("/api/v2/execute", headers=headers, json={
            "language": language, "version": "*", "files": [{"content": code}]})
        assert answer.status_code == 200, answer.text
        decoded = msgspec.json.decode(answer.content, type=PistonResult, strict=True)
        assert set(answer.json()) == {"run", "language", "version"} | (
            {"compile"} if language == "c" else set())
        assert set(answer.json()["run"]) == set(PistonStage.__struct_encode_fields__)
        assert decoded.run.status in (None, "RE")
    msgspec.json.decode(api.client.get("/api/v2/runtimes").content, type=list[PistonRuntime],
                        strict=True)
    refused = api.client.post("/api/v2/execute", headers=headers, json={"language": "python"})
    assert refused.status_code == 400
    msgspec.json.decode(refused.content, type=PistonMessage, strict=True)
