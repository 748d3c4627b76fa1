"""Schemathesis against the OpenAPI document a real `pesto serve` serves.

Every operation of the served document is fuzzed (whatever routes exist:
the test reads the document, it does not list paths), with a bounded number
of generated requests each, sent with a valid token. For each answer:

- no 5xx;
- the status is one the document lists for the operation, with its
  documented content type, headers and body schema;
- a request outside the schema is refused (4xx), not run;
- every error body is `{"code", "message"}` (plus `details` / `hint`),
  the shape API.md fixes, and a 429/503 carries `Retry-After`.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from pesto.api import create_app
from pesto.config import load_settings

from tests.fuzz.conftest import TARGET

# Examples per operation: the whole document in about a minute on two cores.
EXAMPLES = int(os.environ.get("PESTO_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def served_schema(served: tuple[str, str]) -> Any:
    url, token = served
    loaded = schemathesis.openapi.from_url(url + "/schema/openapi.json")

    @loaded.auth()
    class Token:
        """A valid token on every request, except those that test a missing or bad one."""

        def get(self, case: Any, context: Any) -> str:
            return token

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "X-Pesto-Token": data}

    return loaded


def documented_operations() -> list[Any]:
    """(mode, METHOD, path) for every operation in the app's document: valid
    requests for each, invalid ones for those that take a body or parameters
    (there is nothing to make invalid in the others).

    The fuzzing itself loads the document the real server serves; this only
    lists it at collection time (the app is built, not started).
    """
    if TARGET:
        doc = httpx.get(TARGET + "/schema/openapi.json").json()
    else:
        doc = create_app(load_settings(env={}, data_dir="/nonexistent")).openapi_schema.to_schema()
    params = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            modes = [GenerationMode.POSITIVE]
            if op.get("requestBody") or op.get("parameters") or item.get("parameters"):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                name = "valid" if mode is GenerationMode.POSITIVE else "invalid"
                params.append(pytest.param(mode, method.upper(), path,
                                           id=f"{name}-{method.upper()}-{path}"))
    return params


HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ERROR_KEYS = {"code", "message", "details", "hint"}


def documented_error(case: Any, status: int) -> dict[str, Any] | None:
    """The JSON schema the document gives for this operation's `status`, $ref resolved."""
    answers = case.operation.definition.raw.get("responses", {})
    answer = answers.get(str(status)) or answers.get("default") or {}
    schema = answer.get("content", {}).get("application/json", {}).get("schema")
    ref = (schema or {}).get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        components = case.operation.schema.raw_schema.get("components", {}).get("schemas", {})
        schema = components.get(ref.rsplit("/", 1)[1])
    return schema


def error_shape(ctx: Any, response: Any, case: Any) -> None:
    """API.md: every error is JSON {code, message[, details][, hint]}.

    A route made for another API's clients (Piston's /api/v2) may document
    its own error shape, one without `code`: its answers are held to that
    schema by `response_schema_conformance` instead.
    """
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), \
        f"error {response.status_code} is not JSON"
    body = response.json()
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    if response.status_code in (429, 503):
        assert int(response.headers["retry-after"][0]) >= 1
    own = documented_error(case, response.status_code)
    if own is not None and "code" not in own.get("required", ["code"]):
        return
    assert isinstance(body.get("code"), str) and body["code"].isupper(), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert set(body) <= ERROR_KEYS, f"unexpected keys {set(body) - ERROR_KEYS}"


CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance,
          st_checks.content_type_conformance, st_checks.response_headers_conformance,
          st_checks.response_schema_conformance, st_checks.negative_data_rejection,
          st_checks.ignored_auth, st_checks.unsupported_method]


@pytest.mark.parametrize(("mode", "method", "path"), documented_operations())
def test_operation_answers_as_documented(mode: GenerationMode, method: str, path: str,
                                         served_schema: Any) -> None:
    operation = served_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        case.call_and_validate(checks=CHECKS,
                               additional_checks=[error_shape])

    fuzz()
