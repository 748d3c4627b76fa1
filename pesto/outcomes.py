"""When is a job's outcome saved? Here, and always in this order.

A job ends on the node that ran it (completed, failed, cancelled, or cut
short by a shutdown), or, when cancelled while still queued, on the node
that cancelled it. The scheduler's run task (or the cancel of a queued
job) calls `Outcomes.conclude`, which:

1. saves the outcome: one `finish_job` of the store, committed (the job's
   row becomes completed / failed / cancelled with its result or error);
2. only then hands it over (`hand_over`): the scheduler frees what the job
   held and resolves the future a waiting handler (POST /api/execute, the
   Piston route) awaits, so the answer is written after the commit;
3. then queues the job's callback (webhook), if it has one.

On many nodes (pesto.cluster) a job cancelled while in the shared queue is
saved by the store's `cancel_queued` (only if no node has claimed it), then
handed over; a waiter on another node than the one that ran the job reads
the saved row back (`outcome_of`). A shutdown tells a waiter whose job is
still queued what the store holds (`still_queued`); nothing is saved for it.

The guarantee:

- A job is never lost: it is stored (queued or running) before it runs,
  and a job whose end was not saved stays `running` in the store until the
  next start (one node) or its node's lease (many nodes) marks it failed
  `INTERRUPTED`; it is never run twice.
- An answer is never sent for an outcome that was not saved: when the save
  fails, the failure is logged and the waiter is told `INTERNAL_ERROR`
  instead of the result, and no callback is queued.
- Once a waiter has its answer, every read of the job, on any node, sees
  it finished with that outcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from pesto.clock import utcnow
from pesto.domain import Job, JobStatus
from pesto.errors import JobCancelled, PestoError, ShuttingDown

log = logging.getLogger("pesto.jobs")


@attrs.frozen
class Outcome:
    status: JobStatus
    result: bytes | None = None          # the execute response as JSON, when completed
    error: PestoError | None = None      # why, when failed or cancelled


def error_json(exc: PestoError) -> str:
    """An error as the job's stored `error` column holds it."""
    return json.dumps({"code": exc.code, "message": exc.message})


class FinishStore(Protocol):
    async def finish_job(self, job_id: str, status: JobStatus, finished_at: str, *,
                         result: str | None = None, error: str | None = None,
                         announce: bool = True) -> None: ...


# Called with (job id, token id, callback URL) once a job's end is saved.
OnFinish = Callable[[str, int, str], Awaitable[None]]


class Outcomes:
    """Saves jobs' ends in one store and hands them over, in the order of the module docstring."""

    def __init__(self, store: FinishStore) -> None:
        self._store = store
        self.on_finish: OnFinish | None = None

    async def conclude(self, job_id: str, token_id: int, callback_url: str | None,
                       outcome: Outcome, hand_over: Callable[[Outcome], None], *,
                       announce: bool = True) -> Outcome:
        """Save `outcome`, then call `hand_over` with what the waiter is told, then
        queue the callback. Returns what was handed over: `outcome` once saved,
        else an `INTERNAL_ERROR` failure (the save failed and was logged).

        `hand_over` must not raise; nothing here raises but `CancelledError`.
        `announce` False: no other node waits for this job (the store need not tell them).
        """
        try:
            await self._store.finish_job(
                job_id, outcome.status, utcnow(),
                result=outcome.result.decode() if outcome.result is not None else None,
                error=error_json(outcome.error) if outcome.status is JobStatus.FAILED
                and outcome.error is not None else None, announce=announce)
        except Exception:
            log.exception("job %s: could not save its outcome (%s)", job_id, outcome.status.value)
            told = Outcome(JobStatus.FAILED, error=PestoError(
                f"job {job_id} ended but its outcome could not be saved; the failure was logged"))
            hand_over(told)
            return told
        hand_over(outcome)
        await self.callback(job_id, token_id, callback_url)
        return outcome

    async def callback(self, job_id: str, token_id: int, callback_url: str | None) -> None:
        """Queue the callback of a job whose end is saved (here or by `recover`/a lease)."""
        if self.on_finish is None or not callback_url:
            return
        try:
            await self.on_finish(job_id, token_id, callback_url)
        except Exception:
            log.exception("job %s: could not queue its callback", job_id)


def outcome_of(job: Job | None) -> Outcome:
    """The saved outcome of a finished job, as a waiter on another node is told it."""
    if job is None:
        return Outcome(JobStatus.FAILED, error=PestoError("the job is gone from the store"))
    if job.status is JobStatus.COMPLETED and job.result is not None:
        return Outcome(JobStatus.COMPLETED, result=job.result.encode())
    if job.status is JobStatus.CANCELLED:
        return Outcome(JobStatus.CANCELLED, error=JobCancelled("the job was cancelled"))
    stored = json.loads(job.error) if job.error else {}
    cls = _error_classes().get(stored.get("code", ""), PestoError)
    return Outcome(JobStatus.FAILED, error=cls(stored.get("message") or "the job failed"))


def still_queued(message: str) -> Outcome:
    """What a waiter is told at shutdown for a job that stays queued in the store."""
    return Outcome(JobStatus.QUEUED, error=ShuttingDown(message, retry_after=5))


def _error_classes() -> dict[str, type[PestoError]]:
    found: dict[str, type[PestoError]] = {}
    todo = [PestoError]
    while todo:
        cls = todo.pop()
        found.setdefault(getattr(cls, "code", ""), cls)
        todo.extend(cls.__subclasses__())
    return found
