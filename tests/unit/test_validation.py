"""Validation of a request body, without root, a sandbox or a server: the paths
and messages a client sees for bad input, and the server's limits from its settings."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pesto.config import load_settings
from pesto.errors import InvalidRequest, RuntimeNotFound
from pesto.models import ExecuteRequest, JudgeResult, StageResult, Summary, parse_request
from pesto.runtimes import load_registry
from pesto.validation import validate_request

LANGUAGES = Path(__file__).resolve().parents[2] / "languages"
REGISTRY = load_registry(LANGUAGES)
SETTINGS = load_settings(env={}, data_dir="/nonexistent")
# A runtime this host has installed (every language folder's run argv points at
# real files once installed); validation only needs one that resolves.
PY = {"language": next(r.language for r in REGISTRY.installed)} if REGISTRY.installed else None

needs_runtime = pytest.mark.skipif(PY is None, reason="no language of languages/ is installed "
                                   "on this host: nothing for a request to resolve to")


def refused(payload, settings=SETTINGS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as exc:
        validate_request(payload, settings, REGISTRY)
    return exc.value


@pytest.mark.parametrize("payload, message, details", [
    ([1, 2], "the body must be a JSON object", ["$: expected an object"]),
    (None, "the body must be a JSON object", ["$: expected an object"]),
    ({"code": "x"}, "Missing parameters: $.language: required, and must not be empty",
     ["$.language: required, and must not be empty"]),
    ({"language": "  ", "code": "x"}, None, ["$.language: required, and must not be empty"]),
    ({"language": "python"}, "Missing parameters: $.code: give 'code' or 'files'",
     ["$.code: give 'code' or 'files'"]),
    ({"language": "python", "files": []}, None, ["$.files: must not be empty"]),
    ({"language": "python", "code": 1}, "invalid request: $.code: expected `str | null`, got `int`",
     ["$.code: expected `str | null`, got `int`"]),
    ({"language": "python", "code": "x", "bogus": 1}, None, ["$.bogus: unknown field"]),
    ({"language": "python", "code": "x", "runTimeout": "5"}, None,
     ["$.runTimeout: expected `int | null`, got `str`"]),
    ({"language": "python", "code": "x", "runTimeout": True}, None,
     ["$.runTimeout: expected `int | null`, got `bool`"]),
    ({"language": "python", "code": "x", "args": "ab"}, None,
     ["$.args: expected `array`, got `str`"]),
    ({"language": "python", "files": [{"name": "a.py"}]}, None, ["$.files[0].code: required"]),
    ({"language": "python", "files": [{"name": "a", "code": "", "encoding": "rot13"}]}, None,
     ["$.files[0].encoding: invalid enum value 'rot13'"]),
    ({"language": "python", "code": "x", "testCases": [{"stdin": 5}]}, None,
     ["$.testCases[0].stdin: expected `str | null`, got `int`"]),
    ({"language": "python", "code": "x", "testCases": [{"expected": "2"}]}, None,
     ["$.testCases[0].expected: unknown field"]),
    ({"language": "python", "code": "x", "compare": "fuzzy"}, None,
     ["$.compare: invalid enum value 'fuzzy'"]),
    ({"language": "python", "code": "x", "absoluteEpsilon": "0.1"}, None,
     ["$.absoluteEpsilon: expected `float`, got `str`"]),
])
def test_shape_errors_name_the_path(payload, message, details) -> None:
    err = refused(payload)
    assert err.details == details
    if message is not None:
        assert err.message == message
    missing = details[0].startswith(("$.language: required,", "$.code: give", "$.files: must"))
    assert err.message.startswith("Missing parameters") == missing


@pytest.mark.parametrize("extra, line", [
    ({"runTimeout": 0}, "$.runTimeout: must be between 1 and 30000"),
    ({"compileTimeout": 30001}, "$.compileTimeout: must be between 1 and 30000"),
    ({"memoryLimit": 1024}, "$.memoryLimit: must be between 33554432 and 536870912"),
    ({"compileMemoryLimit": 1 << 40},
     "$.compileMemoryLimit: must be between 33554432 and 536870912"),
    ({"args": ["a\x00b"]}, "$.args: arguments must not contain NUL"),
    ({"files": [{"name": "a", "code": ""}]}, "$: give exactly one of 'code' and 'files'"),
    ({"checker": {"language": "python", "code": "x"}}, "$.checker: only with testCases"),
    ({"testCases": []}, "$.testCases: must not be empty"),
    ({"testCases": [{}] * 101}, "$.testCases: at most 100 test cases (got 101)"),
    ({"testCases": [{"runTimeout": 0}]}, "$.testCases[0].runTimeout: must be between 1 and 30000"),
    ({"testCases": [{}], "relativeEpsilon": float("nan")},
     "$.relativeEpsilon: must be a finite number of at least 0"),
    ({"testCases": [{"expectedOutput": "x" * (64 * 1024 + 1)}]},
     "$.testCases[0].expectedOutput: longer than the output limit (65536 bytes)"),
])
def test_limits_and_rules_are_checked_against_the_settings(extra, line) -> None:
    err = refused({"language": "python", "code": "print(1)", **extra})
    assert err.details == [line] and err.message == "invalid request: " + line


def test_every_problem_is_named_at_once() -> None:
    err = refused({"language": "python", "runTimeout": 0, "memoryLimit": 1, "files": [
        {"name": "../x", "code": ""}, {"name": "a", "code": "zz", "encoding": "hex"},
        {"name": "a", "code": "", "entrypoint": True},
        {"name": "b", "code": "", "entrypoint": True}]})
    assert err.details == [
        "$.runTimeout: must be between 1 and 30000",
        "$.memoryLimit: must be between 33554432 and 536870912",
        "$.files[0].name: must not contain empty, '.' or '..' components",
        "$.files[1].code: not valid hex: non-hexadecimal number found in fromhex() arg at "
        "position 0",
        "$.files[2].name: duplicate name",
        "$.files: at most one entrypoint",
    ]


def test_an_operators_maxima_are_the_ones_checked() -> None:
    settings = load_settings(env={}, data_dir="/nonexistent", timeout_max=60000, max_files=2)
    files = [{"name": f"f{i}", "code": ""} for i in range(3)]
    assert refused({"language": "python", "files": files}, settings).details == [
        "$.files: at most 2 files"]
    with pytest.raises(InvalidRequest):
        validate_request({"language": "python", "code": "x", "runTimeout": 60001}, settings,
                         REGISTRY)
    if PY is not None:
        request = validate_request({**PY, "code": "x", "runTimeout": 60000}, settings, REGISTRY)
        assert request.run_timeout == 60000


@needs_runtime
def test_a_valid_body_becomes_the_request() -> None:
    request = validate_request({**PY, "code": "x", "runTimeout": 100, "args": ["a"],
                                "testCases": [{"stdin": "1", "expectedOutput": "1"}],
                                "compare": "tokens", "absoluteEpsilon": 1}, SETTINGS, REGISTRY)
    assert isinstance(request, ExecuteRequest)
    assert (request.run_timeout, request.args, request.compare.value) == (100, ["a"], "tokens")
    assert request.absolute_epsilon == 1.0 and request.test_cases[0].expected_output == "1"


@needs_runtime
def test_unknown_runtime_and_checker_runtime() -> None:
    for payload in ({"language": "cobol-77", "code": "x"},
                    {**PY, "version": "0.0.0.1", "code": "x"},
                    {**PY, "code": "x", "testCases": [{}],
                     "checker": {"language": "cobol-77", "code": "x"}}):
        with pytest.raises(RuntimeNotFound) as exc:
            validate_request(payload, SETTINGS, REGISTRY)
        assert exc.value.message == "Runtime not found"


def test_parse_request_is_the_shape_only() -> None:
    # What the store keeps is read back with the shape alone (no registry needed).
    request = parse_request({"language": "nope", "code": "x", "runTimeout": 10 ** 9})
    assert request.language == "nope" and request.run_timeout == 10 ** 9


def test_answers_are_written_camel_case_with_every_field() -> None:
    stage = StageResult(exit_code=0, wall_time=3)
    result = JudgeResult("id", "Python", "3", stage, [], Summary(None, 0, 0, 0, 0))
    wire = msgspec.json.decode(msgspec.json.encode(result))
    assert set(wire) == {"id", "language", "version", "compile", "testCases", "summary"}
    assert wire["compile"] == {"stdout": "", "stderr": "", "output": "", "exitCode": 0,
                               "signal": None, "status": "skipped", "wallTime": 3, "cpuTime": 0,
                               "memory": 0, "truncated": False}
    assert wire["summary"] == {"verdict": None, "passed": 0, "total": 0, "maxWallTime": 0,
                               "maxMemory": 0}
