"""Records of the wire and the engine, and the one cattrs converter.

Requests are structured strictly (unknown keys forbidden, wrong types
rejected) and errors come back as readable paths like `$.files[0].name`.
On the wire every field is camelCase; in Python it is snake_case.
"""

from __future__ import annotations

import base64
import enum
import posixpath
import re
from typing import Any

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from pesto.errors import InvalidRequest
from pesto.sandbox.status import Status


ENCODINGS = ("utf8", "base64", "hex")


class Compare(str, enum.Enum):
    """How a test case's output is compared with its expected output (pesto.judge)."""
    EXACT = "exact"
    TRIM = "trim"
    TOKENS = "tokens"
    FLOAT = "float"


@attrs.frozen
class TestCase:
    """One test case of a submission; absent fields fall back to the request's."""
    __test__ = False      # not a pytest class, whatever its name
    stdin: str | None = None
    args: list[str] | None = None
    expected_output: str | None = None
    run_timeout: int | None = None
    memory_limit: int | None = None


@attrs.frozen
class Checker:
    """A program that decides a case's verdict from its input, expected and actual output."""
    language: str
    code: str
    version: str = "latest"


@attrs.frozen
class SourceFile:
    name: str
    code: str
    entrypoint: bool = False
    encoding: str = "utf8"     # how `code` is written: text, or bytes as base64 / hex


@attrs.frozen
class ExecuteRequest:
    language: str
    version: str = "latest"
    code: str | None = None
    files: list[SourceFile] | None = None
    stdin: str = ""
    args: list[str] = attrs.field(factory=list)
    compile_timeout: int | None = None
    run_timeout: int | None = None
    memory_limit: int | None = None
    compile_memory_limit: int | None = None   # the compile stage's own, else memory_limit's
    # Judging (docs/judging.md): compile once, run every case, give verdicts.
    test_cases: list[TestCase] | None = None
    compare: Compare = Compare.TRIM
    absolute_epsilon: float = 1e-6
    relative_epsilon: float = 1e-6
    stop_on_first_failure: bool = False
    checker: Checker | None = None
    # Where the job's final state is POSTed, signed (pesto.webhooks).
    callback_url: str | None = None


@attrs.frozen
class StageResult:
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


@attrs.frozen
class ExecuteResult:
    id: str
    language: str
    version: str
    compile: StageResult
    runtime: StageResult


@attrs.frozen
class CaseResult(StageResult):
    """A test case's answer: every field of its run stage, and its verdict."""
    verdict: str | None = None


@attrs.frozen
class Summary:
    verdict: str | None
    passed: int
    total: int
    max_wall_time: int
    max_memory: int


@attrs.frozen
class JudgeResult:
    """The answer to a request with test cases: `compile` as always, then the cases."""
    id: str
    language: str
    version: str
    compile: StageResult
    test_cases: list[CaseResult]
    summary: Summary


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def make_strict_converter() -> cattrs.Converter:
    """A converter that accepts only the JSON/TOML type asked for: no "5" for 5,
    no "ab" for ["a", "b"], unknown keys rejected. Shared by requests, language
    files and the config file."""
    conv = cattrs.Converter(forbid_extra_keys=True)

    # Strings, ints and bools must arrive as such: cattrs would otherwise
    # happily turn 5 into "5" or "abc" into an error deep in the engine.
    def strict(kind: type, name: str):
        def hook(value: Any, _type: Any) -> Any:
            if type(value) is not kind:  # noqa: E721 - bool is not an int here
                raise TypeError(f"expected {name}, got {type(value).__name__}")
            return value
        return hook

    conv.register_structure_hook(str, strict(str, "a string"))
    conv.register_structure_hook(int, strict(int, "an integer"))
    conv.register_structure_hook(bool, strict(bool, "a boolean"))
    # Status is a str subclass: without its own hook the str hook above
    # would win and hand back a plain string.
    conv.register_structure_hook(Status, lambda v, _: Status(strict(str, "a status")(v, None)))

    def compare_hook(value: Any, _type: Any) -> Compare:
        try:
            return Compare(strict(str, "a string")(value, None))
        except ValueError:
            raise ValueError("must be one of " + ", ".join(c.value for c in Compare)) from None
    conv.register_structure_hook(Compare, compare_hook)

    def number(value: Any, _type: Any) -> float:
        if type(value) not in (int, float):  # noqa: E721 - no bool, no "0.1"
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return float(value)
    conv.register_structure_hook(float, number)

    # cattrs turns any iterable into a list ("ab" -> ["a", "b"]): only a JSON
    # array is a list here. Registered before the classes, which capture it.
    def strict_list(value: Any, type_: Any) -> Any:
        if type(value) is not list:  # noqa: E721
            raise TypeError(f"expected a list, got {type(value).__name__}")
        elem = type_.__args__[0]
        handler = conv.get_structure_hook(elem)
        out, errors = [], []
        for index, item in enumerate(value):
            try:
                out.append(handler(item, elem))
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(
                    f"Structuring {type_} @ index {index}", index, elem)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
        return out

    conv.register_structure_hook_func(
        lambda t: getattr(t, "__origin__", None) is list, strict_list)
    return conv


def _make_converter() -> cattrs.Converter:
    conv = make_strict_converter()
    for cls in (SourceFile, TestCase, Checker, ExecuteRequest, StageResult, ExecuteResult,
                CaseResult, Summary, JudgeResult):
        overrides = {a.name: override(rename=_camel(a.name)) for a in attrs.fields(cls)}
        conv.register_structure_hook(
            cls, make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **overrides))
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **overrides))

    return conv


converter = _make_converter()


_SNAKE_IN_PATH = re.compile(r"\.([a-z]+(?:_[a-z]+)+)\b")


def error_paths(exc: BaseException) -> list[str]:
    """Readable `$.field: why` lines for a cattrs structuring failure."""
    if isinstance(exc, (cattrs.BaseValidationError,)):
        # cattrs names attributes (run_timeout); the client sent camelCase.
        return [_SNAKE_IN_PATH.sub(lambda m: "." + _camel(m.group(1)), line)
                for line in cattrs.transform_error(exc, path="$")]
    return [f"$: {exc}"]


def _missing(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Required fields that are absent or empty: (name, why) pairs."""
    found = []
    language = payload.get("language")
    if language is None or (isinstance(language, str) and not language.strip()):
        found.append(("language", "required, and must not be empty"))
    if payload.get("code") is None and payload.get("files") is None:
        found.append(("code", "give 'code' or 'files'"))
    elif payload.get("files") == []:
        found.append(("files", "must not be empty"))
    return found


def parse_request(payload: Any) -> ExecuteRequest:
    """Structure a decoded JSON body into an ExecuteRequest.

    Raises InvalidRequest (400) naming every bad field.
    """
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object", details=["$: expected an object"])
    # The original service's SDKs recognise this message by its first words.
    missing = [f"$.{name}: {why}" for name, why in _missing(payload)]
    if missing:
        raise InvalidRequest("Missing parameters: " + "; ".join(missing), details=missing)
    try:
        return converter.structure(payload, ExecuteRequest)
    except Exception as exc:  # cattrs raises ExceptionGroups of many kinds
        details = error_paths(exc)
        raise InvalidRequest("invalid request: " + "; ".join(details), details=details) from None


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
