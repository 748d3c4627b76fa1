"""Judging a submission: compile once, run every test case, give verdicts.

The compile stage runs as in any job, and its work dir is kept as an
artifact (pesto.sandbox.artifacts). Each case then runs in a sandbox session
of its own: a fresh uid, an empty work dir seeded with that artifact (or
with the sources, for a language without a compile stage), the same layers
and limits as any run stage. Its figures are its own run's. A custom
checker is compiled once the same way and run, sandboxed, after each case
with the case's input, expected and actual output as files.

The job holds one scheduler slot; a `Lender` (the scheduler) may grant more
while it has idle ones and the token is under its concurrency limit, so
cases run side by side; each borrowed slot is handed back as soon as its
worker finds no case left to start, or once its case is done if another
job is waiting for a slot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Protocol

import attrs
import msgspec

from pesto.errors import PestoError
from pesto.judge import Verdict, case_result, outputs_match, status_verdict, summarize
from pesto.models import (NO_COMPILE, SKIPPED, CaseResult, ExecuteRequest, JudgeResult,
                          StageResult, Status, TestCase)
from pesto.sandbox import artifacts

if TYPE_CHECKING:
    from pesto.engine import Engine
    from pesto.runtimes import Runtime

log = logging.getLogger("pesto.judging")

# The checker's view of a case, as files in its work dir (and its argv).
CHECKER_FILES = ("input.txt", "expected.txt", "actual.txt")


class Lender(Protocol):
    def try_borrow(self) -> bool:
        """Take one more slot for this job if one is idle and allowed; never waits."""

    def release(self) -> None:
        """Give back a slot taken by try_borrow."""

    def wanted_back(self) -> bool:
        """Whether another job waits for a slot: borrowed ones go back after their case."""


@attrs.define
class _Prepared:
    """A program ready to run in fresh work dirs: an artifact, or its sources."""
    runtime: "Runtime"
    entry: str
    files: list[tuple[str, str | bytes]]   # written into each run's dir when there is no artifact
    artifact: str | None = None


async def _prepare(engine: "Engine", runtime: "Runtime", request: ExecuteRequest,
                   files: list[tuple[str, str | bytes]], entry: str,
                   keep: list[str]) -> tuple[_Prepared, StageResult]:
    """Compile once if the language does; returns the program and its compile stage."""
    if not runtime.compiled:
        return _Prepared(runtime, entry, files), NO_COMPILE
    name = uuid.uuid4().hex
    keep.append(name)
    async with engine.sandbox.session() as session:
        workdir = await session.prepare(files)
        result = await engine.compile(session, runtime, request, workdir,
                                      engine.context(runtime, entry, workdir),
                                      more=False, snapshot=name)
    if result.status == Status.OK and session.snapshot_error:
        # What the compiler left cannot be carried over: the program's fault.
        result = msgspec.structs.replace(result, status=Status.ERROR, exit_code=1, stderr=(
            result.stderr + f"pesto: the compile output cannot be used: {session.snapshot_error}\n"))
    return _Prepared(runtime, entry, [] if result.status == Status.OK else files, name), result


async def _run_in_fresh_dir(engine: "Engine", program: _Prepared,
                            extra: list[tuple[str, str | bytes]],
                            *, args: list[str], stdin: str, timeout: int | None,
                            memory: int | None) -> StageResult:
    async with engine.sandbox.session() as session:
        workdir = await session.prepare(program.files + extra, program.artifact)
        return await engine.run(session, program.runtime, workdir,
                                engine.context(program.runtime, program.entry, workdir),
                                args=args, stdin=stdin, timeout=timeout, memory=memory)


async def _check(engine: "Engine", checker: _Prepared, stdin: str, expected: str,
                 actual: str) -> Verdict:
    """The checker's verdict: exit 0 accepted, 1 or 2 wrong answer, anything else
    (a crash, a timeout, another code) is the checker's failure: internal_error."""
    stage = await _run_in_fresh_dir(
        engine, checker, list(zip(CHECKER_FILES, (stdin, expected, actual))),
        args=list(CHECKER_FILES), stdin="", timeout=None, memory=None)
    if stage.status == Status.OK:
        return Verdict.ACCEPTED
    if stage.status == Status.ERROR and stage.exit_code in (1, 2):
        return Verdict.WRONG_ANSWER
    log.warning("checker failed: status=%s exit=%s stderr=%r", Status(stage.status).value,
                stage.exit_code, stage.stderr[:200])
    return Verdict.INTERNAL_ERROR


async def _judge_case(engine: "Engine", request: ExecuteRequest, program: _Prepared,
                      checker: _Prepared | None, case: TestCase) -> CaseResult:
    stdin = case.stdin if case.stdin is not None else request.stdin
    try:
        stage = await _run_in_fresh_dir(
            engine, program, [], args=case.args if case.args is not None else request.args,
            stdin=stdin, timeout=case.run_timeout or request.run_timeout,
            memory=case.memory_limit or request.memory_limit)
    except PestoError as exc:       # the sandbox failed, not the program
        log.error("test case run failed: %s: %s", exc.code, exc.message)
        return case_result(SKIPPED, Verdict.INTERNAL_ERROR)
    verdict = status_verdict(stage)
    if verdict is None and checker is not None:
        try:
            verdict = await _check(engine, checker, stdin, case.expected_output or "",
                                   stage.stdout)
        except PestoError as exc:
            log.error("checker run failed: %s: %s", exc.code, exc.message)
            verdict = Verdict.INTERNAL_ERROR
    elif verdict is None and case.expected_output is not None:
        verdict = Verdict.ACCEPTED if outputs_match(
            stage.stdout, case.expected_output, request.compare,
            absolute_epsilon=request.absolute_epsilon,
            relative_epsilon=request.relative_epsilon) else Verdict.WRONG_ANSWER
    return case_result(stage, verdict)


async def judge(engine: "Engine", runtime: "Runtime", request: ExecuteRequest, job_id: str,
                lender: Lender | None) -> JudgeResult:
    """Compile once, run every case (in parallel where slots are lent), sum up."""
    assert request.test_cases is not None
    cases = request.test_cases
    keep: list[str] = []      # artifacts to remove at the end, whatever happens
    try:
        files, entry = engine.sources(request.code, request.files, runtime)
        program, compiled = await _prepare(engine, runtime, request, files, entry, keep)
        if compiled.status not in (Status.OK, Status.SKIPPED):
            results = [case_result(SKIPPED, Verdict.COMPILE_ERROR) for _ in cases]
            return JudgeResult(job_id, request.language, runtime.version, compiled, results,
                               summarize(results))
        checker = None
        if request.checker is not None:
            c_runtime = engine.registry.resolve(request.checker.language, request.checker.version)
            c_files, c_entry = engine.sources(request.checker.code, None, c_runtime)
            checker, c_compiled = await _prepare(engine, c_runtime, request, c_files, c_entry,
                                                 keep)
            if c_compiled.status not in (Status.OK, Status.SKIPPED):
                log.warning("job %s: the checker did not compile: %r", job_id,
                            c_compiled.stderr[:300])
                results = [case_result(SKIPPED, Verdict.INTERNAL_ERROR) for _ in cases]
                return JudgeResult(job_id, request.language, runtime.version, compiled, results,
                                   summarize(results))
        results = await _run_cases(engine, request, program, checker, lender)
        return JudgeResult(job_id, request.language, runtime.version, compiled, results,
                           summarize(results))
    finally:
        for name in keep:
            artifacts.remove(engine.sandbox.work_root, name)


async def _run_cases(engine: "Engine", request: ExecuteRequest, program: _Prepared,
                     checker: _Prepared | None, lender: Lender | None) -> list[CaseResult]:
    """Every case's result, in order. Cases start in order; with
    stopOnFirstFailure none starts after a failure (those that already run
    finish and are reported), and the rest are `skipped`."""
    cases = request.test_cases
    assert cases is not None
    results: list[CaseResult | None] = [None] * len(cases)
    next_case = 0
    stopped = False
    workers = 1

    async def worker(borrowed: bool) -> None:
        nonlocal next_case, stopped, workers
        try:
            while not stopped and next_case < len(cases) and \
                    not (borrowed and lender.wanted_back()):      # type: ignore[union-attr]
                index = next_case
                next_case += 1
                # More cases waiting than workers: ask for one more slot.
                while lender is not None and len(cases) - next_case >= workers \
                        and lender.try_borrow():
                    workers += 1
                    group.create_task(worker(True), name="judge-case-worker")
                result = await _judge_case(engine, request, program, checker, cases[index])
                results[index] = result
                if request.stop_on_first_failure and result.verdict not in (
                        None, Verdict.ACCEPTED):
                    stopped = True
        finally:
            workers -= 1
            if borrowed:
                lender.release()      # type: ignore[union-attr]

    async with asyncio.TaskGroup() as group:
        group.create_task(worker(False), name="judge-case-worker")
    return [r if r is not None else case_result(SKIPPED, Verdict.SKIPPED) for r in results]
