"""The scheduler: a bounded queue in front of a fixed number of run slots.

- A job takes a slot before it takes any work: `submit` either books a free
  slot at once (the job is persisted already `running`, one write on the hot
  path) or a place in the bounded queue (persisted `queued`); a full queue is
  `QueueFull` (503), a token over its concurrency limit is `TooManyJobs` (429).
- Each job here is in one `State`; `_move` is the only code that changes it,
  and keeps the counts of slots and queue places taken (in all and per
  token) that the limits read.
- Each run is one named task (`job-<id>`). When its outcome is known the job
  gives up its slot (the oldest queued job starts), and `pesto.outcomes`
  saves the outcome, then hands it to the waiter: a waiting handler only
  awaits `wait`, and answers what is saved.
- Cancelling a queued job drops it from the queue; cancelling a running one
  cancels its task, which makes the engine kill the run.
- `recover` (start-up) fails every job a crash left `running` — untrusted code
  is never silently run twice — and queues every job left `queued`.
- `close` (shutdown) stops intake, lets running jobs finish within the
  timeout, then cancels the rest and saves them failed. Queued jobs stay
  `queued` in the store and run after the next start.

The scheduler knows jobs, tokens and the engine (any `EngineLike`); it knows
nothing of HTTP or SQL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import msgspec

from pesto.clock import utcnow
from pesto.domain import Job, JobStatus, Token
from pesto.errors import (Interrupted, JobCancelled, PestoError, QueueFull, SandboxError,
                          ShuttingDown)
from pesto.limits import check_concurrency
from pesto.metrics import Metrics
from pesto.models import ExecuteRequest, ExecuteResult, JudgeResult, Status, parse_request
from pesto.outcomes import FinishStore, OnFinish, Outcome, Outcomes, error_json, still_queued

__all__ = ["EngineLike", "Entry", "Interrupted", "JobCancelled", "JobStore", "Outcome",
           "Scheduler", "State", "error_json"]

log = logging.getLogger("pesto.jobs")

_encode = msgspec.json.Encoder().encode


class EngineLike(Protocol):
    async def execute(self, request: ExecuteRequest, job_id: str, *,
                      lender: "_Lender") -> ExecuteResult | JudgeResult: ...


class JobStore(FinishStore, Protocol):
    """The store calls of the scheduler (both backends, or a test's fake)."""
    async def insert_job(self, job: Job) -> None: ...
    async def mark_running(self, job_id: str, started_at: str) -> None: ...
    async def running_jobs(self) -> list[tuple[str, int, str]]: ...
    async def fail_running(self, finished_at: str, error: str) -> int: ...
    async def queued_jobs(self) -> list[tuple[Job, Token]]: ...


class Hold(enum.Enum):
    NOTHING = 0
    PLACE = 1       # a place in the bounded queue
    SLOT = 2        # a run slot


class State(enum.Enum):
    """Where a job is in this scheduler; `holds` is what it takes from the limits."""
    NEW = "new"                  # made, not yet booked
    QUEUED = "queued"            # in the queue (its insert may be in flight)
    STARTING = "starting"        # has a slot; its task has not entered the engine yet
    RUNNING = "running"          # in the engine: cancelling its task kills the run
    CANCELLING = "cancelling"    # cancelled while holding a slot: its task ends it cancelled
    ENDING = "ending"            # outcome known, being saved (pesto.outcomes); slot freed
    REMOTE = "remote"            # pesto.cluster: waited on here, queued or run elsewhere
    DONE = "done"                # saved and handed over, or never stored; forgotten

    @property
    def holds(self) -> Hold:
        return _HOLDS.get(self, Hold.NOTHING)

    @property
    def tracked(self) -> bool:
        """Whether the job is in `Scheduler._entries` (a cancel here can reach it)."""
        return self not in (State.NEW, State.REMOTE, State.DONE)


_HOLDS = {State.QUEUED: Hold.PLACE, State.STARTING: Hold.SLOT, State.RUNNING: Hold.SLOT,
          State.CANCELLING: Hold.SLOT}


@attrs.define(eq=False)
class Entry:
    """One job in the scheduler; `submit` returns it, `wait` takes it."""
    job_id: str
    request: ExecuteRequest
    token_id: int
    token_name: str
    max_concurrency: int | None          # the token's limit, for slots lent to the job
    created: float                       # the scheduler's clock, for the log line
    done: asyncio.Future[Outcome]        # resolved with the outcome once it is saved
    state: State = State.NEW
    task: asyncio.Task[None] | None = None
    # Resolved when the job's insert has returned (stored, or refused and dropped):
    # a cancel acts on a stored job only.
    inserting: asyncio.Future[None] | None = None
    # Whether another node may wait for its finish, which is then announced (a
    # cluster's NOTIFY): set by pesto.cluster for a job sent to another node, or one
    # another node asked to cancel. Its own waiter is told here.
    announce: bool = False
    # Started beside its insert (pesto.cluster), which stored nothing: its task ends
    # without saving or telling anyone (the submit raised the refusal).
    insert_refused: bool = False


@attrs.define(eq=False)
class _Lender:
    """What pesto.judging may borrow extra slots from, for one running job."""
    scheduler: "Scheduler"
    entry: Entry

    def try_borrow(self) -> bool:
        return self.scheduler._borrow(self.entry)

    def release(self) -> None:
        self.scheduler._give_back(self.entry)

    def wanted_back(self) -> bool:
        return self.scheduler._jobs_waiting()


class Scheduler:
    def __init__(self, engine: EngineLike, store: JobStore, *, workers: int, queue_size: int,
                 shutdown_timeout: float, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 read_request: Callable[[Any], ExecuteRequest] = parse_request) -> None:
        """`clock` (seconds, monotonic) times queue waits and runs, for the log and Retry-After.
        `read_request` turns a stored request (decoded JSON) back into one to run: the
        server passes its full validation, so that a job queued before a restart, or on
        another node, is held to this node's limits and runtimes (an InvalidRequest or
        RuntimeNotFound fails the job with that message)."""
        self._engine = engine
        self._read_request = read_request
        self.metrics = metrics or Metrics()
        self._store = store
        self.outcomes = Outcomes(store)
        self._clock = clock
        self.workers = max(1, workers)
        self.queue_size = max(0, queue_size)
        self._shutdown_timeout = shutdown_timeout
        self._queue: collections.deque[Entry] = collections.deque()
        self._entries: dict[str, Entry] = {}
        # Kept by `_move` (and `_lend` for lent slots) only.
        self._held: collections.Counter[Hold] = collections.Counter()
        self._per_token: collections.Counter[int] = collections.Counter()
        self._lent = 0
        self._closing = False
        self._avg_run = 0.5               # seconds, moving average, for Retry-After

    @property
    def on_finish(self) -> OnFinish | None:
        """Called with (job id, token id, callback URL) once a job's end is saved."""
        return self.outcomes.on_finish

    @on_finish.setter
    def on_finish(self, callback: OnFinish | None) -> None:
        self.outcomes.on_finish = callback

    # --- state -----------------------------------------------------------------

    def _move(self, entry: Entry, state: State) -> None:
        """The one transition of a job's state: keeps `_entries` and the counts in step."""
        old = entry.state
        if old is state:
            return
        entry.state = state
        if old.holds is not Hold.NOTHING:
            self._held[old.holds] -= 1
        if state.holds is not Hold.NOTHING:
            self._held[state.holds] += 1
        if (old.holds is Hold.NOTHING) != (state.holds is Hold.NOTHING):
            # A job counts against its token's concurrency while it holds a place or a slot.
            self._count_token(entry.token_id, 1 if old.holds is Hold.NOTHING else -1)
        if state.tracked and not old.tracked:
            self._entries[entry.job_id] = entry
        elif old.tracked and not state.tracked:
            del self._entries[entry.job_id]

    def _count_token(self, token_id: int, change: int) -> None:
        self._per_token[token_id] += change
        if self._per_token[token_id] <= 0:
            del self._per_token[token_id]

    def _busy(self) -> int:
        """Slots taken: by jobs here and lent to judged jobs."""
        return self._held[Hold.SLOT] + self._lent

    @property
    def queued(self) -> int:
        """Jobs waiting for a slot (pesto.cluster: in the shared queue)."""
        return self._held[Hold.PLACE]

    @property
    def accepting(self) -> bool:
        return not self._closing and (self._busy() < self.workers or self.queued < self.queue_size)

    def stats(self) -> dict[str, int]:
        return {"running": self._held[Hold.SLOT] + self._lent, "queued": self.queued,
                "workers": self.workers, "queueSize": self.queue_size,
                "tracked": len(self._entries)}

    @property
    def closing(self) -> bool:
        return self._closing

    def retry_after(self) -> int:
        """Seconds a client should wait before trying again when the queue is full."""
        wait = self._avg_run * (1 + self.queued / self.workers)
        return max(1, min(60, math.ceil(wait)))

    def _new_entry(self, job_id: str, request: ExecuteRequest, token_id: int, token_name: str,
                   max_concurrency: int | None) -> Entry:
        return Entry(job_id=job_id, request=request, token_id=token_id, token_name=token_name,
                     max_concurrency=max_concurrency, created=self._clock(),
                     done=asyncio.get_running_loop().create_future())

    def _tell(self, entry: Entry, outcome: Outcome) -> bool:
        """Forget the job and give its waiter `outcome` (saved, or what the store holds);
        False when it was told already."""
        if entry.state is State.DONE:
            return False
        self._move(entry, State.DONE)
        if not entry.done.done():
            entry.done.set_result(outcome)
        return True

    # --- intake ----------------------------------------------------------------

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise ShuttingDown("the server is shutting down; retry shortly", retry_after=5)

    async def submit(self, job_id: str, request: ExecuteRequest, body: str,
                     token: Token) -> Entry:
        """Persist and schedule a validated job; returns a handle for `wait`.

        Raises ShuttingDown / QueueFull (503) or TooManyJobs (429) before
        anything is written.
        """
        self._refuse_if_closing()
        check_concurrency(token, self._per_token[token.id], 1, max(1, math.ceil(self._avg_run)))
        start_now = self._busy() < self.workers and self.queued == 0
        if not start_now and self.queued >= self.queue_size:
            raise QueueFull(f"the server's queue is full ({self.queue_size} jobs); retry later",
                            retry_after=self.retry_after())
        entry = self._new_entry(job_id, request, token.id, token.name, token.max_concurrency)
        # Booked before the first await, so concurrent submits cannot overbook.
        self._move(entry, State.STARTING if start_now else State.QUEUED)
        now = utcnow()
        job = Job(id=job_id, token_id=token.id,
                  status=JobStatus.RUNNING if start_now else JobStatus.QUEUED,
                  request=body, created_at=now, started_at=now if start_now else None)
        await self._insert(entry, self._store.insert_job(job))
        return await self._admit(entry)

    async def _insert(self, entry: Entry, insert: Awaitable[str | None]) -> str | None:
        """Await a booked job's insert; returns the store's refusal (None: stored).

        A refused or failed insert drops the job before a cancel waiting for
        the insert (`Entry.inserting`) looks at it; a job already started
        beside its insert (pesto.cluster) is stopped, and its task drops it.
        """
        entry.inserting = asyncio.get_running_loop().create_future()
        refusal: str | None = "error"
        try:
            refusal = await insert
            return refusal
        finally:
            if refusal is not None:
                if entry.task is None:
                    self._drop(entry)
                else:
                    self._stop_refused(entry)
            entry.inserting.set_result(None)
            entry.inserting = None

    def _stop_refused(self, entry: Entry) -> None:
        """Stop the task of a job whose insert was refused; `_run` then drops it
        without saving or telling anyone."""
        entry.insert_refused = True
        if entry.state is State.STARTING:
            # Its task has not run a step (a cancel would skip its whole body and
            # keep the slot): it reads the state when it starts.
            self._move(entry, State.CANCELLING)
        else:                                   # running, or waiting for the insert
            assert entry.task is not None
            entry.task.cancel()

    def _drop(self, entry: Entry) -> None:
        """A booked job that was not stored: give back what it booked."""
        self._move(entry, State.DONE)
        self._dispatch()

    async def _admit(self, entry: Entry) -> Entry:
        """A booked job is stored: queue it or start it, unless a shutdown began meanwhile."""
        if entry.state is State.DONE:                     # told by `close` already
            return entry
        if entry.state.holds is not Hold.SLOT:            # queued, here or in the shared queue
            if self._closing:
                self._tell(entry, self._left_queued(entry))
            elif entry.state is State.QUEUED:
                self._queue.append(entry)
                self._dispatch()
            return entry
        if self._closing:
            # Stored `running` but it never ran: saved failed, the client retries.
            exc = ShuttingDown("the server is shutting down; retry shortly", retry_after=5)
            await self._end(entry, Outcome(JobStatus.FAILED, error=exc), counted=False)
            raise exc
        self._start(entry, mark_running=False)
        return entry

    def _left_queued(self, entry: Entry) -> Outcome:
        return still_queued(
            f"the server shut down before job {entry.job_id} started; it runs after the "
            "next start: fetch it with GET /api/jobs/<id>")

    def check_room(self, token: Token, count: int) -> None:
        """Raise what `submit` would raise for the last of `count` jobs submitted
        now (a batch is taken whole or not at all); nothing is booked."""
        self._refuse_if_closing()
        check_concurrency(token, self._per_token[token.id], count,
                          max(1, math.ceil(self._avg_run)), batch=True)
        free = self.workers - self._busy() if self.queued == 0 else 0
        if count - max(0, free) > self.queue_size - self.queued:
            raise QueueFull(f"the server's queue has no room for {count} more jobs; retry later",
                            retry_after=self.retry_after())

    async def wait(self, entry: Entry) -> Outcome:
        """The job's outcome, once saved; a waiter going away does not cancel the job."""
        return await asyncio.shield(entry.done)

    async def recover(self) -> tuple[int, int]:
        """Start-up: fail jobs left running, queue jobs left queued. Returns (failed, queued)."""
        interrupted = await self._store.running_jobs()
        failed = await self._store.fail_running(utcnow(), error_json(Interrupted(
            "the server stopped while this job was running; it was not run again "
            "(untrusted code is never re-run silently): submit it again")))
        await self._callbacks(interrupted)
        requeued = 0
        for job, token in await self._store.queued_jobs():
            try:
                request = self._read_request(json.loads(job.request))
            except (PestoError, ValueError) as exc:
                await self._store.finish_job(job.id, JobStatus.FAILED, utcnow(), error=error_json(
                    Interrupted(f"the stored request could not be read back: {exc}")))
                failed += 1
                continue
            entry = self._new_entry(job.id, request, token.id, token.name, token.max_concurrency)
            self._move(entry, State.QUEUED)    # recovery may exceed the bound: nothing is dropped
            self._queue.append(entry)
            requeued += 1
        if failed or requeued:
            log.warning("recovered after restart: %d interrupted job(s) marked failed, "
                        "%d queued job(s) resumed", failed, requeued)
        self._dispatch()
        return failed, requeued

    async def _callbacks(self, ended: list[tuple[str, int, str]]) -> None:
        """Queue the callbacks of jobs saved as ended without a run here: (id, token id, request)."""
        for job_id, token_id, body in ended:
            if self.on_finish is None or '"callbackUrl"' not in body:
                continue
            try:
                url = parse_request(json.loads(body)).callback_url
            except (PestoError, ValueError):
                continue
            await self.outcomes.callback(job_id, token_id, url)

    # --- cancel ----------------------------------------------------------------

    async def cancel(self, job_id: str, token_id: int) -> None:
        """Cancel the token's job if it is queued or running here; returns once saved.

        Unknown, foreign and finished jobs are left alone (the caller reads the store).
        """
        entry = self._entries.get(job_id)
        if entry is None or entry.token_id != token_id:
            return
        if entry.inserting is not None:
            await asyncio.shield(entry.inserting)
        state = entry.state
        if state is State.DONE:                    # its insert failed, or a shutdown told it
            return
        if state is State.QUEUED:
            self._queue.remove(entry)
            self._move(entry, State.ENDING)       # before any await: one cancel acts
            # Shielded: the handler going away must not cut the save short.
            await asyncio.shield(self._end(entry, Outcome(JobStatus.CANCELLED, error=JobCancelled(
                "the job was cancelled before it started"))))
            return
        if state is State.STARTING:
            # Its task has not run a step: cancelling it would skip the whole body (no
            # outcome, no slot back), so the task reads the state when it starts.
            self._move(entry, State.CANCELLING)
        elif state is State.RUNNING:
            self._move(entry, State.CANCELLING)
            assert entry.task is not None
            entry.task.cancel()
        # CANCELLING, ENDING: a cancel or the end is under way.
        await asyncio.shield(entry.done)

    # --- running ---------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._closing:                # queued jobs wait for the next start
            return
        while self._busy() < self.workers and self._queue:
            entry = self._queue.popleft()
            self._move(entry, State.STARTING)
            self._start(entry, mark_running=True)

    def _start(self, entry: Entry, *, mark_running: bool) -> None:
        entry.task = asyncio.create_task(self._run(entry, mark_running),
                                         name=f"job-{entry.job_id}")

    async def _run(self, entry: Entry, mark_running: bool) -> None:
        started = self._clock()
        result: ExecuteResult | JudgeResult | None = None
        try:
            if entry.state is State.CANCELLING:
                raise asyncio.CancelledError
            self._move(entry, State.RUNNING)
            if mark_running:
                await self._store.mark_running(entry.job_id, utcnow())
            # Only a job with test cases can use more than its own slot.
            lend = {"lender": _Lender(self, entry)} if entry.request.test_cases else {}
            result = await self._engine.execute(entry.request, entry.job_id, **lend)
            outcome = Outcome(JobStatus.COMPLETED, result=_encode(result))
            if entry.inserting is not None:
                # Started beside its insert (pesto.cluster): its end is saved on the row
                # the insert writes, so not before the insert returns; a refusal
                # cancels this wait.
                await asyncio.shield(entry.inserting)
        except asyncio.CancelledError:
            if entry.state is State.CANCELLING:
                outcome = Outcome(JobStatus.CANCELLED,
                                  error=JobCancelled("the job was cancelled while it ran"))
            else:
                outcome = Outcome(JobStatus.FAILED, error=Interrupted(
                    "the server shut down before the job finished; submit it again"))
        except PestoError as exc:
            log.error("job %s: %s: %s", entry.job_id, exc.code, exc.message)
            if isinstance(exc, SandboxError):
                self.metrics.sandbox_failures.inc()
            if exc.status_code >= 500 and exc.code == "INTERNAL_ERROR":
                # The sandbox's own words are for the operator's log, not the client.
                exc = PestoError(f"the sandbox failed while running job {entry.job_id}; it was "
                                 "marked failed and the failure was logged")
            outcome = Outcome(JobStatus.FAILED, error=exc)
        except Exception:
            log.exception("job %s: unexpected error", entry.job_id)
            outcome = Outcome(JobStatus.FAILED, error=PestoError(
                "internal error while running the job; it was marked failed"))
        while entry.inserting is not None:
            # The wait above was cut short (a shutdown's cancel) or not reached. The
            # outcome is decided; a further cancel here (the refusal's, `_stop_refused`)
            # must not skip what follows, which frees the slot. The insert always ends.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(entry.inserting)
        if entry.insert_refused:
            self._drop(entry)
            return
        elapsed = self._clock() - started
        self._avg_run = 0.9 * self._avg_run + 0.1 * elapsed
        await self._end(entry, outcome, result if outcome.status is JobStatus.COMPLETED else None,
                        elapsed)

    async def _end(self, entry: Entry, outcome: Outcome,
                   result: ExecuteResult | JudgeResult | None = None,
                   elapsed: float | None = None, *, counted: bool = True) -> None:
        """The job's outcome is known: free its slot or place, then save and hand it over
        (pesto.outcomes); nothing cancels it from here (state ENDING)."""
        self._move(entry, State.ENDING)
        self._dispatch()
        await self.outcomes.conclude(entry.job_id, entry.token_id, entry.request.callback_url,
                                     outcome, lambda told: self._tell(entry, told),
                                     announce=entry.announce)
        if counted:
            self._log(entry, outcome.status, result, elapsed)

    def _log(self, entry: Entry, status: JobStatus, result: ExecuteResult | None,
             elapsed: float | None) -> None:
        try:
            self._count(entry, status, result, elapsed)
            if log.isEnabledFor(logging.INFO):
                self._log_line(entry, status, result, elapsed)
        except Exception:
            log.exception("job %s: could not log its outcome", entry.job_id)

    def _count(self, entry: Entry, status: JobStatus, result: ExecuteResult | None,
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
        waited = None if elapsed is None else self._clock() - entry.created - elapsed
        self.metrics.job_finished(language, version, status.value, waited, stages)

    def _log_line(self, entry: Entry, status: JobStatus, result: ExecuteResult | None,
                  elapsed: float | None) -> None:
        waited = self._clock() - entry.created - (elapsed or 0.0)
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

    def _borrow(self, entry: Entry) -> bool:
        """One more slot for a running job: only while one is idle, no job is
        queued for it, and the token stays within its concurrency limit."""
        limit = entry.max_concurrency
        if self._closing or self._busy() >= self.workers or self._jobs_waiting() or \
                (limit is not None and self._per_token[entry.token_id] >= limit):
            return False
        self._lend(entry, 1)
        return True

    def _give_back(self, entry: Entry) -> None:
        self._lend(entry, -1)
        self._dispatch()

    def _lend(self, entry: Entry, change: int) -> None:
        self._lent += change
        self._count_token(entry.token_id, change)

    # --- shutdown --------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Stop intake; let running jobs finish within the timeout, then cancel and fail them.

        Every job that ran here is saved (pesto.outcomes) before this returns;
        jobs still queued stay `queued` in the store and run after the next start.
        """
        self._closing = True
        timeout = self._shutdown_timeout if timeout is None else timeout
        tasks = {e.task for e in self._entries.values() if e.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for entry in list(self._entries.values()):
                if entry.task in pending and entry.state is State.RUNNING:
                    entry.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=max(1.0, timeout))
        left = [e for e in self._entries.values() if e.state is State.QUEUED]
        self._queue.clear()
        for entry in left:
            self._tell(entry, self._left_queued(entry))
        if left:
            log.warning("shutdown: %d queued job(s) left for the next start", len(left))
