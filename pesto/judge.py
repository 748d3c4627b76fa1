"""Judging, the pure part: compare an output with the expected one, decide
each test case's verdict, and sum the cases up.

No I/O here: `pesto.judging` runs the cases and calls these functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import msgspec

from pesto.models import CaseResult, Compare, StageResult, Status, Summary, Verdict


# A stage that did not end on its own terms has its verdict whatever it printed.
_BY_STATUS = {
    Status.TIMEOUT: Verdict.TIME_LIMIT,
    Status.MEMORY: Verdict.MEMORY_LIMIT,
    Status.OUTPUT: Verdict.OUTPUT_LIMIT,
    Status.ERROR: Verdict.RUNTIME_ERROR,
    Status.SIGNAL: Verdict.RUNTIME_ERROR,
    Status.SKIPPED: Verdict.SKIPPED,
}

# A number as judges print them: no "nan", "inf", "1_000" or hex, which
# Python's float() would also accept.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def _trimmed_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _close(actual: str, expected: str, absolute: float, relative: float) -> bool:
    if actual == expected:
        return True
    if not (_NUMBER.match(actual) and _NUMBER.match(expected)):
        return False
    a, e = float(actual), float(expected)
    if math.isinf(a) or math.isinf(e):      # overflowed exponents: only equal text matches
        return False
    diff = abs(a - e)
    return diff <= absolute or diff <= relative * abs(e)


def outputs_match(actual: str, expected: str, compare: Compare, *,
                  absolute_epsilon: float = 1e-6, relative_epsilon: float = 1e-6) -> bool:
    """Whether `actual` is an acceptable answer for `expected` under `compare`.

    - exact: byte-for-byte (as decoded text);
    - trim: trailing whitespace of every line and trailing empty lines ignored
      (so CRLF line ends and a missing final newline match);
    - tokens: the whitespace-separated tokens are equal;
    - float: tokens, where two numbers match when they differ by at most
      `absolute_epsilon`, or by at most `relative_epsilon` times the expected
      value; other tokens must be equal.
    """
    if compare is Compare.EXACT:
        return actual == expected
    if compare is Compare.TRIM:
        return _trimmed_lines(actual) == _trimmed_lines(expected)
    got, want = actual.split(), expected.split()
    if compare is Compare.TOKENS:
        return got == want
    return len(got) == len(want) and all(
        _close(g, w, absolute_epsilon, relative_epsilon) for g, w in zip(got, want))


def status_verdict(stage: StageResult) -> Verdict | None:
    """The verdict a stage's status decides alone; None when it exited 0."""
    return _BY_STATUS.get(Status(stage.status))


def summarize(cases: Sequence[CaseResult]) -> Summary:
    """The submission's summary: the first case (in order) that did not pass
    decides the verdict (skipped cases are not failures); `accepted` when at
    least one case was judged and every judged case passed; null when no case
    had a verdict to give (no expected output and every run ok)."""
    verdict: Verdict | None = None
    for case in cases:
        if case.verdict in (None, Verdict.SKIPPED):
            continue
        if case.verdict != Verdict.ACCEPTED:
            verdict = case.verdict
            break
        verdict = Verdict.ACCEPTED
    return Summary(
        verdict=verdict,
        passed=sum(case.verdict == Verdict.ACCEPTED for case in cases),
        total=len(cases),
        max_wall_time=max((case.wall_time for case in cases), default=0),
        max_memory=max((case.memory for case in cases), default=0))


def case_result(stage: StageResult, verdict: Verdict | None) -> CaseResult:
    """A case's answer: its verdict and every field of its run stage."""
    return CaseResult(**msgspec.structs.asdict(stage), verdict=verdict)
