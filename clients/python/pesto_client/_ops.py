"""The API's operations, written once for both clients.

Each operation is a generator that yields what it needs done — a `Call`
(one HTTP request; the client sends back the decoded JSON of a success, or
raises the error) or a `Pause` — and returns its typed answer. The sync and
the async client each drive these with their own I/O (`_drive`), so
polling, parsing and retry rules exist once.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import httpx

from pesto_client.errors import WaitTimeout, retry_after
from pesto_client.models import ExecuteResult, Job, JobRef, Program, Runtime

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class Pause:
    seconds: float


Op = Generator[Union[Call, Pause], Any, T]


@dataclass(frozen=True)
class RetryPolicy:
    """Opt-in retries of answers that say "not now": 429 and 503 with Retry-After.

    A refused request was not run (the server stores nothing before it accepts
    a job), so sending it again is safe. A wait longer than `max_wait` (a
    monthly quota's weeks) is not waited for: the error is raised at once.
    """
    retries: int = 0
    max_wait: float = 60.0
    default_wait: float = 1.0      # a 503 without Retry-After (a proxy's)

    def delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending again, or None: do not retry."""
        if response.status_code not in (429, 503) or attempt >= self.retries:
            return None
        wait = retry_after(response)
        wait = self.default_wait if wait is None else wait
        return None if wait > self.max_wait else float(wait)


def execute(program: Program) -> Op[ExecuteResult]:
    return ExecuteResult.from_json((yield Call("POST", "/api/execute", program.to_json())))


def submit(program: Program) -> Op[JobRef]:
    return JobRef.from_json((yield Call("POST", "/api/jobs", program.to_json())))


def submit_batch(programs: Sequence[Program]) -> Op[list[JobRef]]:
    body = {"submissions": [p.to_json() for p in programs]}
    answer = yield Call("POST", "/api/jobs/batch", body)
    return [JobRef.from_json(j) for j in answer["jobs"]]


def get(job_id: str) -> Op[Job]:
    return Job.from_json((yield Call("GET", f"/api/jobs/{job_id}")))


def get_many(job_ids: Sequence[str]) -> Op[list[Job | None]]:
    answer = yield Call("GET", "/api/jobs", params={"ids": ",".join(job_ids)})
    return [None if j is None else Job.from_json(j) for j in answer["jobs"]]


def cancel(job_id: str) -> Op[Job]:
    return Job.from_json((yield Call("DELETE", f"/api/jobs/{job_id}")))


def wait(job_id: str, timeout: float, interval: float) -> Op[Job]:
    """Poll until the job is finished; raises WaitTimeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job = Job.from_json((yield Call("GET", f"/api/jobs/{job_id}")))
        left = deadline - time.monotonic()
        if job.finished:
            return job
        if left <= 0:
            raise WaitTimeout(job_id, job.status, timeout)
        yield Pause(min(interval, left))


def runtimes() -> Op[list[Runtime]]:
    answer = yield Call("GET", "/api/runtimes")
    return [Runtime.from_json(r) for r in answer["runtime"]]
