"""What goes over the wire, as typed Python: requests you build, answers you read.

Answers are read leniently: fields this version does not know are ignored,
so a newer server does not break an older client.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
StageStatus = Literal["ok", "error", "signal", "timeout", "memory", "output", "skipped"]
Verdict = Literal["accepted", "wrong_answer", "time_limit", "memory_limit", "output_limit",
                  "runtime_error", "compile_error", "skipped", "internal_error"]
Compare = Literal["exact", "trim", "tokens", "float"]

FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


# --- requests ---------------------------------------------------------------------

@dataclass(frozen=True)
class File:
    """One file of a multi-file program; `entrypoint=True` marks the one to run."""
    name: str
    code: str
    entrypoint: bool = False


@dataclass(frozen=True)
class TestCase:
    """One run of a judged program (server docs: judging); unset fields take the program's."""
    __test__ = False   # not a pytest test class, whatever its name

    stdin: str | None = None
    args: Sequence[str] | None = None
    expected_output: str | None = None
    run_timeout: int | None = None      # ms
    memory_limit: int | None = None     # bytes


@dataclass(frozen=True)
class Checker:
    """A custom checker program: exit 0 accepts, 1 or 2 is a wrong answer."""
    language: str
    code: str
    version: str | None = None


@dataclass(frozen=True)
class Program:
    """The body of POST /api/execute and POST /api/jobs. Give `code` or `files`.

    Times are milliseconds and sizes bytes, as on the wire; None leaves the
    server's default.
    """
    language: str
    code: str | None = None
    files: Sequence[File] | None = None
    version: str | None = None
    stdin: str | None = None
    args: Sequence[str] | None = None
    compile_timeout: int | None = None
    run_timeout: int | None = None
    memory_limit: int | None = None
    test_cases: Sequence[TestCase] | None = None
    compare: Compare | None = None
    absolute_epsilon: float | None = None
    relative_epsilon: float | None = None
    stop_on_first_failure: bool | None = None
    checker: Checker | None = None
    callback_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON body: camelCase keys, unset fields left out."""
        return _camel(self)


def _camel(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None or (f.name == "entrypoint" and value is False):
                continue
            head, *rest = f.name.split("_")
            out[head + "".join(p.title() for p in rest)] = _camel(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_camel(v) for v in obj]
    return obj


# --- answers ----------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One stage (compile or run) as the server reports it."""
    status: StageStatus
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    exit_code: int = -1
    signal: str | None = None
    wall_time: int = 0       # ms
    cpu_time: int = 0        # ms
    memory: int = 0          # bytes, peak resident
    truncated: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stage:
        return cls(status=d["status"], stdout=d.get("stdout", ""), stderr=d.get("stderr", ""),
                   output=d.get("output", ""), exit_code=d.get("exitCode", -1),
                   signal=d.get("signal"), wall_time=d.get("wallTime", 0),
                   cpu_time=d.get("cpuTime", 0), memory=d.get("memory", 0),
                   truncated=d.get("truncated", False))


@dataclass(frozen=True)
class CaseResult:
    """A test case's run and its verdict (None when the case had no expected output)."""
    verdict: Verdict | None
    run: Stage

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CaseResult:
        return cls(verdict=d.get("verdict"), run=Stage.from_json(d))


@dataclass(frozen=True)
class Summary:
    verdict: Verdict | None
    passed: int
    total: int
    max_wall_time: int
    max_memory: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Summary:
        return cls(verdict=d.get("verdict"), passed=d["passed"], total=d["total"],
                   max_wall_time=d.get("maxWallTime", 0), max_memory=d.get("maxMemory", 0))


@dataclass(frozen=True)
class ExecuteResult:
    """The answer of POST /api/execute (and a completed job's `result`).

    `run` is the run stage of a plain program; a program with test cases has
    `test_cases` and `summary` instead.
    """
    id: str
    language: str
    version: str
    compile: Stage
    run: Stage | None = None
    test_cases: list[CaseResult] | None = None
    summary: Summary | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExecuteResult:
        cases = d.get("testCases")
        return cls(id=d["id"], language=d["language"], version=d["version"],
                   compile=Stage.from_json(d["compile"]),
                   run=Stage.from_json(d["runtime"]) if d.get("runtime") else None,
                   test_cases=None if cases is None else [CaseResult.from_json(c) for c in cases],
                   summary=Summary.from_json(d["summary"]) if d.get("summary") else None)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True)
class JobRef:
    """What submitting answers: the job's id and its status then."""
    id: str
    status: JobStatus

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JobRef:
        return cls(id=d["id"], status=d["status"])


@dataclass(frozen=True)
class Job:
    """GET /api/jobs/<id>. `result` once completed; `error` when failed."""
    id: str
    status: JobStatus
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result: ExecuteResult | None = None
    error: JobError | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Job:
        error = d.get("error")
        return cls(id=d["id"], status=d["status"], created_at=d["createdAt"],
                   started_at=d.get("startedAt"), finished_at=d.get("finishedAt"),
                   result=ExecuteResult.from_json(d["result"]) if d.get("result") else None,
                   error=JobError(error["code"], error["message"]) if error else None)


@dataclass(frozen=True)
class Runtime:
    language: str
    version: str
    aliases: list[str] = field(default_factory=list)
    compiled: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Runtime:
        return cls(language=d["language"], version=d["version"],
                   aliases=list(d.get("aliases", [])), compiled=bool(d.get("compiled", False)))
