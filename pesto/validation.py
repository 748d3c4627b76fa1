"""A request is validated here, once: its shape, the server's limits, its runtime.

`validate_request` is the one entry. The native routes, the batch route and
Piston's (which first translates its body into a native one) all call it on a
decoded body, with the live settings and the language registry; what it
returns is ready for the scheduler and the engine, which check nothing again.
Every failure is an InvalidRequest built by `pesto.models.invalid` (its
`details` are `$.path: why` lines) or a RuntimeNotFound.
"""

from __future__ import annotations

from typing import Any

from pesto.config import Settings
from pesto.models import (ExecuteRequest, SourceFile, check_file_name, file_content,
                          invalid, parse_request)
from pesto.runtimes import Registry


def validate_request(payload: Any, settings: Settings, registry: Registry) -> ExecuteRequest:
    """The request a decoded JSON body stands for, checked against `settings` and `registry`.

    Raises InvalidRequest (400) naming the bad fields, or RuntimeNotFound (400)
    for the language (or the checker's language) that no runtime answers to.
    """
    request = parse_request(payload)
    problems = limit_problems(request, settings)
    if request.files is not None:
        problems += file_problems(request.files, settings)
    if any("\x00" in a for a in request.args):
        problems.append("$.args: arguments must not contain NUL")
    problems += judging_problems(request, settings)
    if problems:
        raise invalid(problems)
    if request.checker is not None:
        registry.resolve(request.checker.language, request.checker.version)
    registry.resolve(request.language, request.version)
    return request


def _range(field: str, value: int | None, lo: int, hi: int) -> list[str]:
    if value is not None and not lo <= value <= hi:
        return [f"{field}: must be between {lo} and {hi}"]
    return []


def limit_problems(request: ExecuteRequest, s: Settings) -> list[str]:
    """The request's own limits against the server's, and the code-or-files rule."""
    out = [*_range("$.compileTimeout", request.compile_timeout, 1, s.timeout_max),
           *_range("$.runTimeout", request.run_timeout, 1, s.timeout_max),
           *_range("$.memoryLimit", request.memory_limit, s.memory_min, s.memory_max),
           *_range("$.compileMemoryLimit", request.compile_memory_limit, s.memory_min,
                   s.memory_max)]
    if (request.code is None) == (request.files is None):
        out.append("$: give exactly one of 'code' and 'files'")
    return out


def file_problems(files: list[SourceFile], s: Settings) -> list[str]:
    """Names, count, encodings and entry point of a request's files."""
    out: list[str] = []
    if not files:
        out.append("$.files: must not be empty")
    if len(files) > s.max_files:
        out.append(f"$.files: at most {s.max_files} files")
    seen: set[str] = set()
    for i, f in enumerate(files):
        why = check_file_name(f.name)
        if why:
            out.append(f"$.files[{i}].name: {why}")
        elif f.name in seen:
            out.append(f"$.files[{i}].name: duplicate name")
        seen.add(f.name)
        if f.encoding != "utf8":      # the type allows only ENCODINGS

            try:
                file_content(f)
            except ValueError as exc:
                out.append(f"$.files[{i}].code: not valid {f.encoding}: {exc}")
    if sum(f.entrypoint for f in files) > 1:
        out.append("$.files: at most one entrypoint")
    # A file and a directory of the same name cannot both exist.
    dirs = {n.rsplit("/", 1)[0] for n in seen if "/" in n}
    for d in dirs:
        parts = d.split("/")
        if any("/".join(parts[:k + 1]) in seen for k in range(len(parts))):
            out.append(f"$.files: {d!r} is both a file and a directory")
    return out


def judging_problems(request: ExecuteRequest, s: Settings) -> list[str]:
    """What is wrong with a request's judging fields (docs/judging.md)."""
    out: list[str] = []
    cases = request.test_cases
    if cases is None:
        if request.checker is not None:
            out.append("$.checker: only with testCases")
        return out
    if not cases:
        out.append("$.testCases: must not be empty")
    if len(cases) > s.max_test_cases:
        out.append(f"$.testCases: at most {s.max_test_cases} test cases (got {len(cases)})")
    for name, value in (("absoluteEpsilon", request.absolute_epsilon),
                        ("relativeEpsilon", request.relative_epsilon)):
        if not 0 <= value < 1e300:    # also false for NaN
            out.append(f"$.{name}: must be a finite number of at least 0")
    for i, case in enumerate(cases[:s.max_test_cases]):
        where = f"$.testCases[{i}]"
        out += _range(f"{where}.runTimeout", case.run_timeout, 1, s.timeout_max)
        out += _range(f"{where}.memoryLimit", case.memory_limit, s.memory_min, s.memory_max)
        if case.args is not None and any("\x00" in a for a in case.args):
            out.append(f"{where}.args: arguments must not contain NUL")
        # An answer longer than the output cap could never be matched.
        if case.expected_output is not None and \
                len(case.expected_output.encode()) > s.output_limit:
            out.append(f"{where}.expectedOutput: longer than the output limit "
                       f"({s.output_limit} bytes)")
    return out


def limits_text(s: Settings) -> str:
    """This server's request limits, for the OpenAPI document (built from the live
    settings at app creation, so the document states the server's own maxima)."""
    mib = 1024 * 1024
    return (f"Limits of this server: `compileTimeout`, `runTimeout` and a case's "
            f"`runTimeout` 1..{s.timeout_max} ms; `memoryLimit`, `compileMemoryLimit` and a "
            f"case's `memoryLimit` {s.memory_min}..{s.memory_max} bytes "
            f"({s.memory_min / mib:g}..{s.memory_max / mib:g} MiB; default "
            f"{s.memory_default / mib:g} MiB); at most {s.max_files} `files`, "
            f"{s.max_test_cases} `testCases` and {s.max_batch} submissions in a batch; "
            f"a body of at most {s.max_body_bytes} bytes ({s.max_batch_body_bytes} for a "
            f"batch); output is cut at {s.output_limit} bytes per stream.")
