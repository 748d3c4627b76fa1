"""pesto_client against a real `pesto serve`: answers typed, errors as exceptions, retries.

Each property is checked with the blocking client and, where the path
differs (sleeping, polling), with the asyncio one too.
"""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from pesto_client import (AsyncClient, Client, File, InvalidRequest, NotFound, PestoApiError,
                          Program, TestCase, TooManyRequests, Unauthorized, WaitTimeout)

from tests.api.conftest import add_token

HELLO = Program("python", "print(input())", stdin="hello")
SLEEP = Program("python", "import time; time.sleep(30)", run_timeout=20000)


def test_execute_answers_typed_stages(served):
    with Client(served.url, served.token) as pesto:
        result = pesto.execute(HELLO)
        assert result.run is not None
        assert (result.language, result.run.status, result.run.stdout) == ("python", "ok", "hello\n")
        assert result.run.exit_code == 0 and result.run.wall_time > 0 and result.run.memory > 0
        assert result.compile.status == "skipped" and result.test_cases is None
        files = pesto.execute(Program("python", files=[
            File("lib.py", "X = 41"), File("main.py", "import lib; print(lib.X + 1)",
                                            entrypoint=True)]))
        assert files.run and files.run.stdout == "42\n"
        failing = pesto.execute(Program("python", "import sys; sys.exit(3)"))
        assert failing.run and (failing.run.status, failing.run.exit_code) == ("error", 3)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc for the C runtime")
def test_compile_error_is_an_answer_not_an_exception(served):
    with Client(served.url, served.token) as pesto:
        result = pesto.execute(Program("c", "int main( { return 0; }"))
    assert result.compile.status == "error" and result.compile.stderr
    assert result.run is not None and result.run.status == "skipped"


def test_submit_get_wait_and_cancel(served):
    with Client(served.url, served.token) as pesto:
        ref = pesto.submit(HELLO)
        assert ref.status == "queued" and len(ref.id) == 32
        job = pesto.wait(ref.id, timeout=30)
        assert job.status == "completed" and job.finished and job.error is None
        assert job.result and job.result.run and job.result.run.stdout == "hello\n"
        assert pesto.get(ref.id) == job
        sleeper = pesto.submit(SLEEP)
        with pytest.raises(WaitTimeout) as waited:
            pesto.wait(sleeper.id, timeout=0.3, interval=0.1)
        assert waited.value.job_id == sleeper.id and waited.value.status in ("queued", "running")
        cancelled = pesto.cancel(sleeper.id)
        assert cancelled.status == "cancelled" and cancelled.result is None


def test_runtimes(served):
    with Client(served.url) as pesto:    # no token needed
        runtimes = pesto.runtimes()
    python = next(r for r in runtimes if r.language == "Python")
    assert "py" in python.aliases and python.compiled is False


def test_every_error_is_an_exception_with_the_servers_words(served):
    with Client(served.url, "pesto_not-a-token") as stranger:
        with pytest.raises(Unauthorized) as denied:
            stranger.execute(HELLO)
    assert (denied.value.status, denied.value.code) == (401, "TOKEN_INVALID")
    assert denied.value.message and denied.value.retry_after is None
    with Client(served.url) as anonymous, pytest.raises(Unauthorized) as missing:
        anonymous.submit(HELLO)
    assert missing.value.code == "TOKEN_MISSING"
    with Client(served.url, served.token) as pesto:
        with pytest.raises(InvalidRequest) as unknown:
            pesto.execute(Program("cobol-2087", "x"))
        assert (unknown.value.status, unknown.value.code) == (400, "RUNTIME_NOT_FOUND")
        with pytest.raises(InvalidRequest) as bad:
            pesto.execute(Program("python", "1", run_timeout=0))
        assert bad.value.code == "INVALID_REQUEST"
        assert any("runTimeout" in d for d in bad.value.details)
        with pytest.raises(NotFound) as gone:
            pesto.get("0" * 32)
        assert (gone.value.status, gone.value.code) == (404, "NOT_FOUND")
    assert isinstance(gone.value, PestoApiError)


def test_retries_honour_retry_after_and_are_opt_in(served):
    secret = add_token(served.data_dir, "one-at-a-time", max_concurrency=1)
    with Client(served.url, secret) as plain, \
            Client(served.url, secret, retries=10) as patient, \
            Client(served.url, secret, retries=10, max_retry_wait=0.5) as hasty:
        busy = plain.submit(Program("python", "import time; time.sleep(2.5)"))
        # Without retries: the 429 at once, with the server's Retry-After.
        started = time.monotonic()
        with pytest.raises(TooManyRequests) as refused:
            plain.execute(HELLO)
        assert refused.value.code == "TOO_MANY_JOBS" and refused.value.retry_after >= 1
        assert time.monotonic() - started < 1
        # A Retry-After longer than max_retry_wait is not waited for.
        with pytest.raises(TooManyRequests):
            hasty.execute(HELLO)
        # With retries: sent again after Retry-After until the busy job is done.
        result = patient.execute(HELLO)
        took = time.monotonic() - started
        assert result.run and result.run.stdout == "hello\n"
        assert took >= 1.0, "it retried without waiting Retry-After"
        assert plain.get(busy.id).status == "completed"


def test_async_client_same_answers(served):
    async def go():
        async with AsyncClient(served.url, served.token) as pesto:
            result, ref, runtimes = await asyncio.gather(
                pesto.execute(HELLO), pesto.submit(HELLO), pesto.runtimes())
            job = await pesto.wait(ref.id, timeout=30)
            sleeper = await pesto.submit(SLEEP)
            with pytest.raises(WaitTimeout):
                await pesto.wait(sleeper.id, timeout=0.3, interval=0.1)
            cancelled = await pesto.cancel(sleeper.id)
            with pytest.raises(NotFound):
                await pesto.get("0" * 32)
            return result, job, runtimes, cancelled

    result, job, runtimes, cancelled = asyncio.run(go())
    assert result.run and result.run.stdout == "hello\n"
    assert job.result and job.result.run and job.result.run.stdout == "hello\n"
    assert any(r.language == "Python" for r in runtimes)
    assert cancelled.status == "cancelled"


def test_async_retries(served):
    secret = add_token(served.data_dir, "async-one-at-a-time", max_concurrency=1)

    async def go():
        async with AsyncClient(served.url, secret, retries=10) as pesto:
            await pesto.submit(Program("python", "import time; time.sleep(2)"))
            started = time.monotonic()
            result = await pesto.execute(HELLO)
            return result, time.monotonic() - started

    result, took = asyncio.run(go())
    assert result.run and result.run.stdout == "hello\n" and took >= 1.0


def test_test_cases(served):
    with Client(served.url, served.token) as pesto:
        result = pesto.execute(Program(
            "python", "a, b = map(int, input().split()); print(a + b)", test_cases=[
                TestCase(stdin="1 2", expected_output="3"),
                TestCase(stdin="2 2", expected_output="5"),
                TestCase(stdin="5 5")]))
    assert result.run is None and result.test_cases is not None and result.summary is not None
    assert [c.verdict for c in result.test_cases] == ["accepted", "wrong_answer", None]
    assert result.test_cases[2].run.stdout == "10\n"
    assert (result.summary.passed, result.summary.total) == (1, 3)
    assert result.summary.verdict == "wrong_answer"


def test_batches(served):
    with Client(served.url, served.token) as pesto:
        refs = pesto.submit_batch([Program("python", f"print({i})") for i in range(3)])
        assert [r.status for r in refs] == ["queued"] * 3
        for ref in refs:
            pesto.wait(ref.id, timeout=30)
        jobs = pesto.get_many([refs[2].id, "0" * 32, refs[0].id])
        assert jobs[1] is None
        assert [j.result.run.stdout for j in (jobs[0], jobs[2])] == ["2\n", "0\n"]
        with pytest.raises(InvalidRequest) as bad:
            pesto.submit_batch([HELLO, Program("python", "1", run_timeout=0)])
        assert bad.value.code == "INVALID_REQUEST"
