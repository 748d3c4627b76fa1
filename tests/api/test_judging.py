"""Judging over the real app: compile once, run each test case in a fresh sandbox
run, verdicts, jobs (poll, cancel, restart), batches and bad input."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import msgspec
import pytest

from pesto.api.schema import BatchCreated
from pesto.clock import month_of, utcnow
from pesto.models import JudgeResult
from pesto.sandbox.artifacts import artifact_root
from tests.api.conftest import (Api, add_token, assert_error, open_test_store, running_app,
                                wait_uids_free)
from tests.conftest import UID_BASE

# Uids of these tests' own, after the engine tests' block (tests/conftest.py).
JUDGE_UIDS = (UID_BASE + 400, 60)
SANDBOX_DIR = Path("/var/lib/pesto-sandbox")

# Prints a+b, and what its work dir held when it started (one name per line,
# sorted), then leaves a file behind that no later case may see.
ADD_C = r"""
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }
int main(int argc, char **argv) {
    long a, b;
    if (argc > 1 && !strcmp(argv[1], "ls")) {
        DIR *d = opendir("."); struct dirent *e; char *names[64]; int n = 0;
        while ((e = readdir(d)) && n < 64) if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
        qsort(names, n, sizeof *names, cmp);
        for (int i = 0; i < n; i++) fprintf(stderr, "%s\n", names[i]);
        fprintf(stderr, "uid=%d\n", (int)getuid());
        FILE *f = fopen("left-behind", "w"); fputs("x", f); fclose(f);
    }
    if (scanf("%ld %ld", &a, &b) != 2) return 3;
    if (a < 0) { for (;;) {} }
    if (a == 999) { for (;;) putchar('y'); }
    if (a == 777) { volatile char *p = malloc(400 << 20); for (long i = 0; p && i < (400L << 20); i += 4096) p[i] = 1; printf("%d", p ? p[4096] : -1); }
    printf("%ld\n", a + b);
    return 0;
}
"""


def _case(stdin: str, expected: str | None = None, **kw: Any) -> dict[str, Any]:
    case: dict[str, Any] = {"stdin": stdin, **kw}
    if expected is not None:
        case["expectedOutput"] = expected
    return case


@pytest.fixture
def judge_api(data_dir: Path) -> Iterator[Api]:
    with running_app(data_dir, uid_base=JUDGE_UIDS[0], uid_count=JUDGE_UIDS[1]) as api:
        yield api


def _our_artifacts(since: float) -> list[str]:
    root = artifact_root(str(SANDBOX_DIR / "work"))
    if not os.path.isdir(root):
        return []
    return [e.name for e in os.scandir(root) if e.stat().st_mtime >= since]


def test_compile_once_every_case_its_own_fresh_run_and_verdicts(data_dir: Path) -> None:
    started = time.time()
    with running_app(data_dir, uid_base=JUDGE_UIDS[0], uid_count=JUDGE_UIDS[1]) as api:
        body = {"language": "c", "code": ADD_C, "args": ["ls"], "testCases": [
            _case("1 2", "3"),                             # accepted
            _case("2 2", "5\n"),                           # wrong answer
            _case("-1 0", "0", runTimeout=300),            # time limit, the case's own
            _case("x"),                                    # exits 3: runtime error
            _case("999 0", "y"),                           # output flood
            _case("777 0", "1", memoryLimit=64 << 20),     # over the case's memory limit
            _case("40 2"),                                 # no expected output: no verdict
        ]}
        response = api.post("/api/execute", body)
        assert response.status_code == 200, response.text
        msgspec.json.decode(response.content, type=JudgeResult, strict=True)
        result = response.json()
        assert set(result) == set(JudgeResult.__struct_encode_fields__)
        assert result["compile"]["status"] == "ok"
        cases = result["testCases"]
        assert [c["verdict"] for c in cases] == [
            "accepted", "wrong_answer", "time_limit", "runtime_error", "output_limit",
            "memory_limit", None]
        assert cases[0]["stdout"] == "3\n" and cases[6]["stdout"] == "42\n"
        assert cases[3]["exitCode"] == 3 and cases[4]["truncated"] is True
        # The limits are the case's own: 300 ms for the busy loop, not the default 5 s.
        assert 300 <= cases[2]["wallTime"] < 1500
        # Each case starts in a fresh work dir holding only the sources and
        # the compile output: no case sees what another left behind.
        listings = [c["stderr"].splitlines() for c in cases]
        for listing in listings:
            assert listing[:-1] == ["main", "main.c"], listing
        uids = {int(listing[-1].split("=")[1]) for listing in listings}
        assert all(JUDGE_UIDS[0] <= u < sum(JUDGE_UIDS) for u in uids)
        assert len(uids) >= 2          # several slots, several uids
        assert result["summary"] == {
            "verdict": "wrong_answer", "passed": 1, "total": 7,
            "maxWallTime": max(c["wallTime"] for c in cases),
            "maxMemory": max(c["memory"] for c in cases)}
        # The job is stored like any other, with the same answer.
        stored = api.get(f"/api/jobs/{result['id']}").json()
        assert stored["status"] == "completed" and stored["result"] == result
    assert wait_uids_free(SANDBOX_DIR, *JUDGE_UIDS) == []
    assert _our_artifacts(started) == []      # every compile output was removed


def test_compile_error_and_interpreted_language(judge_api: Api) -> None:
    broken = judge_api.post("/api/execute", {
        "language": "c", "code": "int main() { return x; }",
        "testCases": [_case("1", "1"), _case("2", "2")]}).json()
    assert broken["compile"]["status"] == "error"
    assert [c["verdict"] for c in broken["testCases"]] == ["compile_error"] * 2
    assert all(c["status"] == "skipped" for c in broken["testCases"])
    assert broken["summary"]["verdict"] == "compile_error"
    # No compile stage: each case gets the sources; `float` compares numbers.
    floats = judge_api.post("/api/execute", {
        "language": "python", "code": "print(int(input()) / 3)", "compare": "float",
        "absoluteEpsilon": 1e-3, "relativeEpsilon": 0,
        "testCases": [_case("1", "0.3333"), _case("2", "0.6"), _case("3", "1")]}).json()
    assert floats["compile"]["status"] == "skipped"
    assert [c["verdict"] for c in floats["testCases"]] == [
        "accepted", "wrong_answer", "accepted"]
    # exact and tokens
    exact = judge_api.post("/api/execute", {
        "language": "python", "code": "print(input(), end='')", "compare": "exact",
        "testCases": [_case("a b", "a b"), _case("a b", "a b\n")]}).json()
    assert [c["verdict"] for c in exact["testCases"]] == ["accepted", "wrong_answer"]
    tokens = judge_api.post("/api/execute", {
        "language": "python", "code": "print(*input().split(), sep='\\n')", "compare": "tokens",
        "testCases": [_case("a  b", "a b")]}).json()
    assert tokens["summary"] == {"verdict": "accepted", "passed": 1, "total": 1,
                                 "maxWallTime": tokens["testCases"][0]["wallTime"],
                                 "maxMemory": tokens["testCases"][0]["memory"]}


def test_stop_on_first_failure_skips_the_rest(data_dir: Path) -> None:
    # One worker: cases run one after another, so the stop is exact.
    with running_app(data_dir, workers=1, uid_base=JUDGE_UIDS[0], uid_count=JUDGE_UIDS[1]) as api:
        result = api.post("/api/execute", {
            "language": "python", "code": "print(int(input()) * 2)", "stopOnFirstFailure": True,
            "testCases": [_case("1", "2"), _case("2", "5"), _case("3", "6"), _case("4", "8")]}
        ).json()
    assert [c["verdict"] for c in result["testCases"]] == [
        "accepted", "wrong_answer", "skipped", "skipped"]
    assert result["testCases"][2]["status"] == "skipped"
    assert result["summary"]["verdict"] == "wrong_answer" and result["summary"]["passed"] == 1


SLEEPY = ("import time, sys; t = time.time(); time.sleep(0.4); "
          "print(f'{t} {time.time()}')")


def _overlaps(result: dict[str, Any]) -> int:
    spans = [tuple(map(float, c["stdout"].split())) for c in result["testCases"]]
    return sum(1 for i, a in enumerate(spans) for b in spans[i + 1:]
               if a[0] < b[1] and b[0] < a[1])


def test_cases_use_idle_slots_in_parallel_within_the_token_limit(data_dir: Path) -> None:
    six = {"language": "python", "code": SLEEPY, "testCases": [_case("") for _ in range(6)]}
    solo = add_token(data_dir, "solo", max_concurrency=1)
    with running_app(data_dir, workers=3, uid_base=JUDGE_UIDS[0],
                     uid_count=JUDGE_UIDS[1]) as api:
        wide = api.post("/api/execute", six).json()
        assert _overlaps(wide) > 0, wide
        # A token allowed one job at a time gets no extra slot.
        narrow = api.post("/api/execute", six, token=solo).json()
        assert _overlaps(narrow) == 0, narrow
        assert all(c["status"] == "ok" for c in wide["testCases"] + narrow["testCases"])
        # Every borrowed slot came back.
        stats = api.services.scheduler.stats()
        assert stats["running"] == 0 and stats["tracked"] == 0, stats


def _job_count(data_dir: Path) -> int:
    """Jobs stored this month: the store's insert counts each one as an execution."""
    async def count() -> int:
        store = await open_test_store(data_dir)
        try:
            return sum(t.month_executions for t in await store.list_tokens(month_of(utcnow())))
        finally:
            await store.close()
    return asyncio.run(count())


BAD_INPUT = [
    ({"testCases": [{"stdin": 5}]}, "$.testCases[0].stdin"),
    ({"testCases": [{"stdin": "1", "expected": "2"}]}, "$.testCases[0]"),
    ({"testCases": "1 2"}, "$.testCases"),
    ({"testCases": []}, "$.testCases"),
    ({"testCases": [{}] * 6}, "$.testCases: at most 5"),
    ({"testCases": [{"runTimeout": 0}]}, "$.testCases[0].runTimeout"),
    ({"testCases": [{"memoryLimit": 1 << 40}]}, "$.testCases[0].memoryLimit"),
    ({"testCases": [{"expectedOutput": "x" * (64 * 1024 + 1)}]}, "$.testCases[0].expectedOutput"),
    ({"testCases": [{}], "compare": "fuzzy"}, "$.compare"),
    ({"testCases": [{}], "absoluteEpsilon": -1}, "$.absoluteEpsilon"),
    ({"testCases": [{}], "absoluteEpsilon": "0.1"}, "$.absoluteEpsilon"),
    ({"checker": {"language": "python", "code": "pass"}}, "$.checker"),
    ({"testCases": [{}], "checker": {"language": "python"}}, "$.checker.code"),
    ({"testCases": [{}], "callbackUrl": "ftp://example.com/x"}, "$.callbackUrl"),
    ({"testCases": [{}], "callbackUrl": "http://127.0.0.1:9/hook"}, "$.callbackUrl"),
    ({"testCases": [{}], "callbackUrl": "http://10.1.2.3/hook"}, "$.callbackUrl"),
    ({"testCases": [{}], "callbackUrl": "http://169.254.169.254/latest"}, "$.callbackUrl"),
    ({"testCases": [{}], "callbackUrl": "http://[::ffff:169.254.169.254]/"}, "$.callbackUrl"),
    ({"testCases": [{}], "callbackUrl": "http://no-such-host.invalid/hook"}, "$.callbackUrl"),
]


def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(data_dir: Path) -> None:
    with running_app(data_dir, max_test_cases=5, uid_base=JUDGE_UIDS[0],
                     uid_count=JUDGE_UIDS[1]) as api:
        for extra, field in BAD_INPUT:
            for route in ("/api/execute", "/api/jobs"):
                body = {"language": "python", "code": "print(1)", **extra}
                error = assert_error(api.post(route, body), 400, "INVALID_REQUEST")
                assert field in error["message"], (extra, error)
        # A batch with one bad submission among good ones: nothing is queued.
        good = {"language": "python", "code": "print(1)"}
        error = assert_error(api.post("/api/jobs/batch", {"submissions": [
            good, {**good, "testCases": [{"stdin": 1}]}, {**good, "language": "nope"}]}),
            400, "INVALID_REQUEST")
        assert "$.submissions[1].testCases[0].stdin" in error["message"]
        assert "$.submissions[2]" in error["message"]
        for batch in ({"submissions": []}, {"submissions": [good] * 51}, {"jobs": [good]},
                      [good]):
            assert_error(api.post("/api/jobs/batch", batch), 400, "INVALID_REQUEST")
        assert_error(api.get("/api/jobs"), 400, "INVALID_REQUEST")
    assert _job_count(data_dir) == 0


def test_link_local_callbacks_refused_even_when_private_ones_are_allowed(
        data_dir: Path) -> None:
    with running_app(data_dir, allow_private_callbacks=True, uid_base=JUDGE_UIDS[0],
                     uid_count=JUDGE_UIDS[1]) as api:
        body = {"language": "python", "code": "print(1)"}
        for url in ("http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x"):
            error = assert_error(api.post("/api/jobs", {**body, "callbackUrl": url}),
                                 400, "INVALID_REQUEST")
            assert "link-local" in error["message"]
        assert api.post("/api/jobs", {**body, "callbackUrl": "http://127.0.0.1:9/"}
                        ).status_code == 202


def test_batch_in_order_and_fetch_many_in_order(judge_api: Api) -> None:
    subs = [{"language": "python", "code": f"print({i})"} for i in range(3)]
    subs.append({"language": "python", "code": "print(input())",
                 "testCases": [_case("a", "a"), _case("b", "c")]})
    response = judge_api.post("/api/jobs/batch", {"submissions": subs})
    assert response.status_code == 202, response.text
    msgspec.json.decode(response.content, type=BatchCreated, strict=True)
    jobs = response.json()["jobs"]
    assert len(jobs) == 4 and all(j["status"] == "queued" for j in jobs)
    ids = [j["id"] for j in jobs]
    for job_id in ids:
        judge_api.wait_job(job_id)
    order = [ids[3], "nope", ids[0], ids[2], ids[1]]
    fetched = judge_api.get("/api/jobs?ids=" + ",".join(order)).json()["jobs"]
    assert fetched[1] is None
    assert [j["id"] for j in fetched if j] == [ids[3], ids[0], ids[2], ids[1]]
    assert [j["result"]["runtime"]["stdout"] for j in fetched[2:]] == ["0\n", "2\n", "1\n"]
    assert fetched[0]["result"]["summary"]["verdict"] == "wrong_answer"
    # Another token sees none of them.
    other = add_token(judge_api.data_dir, "other")
    assert judge_api.get("/api/jobs?ids=" + ",".join(ids), token=other).json() == {
        "jobs": [None] * 4}


def test_batch_is_refused_whole_when_over_the_token_limit(data_dir: Path) -> None:
    limited = add_token(data_dir, "limited", max_concurrency=2)
    with running_app(data_dir, uid_base=JUDGE_UIDS[0], uid_count=JUDGE_UIDS[1]) as api:
        subs = [{"language": "python", "code": "print(1)"}] * 3
        assert_error(api.post("/api/jobs/batch", {"submissions": subs}, token=limited),
                     429, "TOO_MANY_JOBS")
    assert _job_count(data_dir) == 0


SLOW_CASES = {"language": "python", "code": "import time; time.sleep(20)",
              "testCases": [_case("") for _ in range(4)]}


def test_judged_job_polled_cancelled_and_recovered_after_restart(data_dir: Path) -> None:
    secret = add_token(data_dir, "restarts")
    uids = {"uid_base": JUDGE_UIDS[0], "uid_count": JUDGE_UIDS[1]}
    with running_app(data_dir, secret, workers=2, **uids) as api:
        doomed = api.post("/api/jobs", SLOW_CASES).json()["id"]
        api.wait_status(doomed, "running")
        time.sleep(0.5)
        cancelled = api.delete(f"/api/jobs/{doomed}").json()
        assert cancelled["status"] == "cancelled" and cancelled["result"] is None
    assert wait_uids_free(SANDBOX_DIR, *JUDGE_UIDS) == []
    # A judged job left queued by a shutdown runs after the next start.
    with running_app(data_dir, secret, workers=1, shutdown_timeout=0.5, **uids) as api:
        blocker = api.post("/api/jobs", {"language": "python",
                                         "code": "import time; time.sleep(20)"}).json()["id"]
        api.wait_status(blocker, "running")
        queued = api.post("/api/jobs", {"language": "c", "code": ADD_C, "testCases": [
            _case("1 1", "2"), _case("2 2", "4")]}).json()["id"]
        assert api.get(f"/api/jobs/{queued}").json()["status"] == "queued"
    with running_app(data_dir, secret, workers=1, **uids) as api:
        done = api.wait_job(queued)
        assert done["status"] == "completed"
        assert done["result"]["summary"]["verdict"] == "accepted"
        assert [c["stdout"] for c in done["result"]["testCases"]] == ["2\n", "4\n"]
    assert wait_uids_free(SANDBOX_DIR, *JUDGE_UIDS) == []


CHECKER = """
import sys
inp, expected, actual = (open(name).read() for name in sys.argv[1:4])
# Any order of the expected words is right; 'crash' in the input breaks the checker.
if "crash" in inp:
    raise SystemExit(7)
sys.exit(0 if sorted(actual.split()) == sorted(expected.split()) else 1)
"""


def test_custom_checker_decides_by_its_exit_code(judge_api: Api) -> None:
    result = judge_api.post("/api/execute", {
        "language": "c", "code": ADD_C, "checker": {"language": "python", "code": CHECKER},
        "testCases": [_case("1 2", "3"), _case("1 1", "3"), _case("-1 0", "0", runTimeout=200),
                      _case("crash 1", "x")]}).json()
    assert [c["verdict"] for c in result["testCases"]] == [
        "accepted", "wrong_answer", "time_limit", "runtime_error"]
    unordered = judge_api.post("/api/execute", {
        "language": "python", "code": "print('b a c')",
        "checker": {"language": "python", "code": CHECKER},
        "testCases": [_case("", "a b c"), _case("crash", "a b c")]}).json()
    assert [c["verdict"] for c in unordered["testCases"]] == ["accepted", "internal_error"]
    # A checker in a compiled language is compiled once too.
    c_checker = judge_api.post("/api/execute", {
        "language": "python", "code": "print(input())",
        "checker": {"language": "c", "code": "int main(int c, char **v) { return 0; }"},
        "testCases": [_case("x", "y")]}).json()
    assert c_checker["testCases"][0]["verdict"] == "accepted"


JAVA = """
package judge.demo;
import java.util.Scanner;
public class Doubler {
    public static void main(String[] args) {
        System.out.println(new Scanner(System.in).nextInt() * 2);
    }
}
"""


def test_java_compiled_once_its_classes_reach_every_case(judge_api: Api) -> None:
    result = judge_api.post("/api/execute", {
        "language": "java", "code": JAVA, "compare": "tokens",
        "testCases": [_case("21", "42"), _case("5", "11"), _case("x")]}).json()
    assert result["compile"]["status"] == "ok", result["compile"]
    assert [c["verdict"] for c in result["testCases"]] == [
        "accepted", "wrong_answer", "runtime_error"]
    assert "InputMismatchException" in result["testCases"][2]["stderr"]


def test_borrowed_slots_go_back_to_a_job_that_waits(data_dir: Path) -> None:
    """A judged job spread over every slot does not keep a later job waiting
    until its last case: a borrowed slot goes back once its case is done."""
    with running_app(data_dir, workers=2, uid_base=JUDGE_UIDS[0],
                     uid_count=JUDGE_UIDS[1]) as api:
        judged = api.post("/api/jobs", {
            "language": "python", "code": "import time; print(time.time()); time.sleep(0.5)",
            "testCases": [_case("") for _ in range(8)]}).json()["id"]
        api.wait_status(judged, "running")
        time.sleep(0.3)                       # its cases now hold both slots
        plain = api.post("/api/jobs", {"language": "python", "code": "print(1)"}).json()["id"]
        done = api.wait_job(plain, timeout=30)
        judged_done = api.wait_job(judged, timeout=60)
        assert done["status"] == "completed"
        # The plain job ended before the judged job's last case had started.
        starts = [float(c["stdout"]) for c in judged_done["result"]["testCases"]]
        finished = dt.datetime.fromisoformat(done["finishedAt"].replace("Z", "+00:00"))
        assert finished.timestamp() < max(starts), (done["finishedAt"], starts)
        assert all(c["status"] == "ok" for c in judged_done["result"]["testCases"])
