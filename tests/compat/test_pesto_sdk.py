"""The original service's published JavaScript SDK (npm @teknologi-umum/pesto 1.0.0),
unchanged, against a real `pesto serve`: one node script per check (js/sdk_*.mjs).

The SDK decides what went wrong from the status and the exact `message`
(its processError); each error below must come out as its own error class.
"""

from __future__ import annotations

import pytest

from tests.compat.conftest import Compat


def test_ping(compat: Compat) -> None:
    assert compat.node("sdk_ping.mjs") == {"ok": True, "value": {"message": "OK"}}


def test_list_runtimes(compat: Compat) -> None:
    out = compat.node("sdk_list_runtimes.mjs")
    assert out["ok"], out
    runtimes = out["value"]["runtime"]
    python = [r for r in runtimes if r["language"] == "Python"]
    assert python and set(python[0]) == {"language", "version", "aliases", "compiled"}
    assert python[0]["compiled"] is False and "py" in python[0]["aliases"]


@pytest.mark.parametrize("language, code, stdout, compiled", [
    ("Python", "print('Hello World')", "Hello World\n", False),
    ("C++", "#include <iostream>\nint main(){std::cout << \"Hello World\\n\";}",
     "Hello World\n", True),
    ("Javascript", "console.log('Hello World')", "Hello World\n", False),
])
def test_execute_code(compat: Compat, language: str, code: str, stdout: str,
                      compiled: bool) -> None:
    out = compat.node("sdk_execute_code.mjs", language, code)
    assert out["ok"], out
    value = out["value"]
    assert value["language"] == language                    # echoed as sent
    assert value["runtime"]["stdout"] == stdout and value["runtime"]["exitCode"] == 0
    assert value["compile"]["exitCode"] == 0
    assert value["compile"]["status"] == ("ok" if compiled else "skipped")


def test_execute_files(compat: Compat) -> None:
    out = compat.node("sdk_execute_files.mjs")
    assert out["ok"], out
    assert out["value"]["runtime"]["stdout"] == "from a second file\n"
    assert out["value"]["language"] == "Python"


def test_missing_token(compat: Compat) -> None:
    assert compat.node("sdk_missing_token.mjs") == {
        "ok": False, "error": "MissingTokenError", "message": "missing token"}


def test_unknown_token(compat: Compat) -> None:
    assert compat.node("sdk_unknown_token.mjs") == {
        "ok": False, "error": "TokenNotRegisteredError", "message": "Token not registered"}


def test_revoked_token(compat: Compat) -> None:
    out = compat.node("sdk_revoked_token.mjs", PESTO_REVOKED_TOKEN=compat.tokens["revoked"])
    assert out == {"ok": False, "error": "TokenRevokedError", "message": "Token revoked"}


def test_monthly_limit(compat: Compat) -> None:
    out = compat.node("sdk_monthly_limit.mjs", PESTO_MONTHLY_TOKEN=compat.tokens["monthly"])
    assert out == {"ok": False, "error": "MonthlyLimitExceededError",
                   "message": "Monthly limit exceeded"}


def test_rate_limited(compat: Compat) -> None:
    out = compat.node("sdk_rate_limited.mjs", PESTO_RATE_TOKEN=compat.tokens["rate"])
    assert out == {"ok": False, "error": "ServerRateLimitedError", "message": "Server rate limited"}


@pytest.mark.parametrize("language, version", [("SomeUnknownLanguage", "100"), ("Python", "2.7")])
def test_runtime_not_found(compat: Compat, language: str, version: str) -> None:
    out = compat.node("sdk_runtime_not_found.mjs", language, version)
    assert out["ok"] is False and out["error"] == "RuntimeNotFoundError", out


def test_missing_parameters(compat: Compat) -> None:
    out = compat.node("sdk_missing_parameters.mjs")
    assert out["ok"] is False and out["error"] == "MissingParameterError", out
    assert out["message"].startswith("Missing parameters")
