"""The original service's wire rules (docs/api.md, "Clients of the original Pesto"):
exact `message` texts beside our codes, the sent language echoed, a compile stage
that does not exist reported with exitCode 0, and the names its users send.

tests/compat/ drives the original's published SDK itself against a real server;
these are the same rules checked in-process, one request each.
"""

from __future__ import annotations

import pytest

from pesto.config import load_settings
from pesto.runtimes import load_registry
from tests.api.conftest import Api, add_token, assert_error, revoke

HELLO = {"language": "python", "code": "print('Hello World')"}
# The registry the server builds at start (Engine.start), without a server.
REGISTRY = load_registry(load_settings(env={}).languages_dir)


def test_token_messages_are_the_originals(api: Api) -> None:
    missing = assert_error(api.post("/api/execute", HELLO, token=None), 401, "TOKEN_MISSING")
    assert missing["message"] == "Token must be supplied"
    assert "X-Pesto-Token" in missing["hint"]
    unknown = assert_error(api.post("/api/execute", HELLO, token="pesto_nope"), 401,
                           "TOKEN_INVALID")
    assert unknown["message"] == "Token not registered"
    secret = add_token(api.data_dir, "gone")
    assert revoke(api.data_dir, "gone")
    revoked = assert_error(api.post("/api/execute", HELLO, token=secret), 401, "TOKEN_REVOKED")
    assert revoked["message"] == "Token has been revoked"


def test_quota_message_is_the_originals(api: Api) -> None:
    secret = add_token(api.data_dir, "monthly", monthly_limit=1)
    assert api.post("/api/execute", HELLO, token=secret).status_code == 200
    body = assert_error(api.post("/api/execute", HELLO, token=secret), 429, "QUOTA_EXCEEDED")
    assert body["message"] == "Monthly limit exceeded" and "1 executions" in body["hint"]


@pytest.mark.parametrize("request_body", [
    {"language": "cobol", "code": "x"},
    {"language": "python", "version": "2.7", "code": "x"},
])
def test_runtime_not_found_message(api: Api, request_body: dict) -> None:
    body = assert_error(api.post("/api/execute", request_body), 400, "RUNTIME_NOT_FOUND")
    assert body["message"] == "Runtime not found"
    assert request_body["language"] in body["hint"]


@pytest.mark.parametrize("request_body, field", [
    ({"language": "", "code": "print(1)"}, "language"),
    ({"language": "   ", "code": "print(1)"}, "language"),
    ({"code": "print(1)"}, "language"),
    ({"language": "python"}, "code"),
    ({"language": "python", "files": []}, "files"),
])
def test_missing_or_empty_fields(api: Api, request_body: dict, field: str) -> None:
    body = assert_error(api.post("/api/execute", request_body), 400, "INVALID_REQUEST")
    assert body["message"].startswith("Missing parameters")
    assert any(line.startswith(f"$.{field}:") for line in body["details"]), body


def test_other_bad_input_is_not_missing_parameters(api: Api) -> None:
    body = assert_error(api.post("/api/execute", {**HELLO, "runTimeout": "5"}), 400,
                        "INVALID_REQUEST")
    assert not body["message"].startswith("Missing parameters")


@pytest.mark.parametrize("sent", ["Python", "python", "PYTHON", "py", "C++", "c++", "C",
                                  "Javascript", "javascript", "Typescript", "PHP", "Ruby", "Lua",
                                  "SQLite3", "Go", "Java", "Elixir", "Erlang", "Common Lisp",
                                  "clisp", "Brainfuck", "Janet", "Julia"])
def test_language_names_resolve_case_insensitively(sent: str) -> None:
    registry = REGISTRY
    runtime = next((r for r in registry.all if sent.lower() in r.names), None)
    assert runtime is not None, f"no language folder answers to {sent!r}"
    if not runtime.installed:
        pytest.skip(f"{runtime.language} is not installed on this host (its install failed "
                    f"or was not run); the name {sent!r} is still one of its names")
    assert registry.resolve(sent) is runtime


@pytest.mark.parametrize("sent, code, compiled", [
    ("Python", "print('hi')", False),
    ("C++", "#include <cstdio>\nint main(){std::puts(\"hi\");}", True),
])
def test_response_language_is_the_name_sent(api: Api, sent: str, code: str,
                                            compiled: bool) -> None:
    response = api.post("/api/execute", {"language": sent, "code": code})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == sent
    assert body["runtime"]["stdout"] == "hi\n"
    compile_stage = body["compile"]
    assert compile_stage["status"] == ("ok" if compiled else "skipped")
    assert compile_stage["exitCode"] == 0


def test_run_after_failed_compile_stays_minus_one(api: Api) -> None:
    body = api.post("/api/execute", {"language": "c", "code": "int main() { oops }"}).json()
    assert body["compile"]["status"] == "error" and body["compile"]["exitCode"] != 0
    assert body["runtime"]["status"] == "skipped" and body["runtime"]["exitCode"] == -1
