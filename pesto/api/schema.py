"""The wire shapes, for the OpenAPI document only.

Requests are parsed by `pesto.models.parse_request` and results serialised
by its converter; these msgspec Structs describe the same JSON to Litestar's
schema generator (camelCase like the wire). `tests/api/test_openapi.py`
checks that they agree with the converter's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from pesto.sandbox.status import Status


class StageDoc(msgspec.Struct, rename="camel"):
    stdout: str
    stderr: str
    output: str
    exit_code: int
    signal: str | None
    status: Status
    wall_time: int
    cpu_time: int
    memory: int
    truncated: bool


class ExecuteResponse(msgspec.Struct, rename="camel"):
    id: str
    language: str
    version: str
    compile: StageDoc
    runtime: StageDoc


Verdict = Literal["accepted", "wrong_answer", "time_limit", "memory_limit", "output_limit",
                  "runtime_error", "compile_error", "skipped", "internal_error"]


class CaseDoc(StageDoc, rename="camel"):
    """A test case's run stage and its verdict (null: no expected output to judge by)."""
    verdict: Verdict | None


class SummaryDoc(msgspec.Struct, rename="camel"):
    verdict: Verdict | None
    passed: int
    total: int
    max_wall_time: int
    max_memory: int


class JudgeResponse(msgspec.Struct, rename="camel"):
    """The answer to a request with `testCases` (docs/judging.md)."""
    id: str
    language: str
    version: str
    compile: StageDoc
    test_cases: list[CaseDoc]
    summary: SummaryDoc


class JobCreated(msgspec.Struct):
    id: str
    status: Literal["queued"]


class BatchCreated(msgspec.Struct):
    jobs: list[JobCreated]


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: list[str] | None = None
    hint: str | None = None


class JobError(msgspec.Struct):
    code: str
    message: str


class JobView(msgspec.Struct, rename="camel"):
    id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    # A job with testCases has a JudgeResponse here (msgspec cannot document
    # an untagged union of the two; tests/api/test_judging.py checks both).
    result: ExecuteResponse | None
    error: JobError | None


class JobList(msgspec.Struct):
    jobs: list[JobView | None]


class RuntimeDoc(msgspec.Struct):
    language: str
    version: str
    aliases: list[str]
    compiled: bool


class RuntimeList(msgspec.Struct):
    runtime: list[RuntimeDoc]


class Pong(msgspec.Struct):
    message: str


class Health(msgspec.Struct):
    status: str


def _s(kind: OpenAPIType, description: str, **kw) -> Schema:
    return Schema(type=kind, description=description, **kw)


_FILE = Schema(type=OpenAPIType.OBJECT, required=["name", "code"], properties={
    "name": _s(OpenAPIType.STRING, "plain relative path: no '..', no absolute path, no NUL"),
    "code": _s(OpenAPIType.STRING, "file content"),
    "entrypoint": _s(OpenAPIType.BOOLEAN, "run this file (default: the first)"),
    "encoding": Schema(type=OpenAPIType.STRING, enum=["utf8", "base64", "hex"],
                       description="how `code` is written (default utf8; base64/hex for bytes)"),
})

_CASE = Schema(type=OpenAPIType.OBJECT, additional_properties=False, properties={
    "stdin": _s(OpenAPIType.STRING, "standard input (default: the request's)"),
    "args": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING)),
    "expectedOutput": _s(OpenAPIType.STRING, "what stdout must be, under `compare`"),
    "runTimeout": _s(OpenAPIType.INTEGER, "ms (default: the request's)"),
    "memoryLimit": _s(OpenAPIType.INTEGER, "bytes (default: the request's)"),
})

EXECUTE_REQUEST = Schema(
    type=OpenAPIType.OBJECT, required=["language"], additional_properties=False,
    description="Give exactly one of `code` and `files`. Limits out of range are a 400.",
    properties={
        "language": _s(OpenAPIType.STRING, "name or alias, case-insensitive"),
        "version": _s(OpenAPIType.STRING, "exact version, a prefix, or 'latest' (default)"),
        "code": _s(OpenAPIType.STRING, "the program, written to the language's default file"),
        "files": Schema(type=OpenAPIType.ARRAY, items=_FILE, max_items=20),
        "stdin": _s(OpenAPIType.STRING, "standard input (default empty)"),
        "args": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING)),
        "compileTimeout": _s(OpenAPIType.INTEGER, "ms, 1..30000, default 5000"),
        "runTimeout": _s(OpenAPIType.INTEGER, "ms, 1..30000, default 5000"),
        "memoryLimit": _s(OpenAPIType.INTEGER, "bytes, 32 MiB..512 MiB, default 128 MiB"),
        "compileMemoryLimit": _s(OpenAPIType.INTEGER,
                                 "bytes, the compile stage's own; default: memoryLimit or "
                                 "the language's compile default"),
        "testCases": Schema(type=OpenAPIType.ARRAY, items=_CASE, max_items=100,
                            description="compile once, run each case (docs/judging.md)"),
        "compare": Schema(type=OpenAPIType.STRING, enum=["exact", "trim", "tokens", "float"],
                          description="how outputs are compared (default trim)"),
        "absoluteEpsilon": _s(OpenAPIType.NUMBER, "float compare: absolute error allowed"),
        "relativeEpsilon": _s(OpenAPIType.NUMBER, "float compare: relative error allowed"),
        "stopOnFirstFailure": _s(OpenAPIType.BOOLEAN, "start no case after a failed one"),
        "checker": Schema(type=OpenAPIType.OBJECT, required=["language", "code"], properties={
            "language": _s(OpenAPIType.STRING, "the checker's language"),
            "version": _s(OpenAPIType.STRING, "its version (default latest)"),
            "code": _s(OpenAPIType.STRING, "run with input.txt expected.txt actual.txt; "
                                            "exit 0 accepted, 1 or 2 wrong answer")}),
        "callbackUrl": _s(OpenAPIType.STRING, "POSTed the job's final state, signed"),
    })


@dataclass
class ExecuteOperation(Operation):
    """The handlers read the raw body themselves (to map every failure to our
    error codes), so the request body is declared here for the document."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={"application/json": OpenAPIMediaType(
            schema=EXECUTE_REQUEST,
            example={"language": "python", "code": "print(input())", "stdin": "Hello World"})})


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(ErrorBody, generate_examples=False,
                                 description="error: {code, message[, details][, hint]}")
            for status in statuses}


def ok(container: type, description: str) -> ResponseSpec:
    return ResponseSpec(container, generate_examples=False, description=description)
