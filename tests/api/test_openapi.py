"""The OpenAPI document describes what the server really sends."""

from __future__ import annotations

import msgspec

from tests.api.conftest import PY, Api
from pesto.api.piston import PistonMessage, PistonResult, PistonRuntime, PistonStage
from pesto.api.schema import ErrorBody, ExecuteResponse, JobCreated, JobView, RuntimeList


def test_openapi_document_lists_every_route_with_token_security(api: Api) -> None:
    doc = api.get("/schema/openapi.json", token=None).json()
    paths = doc["paths"]
    for path in ("/api/execute", "/api/jobs", "/api/jobs/{job_id}", "/api/runtimes",
                 "/api/list-runtimes", "/api/ping", "/healthz", "/api/v2/execute",
                 "/api/v2/runtimes"):
        assert path in paths, path
    execute = paths["/api/execute"]["post"]
    assert execute["security"] == [{"token": []}]
    body = execute["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["language"] and "runTimeout" in body["properties"]
    assert "compileMemoryLimit" in body["properties"]
    assert body["properties"]["files"]["items"]["properties"]["encoding"]["enum"] == [
        "utf8", "base64", "hex"]
    assert "hint" in doc["components"]["schemas"]["ErrorBody"]["properties"]
    piston = paths["/api/v2/execute"]["post"]
    piston_body = piston["requestBody"]["content"]["application/json"]["schema"]
    assert piston_body["required"] == ["language", "version", "files"]
    assert {"stdin", "args", "compile_timeout", "run_cpu_time", "compile_memory_limit"} <= set(
        piston_body["properties"])
    assert {"token": []} in piston["security"] and {"authorization": []} in piston["security"]
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
