"""The scheduler: a bounded queue in front of a fixed number of run slots.

- A job takes a slot before it takes any work: `submit` either reserves a free
  slot at once (the job is persisted already `running`, one write on the hot
  path) or a place in the bounded queue (persisted `queued`); a full queue is
  `QueueFull` (503), a token over its concurrency limit is `TooManyJobs` (429).
- Each run is one named task (`job-<id>`); when it ends it records the
  outcome, frees its slot and starts the oldest queued job. A completed job
  whose client waits (`POST /api/execute`) is recorded by that client's
  handler right after the answer is written, in the same step of the event
  loop (`record`), so that the commit is not on the answer's path and no
  later request can see the job unfinished; if the handler never does, a
  timer records it (`RECORD_GRACE`), and so does `close`.
- Cancelling a queued job drops it from the queue; cancelling a running one
  cancels its task, which makes the engine kill the run.
- `recover` (start-up) fails every job a crash left `running` — untrusted code
  is never silently run twice — and queues every job left `queued`.
- `close` (shutdown) stops intake, lets running jobs finish within the
  timeout, then cancels the rest and records them failed. Queued jobs stay
  `queued` in the store and run after the next start.

The scheduler knows jobs, tokens and the engine; it knows nothing of HTTP or SQL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import msgspec

from pesto.errors import (PestoError, QueueFull, SandboxError, ShuttingDown, TooManyJobs)
from pesto.metrics import Metrics
from pesto.models import ExecuteRequest, ExecuteResult, JudgeResult, Status, parse_request
from pesto.store import Job, JobStatus, Store, Token, utcnow

log = logging.getLogger("pesto.jobs")

_encode = msgspec.json.Encoder().encode

RECORD_GRACE = 1.0      # seconds a waiting handler has to record its job's outcome


class EngineLike(Protocol):
    async def execute(self, request: ExecuteRequest, job_id: str, *,
                      lender: "_Lender") -> ExecuteResult | JudgeResult: ...


class JobCancelled(PestoError):
    """A job was cancelled (DELETE /api/jobs/<id>) while its client waited for it."""
    status_code = 409
    code = "JOB_CANCELLED"


class Interrupted(PestoError):
    """The server stopped (crash or shutdown) while the job was running."""
    status_code = 500
    code = "INTERRUPTED"


def error_json(exc: PestoError) -> str:
    return json.dumps({"code": exc.code, "message": exc.message})


@attrs.frozen
class Outcome:
    status: JobStatus
    result: bytes | None = None          # the execute response as JSON, when completed
    error: PestoError | None = None      # why, when failed or cancelled


@attrs.define(eq=False)
class _Entry:
    job_id: str
    request: ExecuteRequest
    token_id: int
    token_name: str
    created: float                       # monotonic, for the log line
    done: asyncio.Future[Outcome]
    task: asyncio.Task[None] | None = None
    queued: bool = False                 # sitting in the deque
    running_in_store: bool = False       # persisted as running already
    executing: bool = False              # inside engine.execute: cancelling kills the run
    cancel_requested: bool = False
    waiter_records: bool = False         # a waiting handler records a completed outcome
    max_concurrency: int | None = None   # the token's limit, for slots lent to the job


@attrs.define(eq=False)
class _Lender:
    """What pesto.judging may borrow extra slots from, for one running job."""
    scheduler: "Scheduler"
    entry: _Entry

    def try_borrow(self) -> bool:
        return self.scheduler._borrow(self.entry)

    def release(self) -> None:
        self.scheduler._give_back(self.entry)

    def wanted_back(self) -> bool:
        return self.scheduler._jobs_waiting()


@attrs.define(eq=False)
class _Unrecorded:
    entry: _Entry
    outcome: Outcome
    timer: asyncio.TimerHandle | None = None


class Scheduler:
    def __init__(self, engine: EngineLike, store: Store, *, workers: int, queue_size: int,
                 shutdown_timeout: float, metrics: Metrics | None = None) -> None:
        self._engine = engine
        self.metrics = metrics or Metrics()
        self._store = store
        self.workers = max(1, workers)
        self.queue_size = max(0, queue_size)
        self._shutdown_timeout = shutdown_timeout
        self._queue: collections.deque[_Entry] = collections.deque()
        self._queued = 0                  # queue places taken, including inserts in flight
        self._running = 0                 # slots taken
        self._entries: dict[str, _Entry] = {}
        self._per_token: collections.Counter[int] = collections.Counter()
        self._unrecorded: dict[str, _Unrecorded] = {}   # answered before recorded (see record)
        self._late: set[asyncio.Future[None]] = set()
        self._closing = False
        self._avg_run = 0.5               # seconds, moving average, for Retry-After
        # Called with (job id, token id, callback URL) once a job's end is recorded.
        self.on_finish: Callable[[str, int, str], Awaitable[None]] | None = None

    # --- state -----------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return not self._closing and (self._running < self.workers or self._queued < self.queue_size)

    def stats(self) -> dict[str, int]:
        return {"running": self._running, "queued": self._queued, "workers": self.workers,
                "queueSize": self.queue_size, "tracked": len(self._entries)}

    @property
    def closing(self) -> bool:
        return self._closing

    def retry_after(self) -> int:
        """Seconds a client should wait before trying again when the queue is full."""
        wait = self._avg_run * (1 + self._queued / self.workers)
        return max(1, min(60, math.ceil(wait)))

    # --- intake ----------------------------------------------------------------

    async def submit(self, job_id: str, request: ExecuteRequest, body: str, token: Token, *,
                     waiter_records: bool = False) -> _Entry:
        """Persist and schedule a validated job; returns a handle for `wait`.

        With `waiter_records`, the caller waits for the outcome and, when it
        is `completed`, calls `record(job_id)` once it has answered.

        Raises ShuttingDown / QueueFull (503) or TooManyJobs (429) before
        anything is written.
        """
        if self._closing:
            raise ShuttingDown("the server is shutting down; retry shortly", retry_after=5)
        if token.max_concurrency is not None and self._per_token[token.id] >= token.max_concurrency:
            raise TooManyJobs(
                f"this token may have {token.max_concurrency} jobs queued or running at once; "
                "wait for one to finish", retry_after=max(1, math.ceil(self._avg_run)))
        start_now = self._running < self.workers and self._queued == 0
        if not start_now and self._queued >= self.queue_size:
            raise QueueFull(f"the server's queue is full ({self.queue_size} jobs); retry later",
                            retry_after=self.retry_after())
        # Book the slot or queue place before the first await, so concurrent
        # submits cannot overbook.
        entry = _Entry(job_id=job_id, request=request, token_id=token.id, token_name=token.name,
                       created=time.monotonic(), done=asyncio.get_running_loop().create_future(),
                       running_in_store=start_now, waiter_records=waiter_records,
                       max_concurrency=token.max_concurrency)
        self._entries[job_id] = entry
        self._per_token[token.id] += 1
        if start_now:
            self._running += 1
        else:
            self._queued += 1
        now = utcnow()
        job = Job(id=job_id, token_id=token.id,
                  status=JobStatus.RUNNING if start_now else JobStatus.QUEUED,
                  request=body, created_at=now, started_at=now if start_now else None)
        try:
            await self._store.insert_job(job)
        except BaseException:
            self._forget(entry)
            if start_now:
                self._running -= 1
            else:
                self._queued -= 1
            self._dispatch()
            raise
        if start_now and self._closing:       # shutdown began during the insert
            self._running -= 1
            self._forget(entry)
            exc = ShuttingDown("the server is shutting down; retry shortly", retry_after=5)
            await self._store.finish_job(job_id, JobStatus.FAILED, utcnow(), error=error_json(exc))
            raise exc
        if start_now:
            self._start(entry)
        elif entry.cancel_requested:          # cancelled while its insert was in flight
            self._queued -= 1
            await self._finish_cancelled_queued(entry)
        else:
            entry.queued = True
            self._queue.append(entry)
            self._dispatch()
        return entry

    def check_room(self, token: Token, count: int) -> None:
        """Raise what `submit` would raise for the last of `count` jobs submitted
        now (a batch is taken whole or not at all); nothing is booked."""
        if self._closing:
            raise ShuttingDown("the server is shutting down; retry shortly", retry_after=5)
        if token.max_concurrency is not None and \
                self._per_token[token.id] + count > token.max_concurrency:
            raise TooManyJobs(
                f"this token may have {token.max_concurrency} jobs queued or running at once "
                f"({self._per_token[token.id]} now, {count} more asked)",
                retry_after=max(1, math.ceil(self._avg_run)))
        free = self.workers - self._running if self._queued == 0 else 0
        if count - max(0, free) > self.queue_size - self._queued:
            raise QueueFull(f"the server's queue has no room for {count} more jobs; retry later",
                            retry_after=self.retry_after())

    async def wait(self, entry: _Entry) -> Outcome:
        """The job's outcome; a waiter going away does not cancel the job."""
        return await asyncio.shield(entry.done)

    async def recover(self) -> tuple[int, int]:
        """Start-up: fail jobs left running, queue jobs left queued. Returns (failed, queued)."""
        interrupted = await self._store.running_jobs()
        failed = await self._store.fail_running(utcnow(), error_json(Interrupted(
            "the server stopped while this job was running; it was not run again "
            "(untrusted code is never re-run silently): submit it again")))
        # Their callbacks are due as for any job that ended.
        for job_id, token_id, body in interrupted:
            if self.on_finish is not None and '"callbackUrl"' in body:
                try:
                    url = parse_request(json.loads(body)).callback_url
                except (PestoError, ValueError):
                    continue
                if url:
                    await self.on_finish(job_id, token_id, url)
        requeued = 0
        for job, token in await self._store.queued_jobs():
            try:
                request = parse_request(json.loads(job.request))
            except (PestoError, ValueError) as exc:
                await self._store.finish_job(job.id, JobStatus.FAILED, utcnow(), error=error_json(
                    Interrupted(f"the stored request could not be read back: {exc}")))
                failed += 1
                continue
            entry = _Entry(job_id=job.id, request=request, token_id=token.id,
                           token_name=token.name, created=time.monotonic(),
                           done=asyncio.get_running_loop().create_future(), queued=True,
                           max_concurrency=token.max_concurrency)
            self._entries[job.id] = entry
            self._per_token[token.id] += 1
            self._queued += 1                  # recovery may exceed the bound: nothing is dropped
            self._queue.append(entry)
            requeued += 1
        if failed or requeued:
            log.warning("recovered after restart: %d interrupted job(s) marked failed, "
                        "%d queued job(s) resumed", failed, requeued)
        self._dispatch()
        return failed, requeued

    # --- cancel ----------------------------------------------------------------

    async def cancel(self, job_id: str, token_id: int) -> None:
        """Cancel the token's job if it is queued or running here; returns once recorded.

        Unknown, foreign and finished jobs are left alone (the caller reads the store).
        """
        entry = self._entries.get(job_id)
        if entry is None or entry.token_id != token_id:
            return
        if entry.cancel_requested:
            await asyncio.shield(entry.done)
            return
        entry.cancel_requested = True
        if entry.task is None:
            if entry.queued:                   # still waiting for a slot
                self._queue.remove(entry)
                entry.queued = False
                self._queued -= 1
                await self._finish_cancelled_queued(entry)
            # else: its insert is in flight; `submit` sees the flag and finishes it.
            else:
                return
        elif entry.executing:
            entry.task.cancel()
        await asyncio.shield(entry.done)

    async def _finish_cancelled_queued(self, entry: _Entry) -> None:
        exc = JobCancelled("the job was cancelled before it started")
        try:
            await self._store.finish_job(entry.job_id, JobStatus.CANCELLED, utcnow())
            await self._finished(entry)
        finally:
            self._forget(entry)
            self._settle(entry, Outcome(JobStatus.CANCELLED, error=exc))
            self._log(entry, JobStatus.CANCELLED, None, None)

    # --- running ---------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._closing:                # queued jobs wait for the next start
            return
        while self._running < self.workers and self._queue:
            entry = self._queue.popleft()
            entry.queued = False
            self._queued -= 1
            self._running += 1
            self._start(entry)

    def _start(self, entry: _Entry) -> None:
        entry.task = asyncio.create_task(self._run(entry), name=f"job-{entry.job_id}")

    async def _run(self, entry: _Entry) -> None:
        started = time.monotonic()
        result: ExecuteResult | None = None
        # Cancelling a task before its first step would skip this whole body
        # (no outcome, no slot released), so `cancel` only cancels the task
        # once `executing` is set here, and flags it otherwise.
        entry.executing = True
        try:
            if entry.cancel_requested:
                raise asyncio.CancelledError
            if not entry.running_in_store:
                await self._store.mark_running(entry.job_id, utcnow())
                entry.running_in_store = True
            # Only a job with test cases can use more than its own slot.
            lend = {"lender": _Lender(self, entry)} if entry.request.test_cases else {}
            result = await self._engine.execute(entry.request, entry.job_id, **lend)
            entry.executing = False
            outcome = Outcome(JobStatus.COMPLETED, result=_encode(result))
        except asyncio.CancelledError:
            entry.executing = False
            if entry.cancel_requested:
                outcome = Outcome(JobStatus.CANCELLED,
                                  error=JobCancelled("the job was cancelled while it ran"))
            else:
                outcome = Outcome(JobStatus.FAILED, error=Interrupted(
                    "the server shut down before the job finished; submit it again"))
        except PestoError as exc:
            entry.executing = False
            log.error("job %s: %s: %s", entry.job_id, exc.code, exc.message)
            if isinstance(exc, SandboxError):
                self.metrics.sandbox_failures.inc()
            if exc.status_code >= 500 and exc.code == "INTERNAL_ERROR":
                # The sandbox's own words are for the operator's log, not the client.
                exc = PestoError(f"the sandbox failed while running job {entry.job_id}; it was "
                                 "marked failed and the failure was logged")
            outcome = Outcome(JobStatus.FAILED, error=exc)
        except Exception:
            entry.executing = False
            log.exception("job %s: unexpected error", entry.job_id)
            outcome = Outcome(JobStatus.FAILED, error=PestoError(
                "internal error while running the job; it was marked failed"))
        elapsed = time.monotonic() - started
        self._avg_run = 0.9 * self._avg_run + 0.1 * elapsed
        # Nothing cancels this task once `executing` is off; the slot is
        # released whatever happens.
        try:
            if entry.waiter_records and outcome.status is JobStatus.COMPLETED:
                # The waiting handler answers first, then records (see `record`).
                pending = _Unrecorded(entry, outcome)
                pending.timer = asyncio.get_running_loop().call_later(
                    RECORD_GRACE, self._record_late, entry.job_id)
                self._unrecorded[entry.job_id] = pending
            else:
                # Recorded before the answer, so a GET after it sees the job finished.
                await self._record(entry, outcome)
        finally:
            self._running -= 1
            self._forget(entry)
            self._settle(entry, outcome)
            self._dispatch()
            self._log(entry, outcome.status, result, elapsed)

    async def record(self, job_id: str) -> None:
        """Commit the outcome of a job whose waiting handler has just answered.

        Called in the same step of the event loop as the answer's last write
        (a Litestar background task), so the loop reads no other request in
        between. Does nothing for a job already recorded.
        """
        pending = self._unrecorded.pop(job_id, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        await self._record(pending.entry, pending.outcome)

    def _record_late(self, job_id: str) -> None:
        """The handler did not record its job (it failed or went away): record it now."""
        if job_id in self._unrecorded:
            log.warning("job %s: its handler did not record the outcome; recorded late", job_id)
            task = asyncio.ensure_future(self.record(job_id))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    async def _record(self, entry: _Entry, outcome: Outcome) -> None:
        try:
            await self._store.finish_job(
                entry.job_id, outcome.status, utcnow(),
                result=outcome.result.decode() if outcome.result is not None else None,
                error=error_json(outcome.error) if outcome.status is JobStatus.FAILED
                and outcome.error is not None else None)
        except Exception:
            log.exception("job %s: could not record its outcome", entry.job_id)
            return
        await self._finished(entry)

    async def _finished(self, entry: _Entry) -> None:
        """A job's end is recorded: queue its callback, if it has one."""
        if self.on_finish is not None and entry.request.callback_url:
            try:
                await self.on_finish(entry.job_id, entry.token_id, entry.request.callback_url)
            except Exception:
                log.exception("job %s: could not queue its callback", entry.job_id)

    def _forget(self, entry: _Entry) -> None:
        if self._entries.get(entry.job_id) is entry:
            del self._entries[entry.job_id]
            self._per_token[entry.token_id] -= 1
            if self._per_token[entry.token_id] <= 0:
                del self._per_token[entry.token_id]

    @staticmethod
    def _settle(entry: _Entry, outcome: Outcome) -> None:
        if not entry.done.done():
            entry.done.set_result(outcome)

    def _log(self, entry: _Entry, status: JobStatus, result: ExecuteResult | None,
             elapsed: float | None) -> None:
        try:
            self._count(entry, status, result, elapsed)
            if log.isEnabledFor(logging.INFO):
                self._log_line(entry, status, result, elapsed)
        except Exception:
            log.exception("job %s: could not log its outcome", entry.job_id)

    def _count(self, entry: _Entry, status: JobStatus, result: ExecuteResult | None,
               elapsed: float | None) -> None:
        # Labelled with the runtime's own name, not the alias or case the
        # client sent (which the answer echoes): label values must stay few.
        language, version = entry.request.language.lower(), ""
        registry = getattr(self._engine, "registry", None)
        if registry is not None:
            with contextlib.suppress(PestoError):
                runtime = registry.resolve(entry.request.language, entry.request.version)
                language, version = runtime.language, runtime.version
        stages: tuple[tuple[str, int], ...] = ()
        if result is not None:
            version = result.version
            # A judged job (test cases) has no `runtime` but a run per case.
            runs = [("compile", result.compile)]
            runtime_stage = getattr(result, "runtime", None)
            runs += [("run", runtime_stage)] if runtime_stage is not None else []
            runs += [("run", case) for case in getattr(result, "test_cases", None) or ()]
            stages = tuple((name, stage.wall_time) for name, stage in runs
                           if stage.status != Status.SKIPPED)
        waited = None if elapsed is None else time.monotonic() - entry.created - elapsed
        self.metrics.job_finished(language, version, status.value, waited, stages)

    def _log_line(self, entry: _Entry, status: JobStatus, result: ExecuteResult | None,
                  elapsed: float | None) -> None:
        waited = time.monotonic() - entry.created - (elapsed or 0.0)
        # The fields of the line, also given whole to a JSON log formatter
        # (`pesto serve --log-format json`). Never program output, never a token value.
        fields: dict[str, object] = {
            "job": entry.job_id, "token": entry.token_name,
            "language": entry.request.language, "version": entry.request.version,
            "status": status.value}
        stages: dict[str, object] = {}
        if result is not None:
            fields.update(language=result.language, version=result.version)
            stages["compile"] = Status(result.compile.status).value
            summary = getattr(result, "summary", None)
            if summary is not None:          # a judged job: its verdict, not one run
                stages.update(verdict=summary.verdict, passed=summary.passed,
                              total=summary.total, wall_ms=summary.max_wall_time)
            else:
                stages.update(run=Status(result.runtime.status).value,
                              wall_ms=result.runtime.wall_time)
        fields.update(stages, queued_ms=int(waited * 1000), run_ms=int((elapsed or 0.0) * 1000))
        log.info("job %s token=%s language=%s version=%s status=%s%s queued_ms=%d run_ms=%d",
                 entry.job_id, entry.token_name, fields["language"], fields["version"],
                 status.value, "".join(f" {k}={v}" for k, v in stages.items()),
                 fields["queued_ms"], fields["run_ms"], extra={"fields": fields})

    # --- slots lent to a running job (its test cases run side by side) --------

    def _jobs_waiting(self) -> bool:
        """Whether a job waits for a slot (pesto.cluster: in the shared queue)."""
        return bool(self._queue)

    def _borrow(self, entry: _Entry) -> bool:
        """One more slot for a running job: only while one is idle, no job is
        queued for it, and the token stays within its concurrency limit."""
        limit = entry.max_concurrency
        if self._closing or self._running >= self.workers or self._jobs_waiting() or \
                (limit is not None and self._per_token[entry.token_id] >= limit):
            return False
        self._running += 1
        self._per_token[entry.token_id] += 1
        return True

    def _give_back(self, entry: _Entry) -> None:
        self._running -= 1
        self._per_token[entry.token_id] -= 1
        if self._per_token[entry.token_id] <= 0:
            del self._per_token[entry.token_id]
        self._dispatch()

    # --- shutdown --------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Stop intake; let running jobs finish within the timeout, then cancel and fail them."""
        self._closing = True
        timeout = self._shutdown_timeout if timeout is None else timeout
        tasks = {e.task for e in self._entries.values() if e.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for entry in list(self._entries.values()):
                if entry.task in pending and entry.executing:
                    entry.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=max(1.0, timeout))
        # Outcomes answered but not yet recorded (their handlers were cut short).
        for job_id in list(self._unrecorded):
            await self.record(job_id)
        # Jobs still queued stay queued in the store and run after the next start.
        left = [e for e in self._entries.values() if e.task is None]
        for entry in left:
            self._settle(entry, Outcome(JobStatus.QUEUED, error=ShuttingDown(
                f"the server shut down before job {entry.job_id} started; it runs after the "
                "next start: fetch it with GET /api/jobs/<id>", retry_after=5)))
        if left:
            log.warning("shutdown: %d queued job(s) left for the next start", len(left))

