"""The wire model: every request and response shape of the native API, declared once.

Each shape is a msgspec Struct: snake_case in Python, camelCase on the wire
(`rename="camel"`), unknown fields refused, frozen. The same classes are
decoded strictly by msgspec (`parse_request`: no "5" for 5, no "ab" for a
list), encoded for the answers (`msgspec.json.encode(result)`), and handed
to Litestar, which generates the OpenAPI document from them
(`pesto.api.schema`).

Limits an operator configures (timeouts, memory, file and case counts) are
not part of the types: `pesto.validation` checks them against the live
settings, so the document never states a maximum the server does not have.
"""

from __future__ import annotations

import base64
import enum
import posixpath
import re
from typing import Annotated, Any, Literal, get_args

import msgspec

from pesto.errors import InvalidRequest
from pesto.sandbox.status import Status


Encoding = Literal["utf8", "base64", "hex"]     # how a file's `code` is written
ENCODINGS = get_args(Encoding)


class Wire(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """Base of every wire shape; msgspec passes these options on to subclasses."""


class Answer(Wire):
    """Base of the answers. msgspec writes every field of one (no omit_defaults),
    so the document marks them all required; the defaults are for Python."""


def described(description: str) -> msgspec.Meta:
    """A field's description in the OpenAPI document: `Annotated[str, described("...")]`."""
    return msgspec.Meta(description=description)


class Compare(str, enum.Enum):
    """How a test case's output is compared with its expected output (pesto.judge)."""
    EXACT = "exact"
    TRIM = "trim"
    TOKENS = "tokens"
    FLOAT = "float"


class Verdict(str, enum.Enum):
    """A test case's verdict (pesto.judge decides it)."""
    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    SKIPPED = "skipped"
    INTERNAL_ERROR = "internal_error"


# --- requests ----------------------------------------------------------------------

class TestCase(Wire):
    """One test case of a submission; absent fields fall back to the request's."""
    __test__ = False      # not a pytest class, whatever its name
    stdin: Annotated[str, described("standard input (default: the request's)")] | None = None
    args: list[str] | None = None
    expected_output: Annotated[str, described("what stdout must be, under `compare`")] | None = None
    run_timeout: Annotated[int, described("ms (default: the request's)")] | None = None
    memory_limit: Annotated[int, described("bytes (default: the request's)")] | None = None


class Checker(Wire):
    """A program that decides a case's verdict from its input, expected and actual output:
    run with input.txt expected.txt actual.txt; exit 0 accepted, 1 or 2 wrong answer."""
    language: Annotated[str, described("the checker's language")]
    code: Annotated[str, described("the checker's program")]
    version: Annotated[str, described("its version (default latest)")] = "latest"


class SourceFile(Wire):
    name: Annotated[str, described("plain relative path: no '..', no absolute path, no NUL")]
    code: Annotated[str, described("file content, written as `encoding` says")]
    entrypoint: Annotated[bool, described("run this file (default: the first)")] = False
    encoding: Annotated[Encoding, described(
        "how `code` is written (utf8; base64 or hex for bytes)")] = "utf8"


class ExecuteRequest(Wire):
    """Give exactly one of `code` and `files`. Limits out of range are a 400; this
    server's limits are in the document's description."""
    language: Annotated[str, described("name or alias, case-insensitive")]
    version: Annotated[str, described("exact version, a prefix, or 'latest' (default)")] = "latest"
    code: Annotated[str, described("the program, written to the language's default file")] | None \
        = None
    files: list[SourceFile] | None = None
    stdin: Annotated[str, described("standard input (default empty)")] = ""
    args: list[str] = []
    compile_timeout: Annotated[int, described("ms (default: the language's)")] | None = None
    run_timeout: Annotated[int, described("ms (default: the language's)")] | None = None
    memory_limit: Annotated[int, described("bytes, each stage (default: the server's)")] | None \
        = None
    compile_memory_limit: Annotated[int, described(
        "bytes, the compile stage's own; default: memoryLimit or the language's "
        "compile default")] | None = None
    # Judging (docs/judging.md): compile once, run every case, give verdicts.
    test_cases: Annotated[list[TestCase], described(
        "compile once, run each case (docs/judging.md)")] | None = None
    compare: Annotated[Compare, described("how outputs are compared (default trim)")] = Compare.TRIM
    absolute_epsilon: Annotated[float, described("float compare: absolute error allowed")] = 1e-6
    relative_epsilon: Annotated[float, described("float compare: relative error allowed")] = 1e-6
    stop_on_first_failure: Annotated[bool, described("start no case after a failed one")] = False
    checker: Checker | None = None
    # Where the job's final state is POSTed, signed (pesto.webhooks).
    callback_url: Annotated[str, described("POSTed the job's final state, signed")] | None = None


# --- answers -----------------------------------------------------------------------

class StageResult(Answer):
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    exit_code: int = -1
    signal: str | None = None
    status: Status = Status.SKIPPED
    wall_time: int = 0
    cpu_time: int = 0
    memory: int = 0
    truncated: bool = False


SKIPPED = StageResult()
# An interpreted language's compile stage: "skipped" with exitCode 0, as the
# original service's published example and clients have it.
NO_COMPILE = StageResult(exit_code=0)


class ExecuteResult(Answer):
    id: str
    language: str
    version: str
    compile: StageResult
    runtime: StageResult


class CaseResult(StageResult):
    """A test case's run stage and its verdict (null: no expected output to judge by)."""
    verdict: Verdict | None = None


class Summary(Answer):
    verdict: Verdict | None
    passed: int
    total: int
    max_wall_time: int
    max_memory: int


class JudgeResult(Answer):
    """The answer to a request with `testCases` (docs/judging.md)."""
    id: str
    language: str
    version: str
    compile: StageResult
    test_cases: list[CaseResult]
    summary: Summary


# --- decoding ----------------------------------------------------------------------

def invalid(problems: list[str], lead: str = "invalid request") -> InvalidRequest:
    """The one shape of a validation failure: `<lead>: <line>; <line>` as the
    message and the `$.path: why` lines as `details`. Every validator of a
    body (requests, batches, the token form) raises what this returns."""
    return InvalidRequest(f"{lead}: " + "; ".join(problems), details=problems)


def problem(exc: msgspec.ValidationError) -> str:
    """msgspec's validation error as one `$.path: why` line.

    msgspec says "Expected `int`, got `str` - at `$.runTimeout`"; a missing or
    unknown field is named inside its text and becomes part of the path.
    """
    why, _, where = str(exc).partition(" - at `")
    path = where[:-1] if where else "$"
    for head, tail in (("Object missing required field `", "required"),
                       ("Object contains unknown field `", "unknown field")):
        if why.startswith(head):
            return f"{path}.{why[len(head):-1]}: {tail}"
    return f"{path}: {why[:1].lower()}{why[1:]}"


def _missing(payload: dict[str, Any]) -> list[str]:
    """Required fields that are absent or empty, as `$.name: why` lines."""
    found = []
    language = payload.get("language")
    if language is None or (isinstance(language, str) and not language.strip()):
        found.append("$.language: required, and must not be empty")
    if payload.get("code") is None and payload.get("files") is None:
        found.append("$.code: give 'code' or 'files'")
    elif payload.get("files") == []:
        found.append("$.files: must not be empty")
    return found


def parse_request(payload: Any) -> ExecuteRequest:
    """A decoded JSON body as an ExecuteRequest: its shape only (types, unknown
    and missing fields), not the server's limits (`pesto.validation` checks those).

    Raises InvalidRequest (400): `Missing parameters: ...` for an absent or
    empty required field (the original service's SDKs know it by those
    words), else `invalid request: ...` naming the first bad field.
    """
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object", details=["$: expected an object"])
    missing = _missing(payload)
    if missing:
        raise invalid(missing, lead="Missing parameters")
    try:
        return msgspec.convert(payload, ExecuteRequest)
    except msgspec.ValidationError as exc:
        raise invalid([problem(exc)]) from None


_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


_NOT_BASE64 = re.compile(r"[\s=]")
_URLSAFE = str.maketrans("-_", "+/")


def file_content(file: SourceFile) -> str | bytes:
    """The bytes a file stands for (str for UTF-8 text). Raises ValueError."""
    if file.encoding == "base64":
        # Lenient like Piston's Buffer.from: whitespace and line breaks are
        # skipped, the URL-safe alphabet is taken, padding may be left off.
        clean = _NOT_BASE64.sub("", file.code).translate(_URLSAFE)
        return base64.b64decode(clean + "=" * (-len(clean) % 4), validate=True)
    if file.encoding == "hex":
        return bytes.fromhex(file.code)
    if file.encoding == "utf8":
        return file.code
    raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}")


def check_file_name(name: str) -> str | None:
    """Why a client-given file name is unacceptable, or None if it is fine.

    Names are plain relative paths inside the work dir: no absolute path,
    no `..` or `.` component, no NUL or control characters, no backslash.
    """
    if not name or len(name) > 255:
        return "must be 1 to 255 characters"
    if _BAD_NAME_CHARS.search(name):
        return "must not contain NUL, control characters or backslashes"
    if name.startswith("/"):
        return "must be a relative path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "must not contain empty, '.' or '..' components"
    if posixpath.normpath(name) != name:
        return "must be a normalised path"
    return None
