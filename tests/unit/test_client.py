"""The client's pure parts: the request body it writes and its retry rule (no server)."""

from __future__ import annotations

import email.utils
import time

import httpx
from pesto_client import Checker, File, Program, TestCase
from pesto_client._ops import RetryPolicy
from pesto_client.errors import Unavailable, from_response, retry_after


def test_program_body_is_camel_case_without_unset_fields():
    body = Program("c", files=[File("main.c", "int main(){}", entrypoint=True), File("a.h", "")],
                   run_timeout=2000, stop_on_first_failure=True, compare="float",
                   absolute_epsilon=1e-6, callback_url="https://example.org/hook",
                   checker=Checker("python", "import sys"),
                   test_cases=[TestCase(stdin="1", expected_output="2", memory_limit=1 << 20)]
                   ).to_json()
    assert body == {
        "language": "c", "runTimeout": 2000, "stopOnFirstFailure": True, "compare": "float",
        "absoluteEpsilon": 1e-6, "callbackUrl": "https://example.org/hook",
        "files": [{"name": "main.c", "code": "int main(){}", "entrypoint": True},
                  {"name": "a.h", "code": ""}],
        "checker": {"language": "python", "code": "import sys"},
        "testCases": [{"stdin": "1", "expectedOutput": "2", "memoryLimit": 1048576}]}
    assert Program("python", "print(1)").to_json() == {"language": "python", "code": "print(1)"}


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    return httpx.Response(status, headers=headers, content=body)


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after(answer(429, {"Retry-After": "7"})) == 7
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after(answer(503, {"Retry-After": later})) <= 31
    assert retry_after(answer(503, {"Retry-After": "soon"})) is None
    assert retry_after(answer(503)) is None


def test_retry_policy_retries_only_not_now_answers_within_bounds():
    policy = RetryPolicy(retries=2, max_wait=10)
    assert policy.delay(answer(429, {"Retry-After": "3"}), 0) == 3.0
    assert policy.delay(answer(503), 1) == 1.0                 # no Retry-After: default wait
    assert policy.delay(answer(429, {"Retry-After": "3"}), 2) is None   # attempts used up
    assert policy.delay(answer(429, {"Retry-After": "3600"}), 0) is None  # longer than max_wait
    assert policy.delay(answer(400), 0) is None and policy.delay(answer(500), 0) is None
    assert RetryPolicy().delay(answer(429, {"Retry-After": "1"}), 0) is None   # opt-in


def test_an_error_without_our_json_still_becomes_an_exception():
    err = from_response(answer(503, {"Retry-After": "2"}, b"<html>bad gateway</html>"))
    assert isinstance(err, Unavailable)
    assert (err.status, err.code, err.retry_after) == (503, "HTTP_503", 2)
    assert "bad gateway" in err.message
