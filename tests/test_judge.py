"""pesto.judge: output comparison, verdicts and the summary (pure; no root needed)."""

from __future__ import annotations

import pytest

from pesto.judge import Verdict, case_result, outputs_match, status_verdict, summarize
from pesto.models import Compare, StageResult, Status


@pytest.mark.parametrize("actual, expected, compare, ok", [
    ("3\n", "3\n", Compare.EXACT, True),
    ("3", "3\n", Compare.EXACT, False),
    ("3 \n", "3\n", Compare.EXACT, False),
    # trim: trailing blanks per line, CRLF, a missing or extra final newline
    ("3", "3\n", Compare.TRIM, True),
    ("1 2  \r\n3\t\n\n\n", "1 2\n3", Compare.TRIM, True),
    (" 3\n", "3\n", Compare.TRIM, False),              # leading space matters
    ("1\n\n2\n", "1\n2\n", Compare.TRIM, False),       # an empty line inside matters
    ("1 2\n", "1  2\n", Compare.TRIM, False),
    # tokens: any whitespace between tokens
    ("1   2\n\n3", "1 2 3", Compare.TOKENS, True),
    ("1 2", "1 2 3", Compare.TOKENS, False),
    ("", "", Compare.TOKENS, True),
    # float: numbers within epsilon, other tokens equal
    ("0.3333333", "0.333333", Compare.FLOAT, True),
    ("0.334", "0.333", Compare.FLOAT, False),
    ("YES 1e6", "YES 1000000.0000001", Compare.FLOAT, True),
    ("NO 1", "YES 1", Compare.FLOAT, False),
    ("nan", "nan", Compare.FLOAT, True),                # equal text is equal
    ("nan", "0", Compare.FLOAT, False),                 # not a number to judges
    ("1_000", "1000", Compare.FLOAT, False),
    ("1e999", "1e998", Compare.FLOAT, False),           # overflow is not closeness
    ("1 2", "1", Compare.FLOAT, False),
])
def test_compare_modes(actual: str, expected: str, compare: Compare, ok: bool) -> None:
    assert outputs_match(actual, expected, compare) is ok


def test_float_epsilons_absolute_or_relative() -> None:
    assert outputs_match("100.5", "100", Compare.FLOAT, absolute_epsilon=0.5, relative_epsilon=0)
    assert not outputs_match("100.6", "100", Compare.FLOAT, absolute_epsilon=0.5,
                             relative_epsilon=0)
    assert outputs_match("1000001", "1000000", Compare.FLOAT, absolute_epsilon=0,
                         relative_epsilon=1e-6)
    assert not outputs_match("1000002", "1000000", Compare.FLOAT, absolute_epsilon=0,
                             relative_epsilon=1e-6)


@pytest.mark.parametrize("status, verdict", [
    (Status.OK, None), (Status.ERROR, Verdict.RUNTIME_ERROR),
    (Status.SIGNAL, Verdict.RUNTIME_ERROR), (Status.TIMEOUT, Verdict.TIME_LIMIT),
    (Status.MEMORY, Verdict.MEMORY_LIMIT), (Status.OUTPUT, Verdict.OUTPUT_LIMIT),
    (Status.SKIPPED, Verdict.SKIPPED),
])
def test_status_decides_every_verdict_but_the_answer(status: Status, verdict) -> None:
    assert status_verdict(StageResult(status=status)) is verdict


def _case(verdict: Verdict | None, wall: int = 1, memory: int = 10):
    return case_result(StageResult(status=Status.OK, wall_time=wall, memory=memory), verdict)


def test_summary_first_failure_in_order_decides() -> None:
    cases = [_case(Verdict.ACCEPTED, 5, 100), _case(Verdict.TIME_LIMIT, 900, 50),
             _case(Verdict.WRONG_ANSWER), _case(Verdict.SKIPPED)]
    s = summarize(cases)
    assert (s.verdict, s.passed, s.total, s.max_wall_time, s.max_memory) == \
        ("time_limit", 1, 4, 900, 100)


def test_summary_accepted_only_when_something_was_judged() -> None:
    assert summarize([_case(Verdict.ACCEPTED), _case(None)]).verdict == "accepted"
    assert summarize([_case(None), _case(None)]).verdict is None
    assert summarize([]).verdict is None and summarize([]).total == 0
    # skipped cases (after a stop) are not the failure: the case that stopped it is
    assert summarize([_case(Verdict.SKIPPED), _case(Verdict.RUNTIME_ERROR)]).verdict == \
        "runtime_error"


def test_case_result_keeps_every_stage_field() -> None:
    stage = StageResult(stdout="o", stderr="e", output="oe", exit_code=3, signal=None,
                        status=Status.ERROR, wall_time=7, cpu_time=6, memory=5, truncated=True)
    case = case_result(stage, Verdict.RUNTIME_ERROR)
    assert (case.verdict, case.stdout, case.stderr, case.output, case.exit_code, case.status,
            case.wall_time, case.cpu_time, case.memory, case.truncated) == \
        ("runtime_error", "o", "e", "oe", 3, Status.ERROR, 7, 6, 5, True)


def test_operator_settings_for_judging_from_the_environment() -> None:
    from pesto.config import load_settings
    s = load_settings(env={"PESTO_ALLOW_PRIVATE_CALLBACKS": "1", "PESTO_MAX_TEST_CASES": "7",
                           "PESTO_MAX_BATCH": "3"})
    assert (s.allow_private_callbacks, s.max_test_cases, s.max_batch) == (True, 7, 3)
    assert load_settings(env={}).allow_private_callbacks is False
