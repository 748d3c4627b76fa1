"""Many nodes on one PostgreSQL store: the shared queue, heartbeats and limits.

`ClusterScheduler` is the `Scheduler` with its queue moved into the
database (docs/cluster.md); the run slots, the engine calls, cancellation
of a local run and the saving of outcomes (pesto.outcomes) are the base
class's, and so are the jobs' states (a waiter here for a job queued in the
database or run elsewhere is `State.REMOTE`).

- `submit`: a free slot here runs the job at once (persisted `running` on
  this node, as on a single node); otherwise the job is persisted `queued`
  and NOTIFYs every node. Limits (concurrency, monthly quota, queue size)
  are checked by the database in the insert, so they hold cluster-wide.
- A claim loop takes queued jobs (`FOR UPDATE SKIP LOCKED`) for the slots
  free here, when woken by a NOTIFY, by a slot freeing, or every
  `POLL_INTERVAL` in case a notification was lost.
- A waiter here for a job run elsewhere (state REMOTE) is told the saved
  outcome (`pesto.outcomes.outcome_of`) on the `pesto_done` NOTIFY of its
  finish, or by the same slow poll.
- A cancel of a job this node does not hold cancels it in the database if it
  is still queued, else NOTIFYs `pesto_cancel`: the node running it kills it.
- A heartbeat every lease/4; each node also fails (`INTERRUPTED`) the running
  jobs of nodes silent for longer than the lease. Nothing is ever re-run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
import uuid
from typing import Any

from pesto import limits
from pesto.clock import utcnow
from pesto.domain import Job, JobStatus, Token
from pesto.errors import Interrupted, JobCancelled, PestoError, QueueFull
from pesto.models import ExecuteRequest
from pesto.outcomes import Outcome, error_json, outcome_of, still_queued
from pesto.scheduler import Entry, Scheduler, State

log = logging.getLogger("pesto.cluster")

POLL_INTERVAL = 1.0         # seconds between claims/polls when no notification came
EARLY_CANCEL_TTL = 30.0     # seconds a cancel for a job not (yet) here is remembered




class ClusterScheduler(Scheduler):
    def __init__(self, engine: Any, store: Any, *, node_name: str = "", lease: float = 10.0,
                 **options: Any) -> None:
        """`options` are the Scheduler's (workers, queue_size, shutdown_timeout, ...)."""
        super().__init__(engine, store, **options)
        self.node_id = uuid.uuid4().hex[:16]
        self.node_name = node_name or f"{socket.gethostname()}:{os.getpid()}"
        self.lease = lease
        # Jobs in state REMOTE (kept by `_move`): waited on here, queued or run elsewhere.
        # A queued job is REMOTE from before its insert (a fast finish elsewhere may be
        # NOTIFYed first); until the insert returns (`Entry.inserting`) the heartbeat's
        # "finished or gone" read would take it for gone, so it does not ask.
        self._remote: dict[str, Entry] = {}
        self._watchers: dict[str, list[asyncio.Future[None]]] = {}   # cancels awaiting a finish
        self._early_cancels: dict[str, float] = {}
        self._wake = asyncio.Event()
        # False after a claim found fewer queued jobs than it asked for, until a NOTIFY on
        # pesto_queue (or the slow poll): a slot freeing then costs no claim query.
        self._maybe_queued = True
        self._claimer: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        # The jobs queued cluster-wide: read at each heartbeat, kept roughly right in
        # between (the queue is the database's; no job here holds a place in it).
        self._shared_queued = 0
        self._claiming = 0                        # slots booked by a claim in flight
        self._background: set[asyncio.Future[Any]] = set()

    # --- state -----------------------------------------------------------------

    def _move(self, entry: Entry, state: State) -> None:
        old = entry.state
        super()._move(entry, state)
        if state is State.REMOTE:
            self._remote[entry.job_id] = entry
        elif old is State.REMOTE:
            del self._remote[entry.job_id]

    def _busy(self) -> int:
        # Slots a claim has booked count as taken (not as running, in `stats`).
        return super()._busy() + self._claiming

    @property
    def queued(self) -> int:
        return self._shared_queued

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "node": self.node_id, "waiting": len(self._remote)}

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- start-up --------------------------------------------------------------

    async def recover(self) -> tuple[int, int]:
        """Join the cluster: heartbeat, LISTEN, start claiming. Returns (failed, queued).

        Jobs of this node's previous life are failed by the lease (its old id
        stops heartbeating); here only jobs of nodes with no row are failed.
        """
        await self._store.heartbeat(self.node_id, self.node_name, self.workers, 0)
        await self._listen()
        interrupted = await self._store.running_jobs()
        failed = await self._store.fail_running(utcnow(), error_json(Interrupted(
            "the node running this job stopped; it was not run again "
            "(untrusted code is never re-run silently): submit it again")))
        await self._callbacks(interrupted)
        queued = await self._store.queued_count()
        self._shared_queued = queued
        self._claimer = asyncio.create_task(self._claim_loop(), name="cluster-claim")
        self._beater = asyncio.create_task(self._heartbeat_loop(), name="cluster-heartbeat")
        log.info("node %s (%s) joined the cluster on %s; %d job(s) queued",
                 self.node_id, self.node_name, self._store.path, queued)
        return failed, queued

    async def _listen(self) -> None:
        await self._store.listen({"pesto_queue": self._on_queue, "pesto_done": self._on_done,
                                  "pesto_cancel": self._on_cancel})

    # --- intake ----------------------------------------------------------------

    async def submit(self, job_id: str, request: ExecuteRequest, body: str,
                     token: Token) -> Entry:
        """Persist and schedule a job (see the module docstring); returns a handle for `wait`.

        Raises ShuttingDown / QueueFull (503), TooManyJobs / QuotaExceeded (429).
        """
        self._refuse_if_closing()
        start_now = self._busy() < self.workers
        entry = self._new_entry(job_id, request, token.id, token.name, token.max_concurrency)
        # The slot is booked before the first await.
        self._move(entry, State.STARTING if start_now else State.REMOTE)
        if not start_now:
            # Counted before the insert: a heartbeat reading the count after the commit
            # then finds the same number, not one more.
            self._shared_queued += 1
        now = utcnow()
        job = Job(id=job_id, token_id=token.id,
                  status=JobStatus.RUNNING if start_now else JobStatus.QUEUED,
                  request=body, created_at=now, started_at=now if start_now else None)
        # A job that runs at once for a token with no concurrency or monthly limit
        # starts while its insert is in flight: the round trip to the database is then
        # not on the answer's path. Such an insert can refuse only a token revoked
        # since this node read it (a write its token cache hears of a moment later):
        # the run is then stopped, a round trip after it began, with no effect outside
        # its sandbox and no output returned (`_insert`, `Scheduler._run`, which also
        # saves the run's end only once the insert has returned).
        beside = start_now and token.max_concurrency is None and token.monthly_limit is None
        if beside:
            self._start(entry, mark_running=False)
        refusal = await self._insert(entry, self._submit_row(job, start_now, run_first=beside))
        if refusal is not None:
            raise self._refusal(refusal, token)
        return entry if beside else await self._admit(entry)

    async def _submit_row(self, job: Job, start_now: bool, *,
                          run_first: bool = False) -> str | None:
        if run_first:
            # The run started beside this insert sends its first request to the sandbox
            # before the insert goes out: the run is on the answer's path, the insert is
            # not. Yielding here, not before `_insert`, keeps `Entry.inserting` set
            # before the run's first step (a run ending at once must wait for the row).
            await asyncio.sleep(0)
        verdict = await self._store.submit_job(job, self.node_id,
                                               None if start_now else self.queue_size)
        return None if verdict == "ok" else verdict

    def _drop(self, entry: Entry) -> None:
        if entry.state is State.REMOTE:
            self._shared_queued = max(0, self._shared_queued - 1)
        super()._drop(entry)

    def _left_queued(self, entry: Entry) -> Outcome:
        if entry.state is not State.REMOTE:
            return super()._left_queued(entry)
        return still_queued(
            f"this node shut down while job {entry.job_id} waited; another node runs it: "
            "fetch it with GET /api/jobs/<id>")

    def _refusal(self, verdict: str, token: Token) -> PestoError:
        refused = limits.refusal(verdict, token, max(1, math.ceil(self._avg_run)))
        if refused is not None:
            return refused
        if verdict == "full":
            self._shared_queued = max(self._shared_queued, self.queue_size)
            return QueueFull(f"the cluster's queue is full ({self.queue_size} jobs); retry later",
                             retry_after=self.retry_after())
        return PestoError(f"the store refused the job ({verdict})")

    # --- the shared queue ------------------------------------------------------

    def _dispatch(self) -> None:
        """A slot freed (or a job was refused): look for queued work, if there may be some."""
        if not self._closing and self._maybe_queued:
            self._wake.set()

    def _on_queue(self, _payload: str) -> None:
        self._maybe_queued = True
        self._shared_queued = max(self._shared_queued, 1)   # a job waits: lent slots go back
        self._wake.set()

    def _jobs_waiting(self) -> bool:
        return self._shared_queued > 0

    async def _claim_loop(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            except asyncio.TimeoutError:
                self._maybe_queued = True       # a lost notification costs one interval
            self._wake.clear()
            if self._closing:
                return
            free = self.workers - self._busy()
            if free <= 0:
                continue
            self._claiming = free          # booked while the claim is in flight
            claimed: list[tuple[Job, str, int | None]] = []
            try:
                claimed = await self._store.claim(self.node_id, free, utcnow())
            except Exception:
                log.exception("claiming queued jobs failed; will retry")
                await asyncio.sleep(POLL_INTERVAL)
            if self._closing and claimed:
                # Claimed while shutting down: nothing ran; give them back.
                self._claiming = 0
                await self._store.unclaim(self.node_id, [job.id for job, _, _ in claimed])
                return
            self._shared_queued = max(0, self._shared_queued - len(claimed))
            if len(claimed) < free:
                self._maybe_queued = False
            # Each claimed job takes its slot from the booking in the same step.
            self._claiming = 0
            unreadable = [(job, why) for job, token_name, limit in claimed
                          if (why := self._run_claimed(job, token_name, limit)) is not None]
            for job, why in unreadable:
                await self._store.finish_job(job.id, JobStatus.FAILED, utcnow(), error=error_json(
                    Interrupted(f"the stored request could not be read back: {why}")))
            if claimed and len(claimed) == free:
                self._wake.set()            # there may be more

    def _run_claimed(self, job: Job, token_name: str, max_concurrency: int | None) -> str | None:
        """Start a claimed job; else why its stored request cannot be read back."""
        try:
            request = self._read_request(json.loads(job.request))
        except (PestoError, ValueError) as exc:
            return str(exc)
        entry = self._remote.get(job.id)    # submitted here: its waiter is here too
        if entry is None:
            entry = self._new_entry(job.id, request, job.token_id, token_name, max_concurrency)
            entry.announce = True           # sent to another node, which may wait for it
        self._move(entry, State.STARTING)
        if self._early_cancels.pop(job.id, None) is not None:
            self._move(entry, State.CANCELLING)   # `_run` saves it cancelled without running it
        self._start(entry, mark_running=False)
        return None

    # --- finishes and cancels from other nodes ----------------------------------

    def _on_done(self, job_id: str) -> None:
        for watcher in self._watchers.pop(job_id, ()):
            if not watcher.done():
                watcher.set_result(None)
        entry = self._remote.get(job_id)
        if entry is not None:
            self._spawn(self._settle_remote(entry), f"settle-{job_id}")

    async def _settle_remote(self, entry: Entry) -> None:
        """Tell a waiter here the saved outcome of its job, once finished elsewhere."""
        try:
            job = await self._store.job_by_id(entry.job_id)
        except Exception:
            log.exception("job %s: could not read its outcome; will retry", entry.job_id)
            return                                  # still REMOTE: the poll tries again
        if entry.state is State.REMOTE and (job is None or job.status.finished):
            self._tell(entry, outcome_of(job))

    def _on_cancel(self, job_id: str) -> None:
        entry = self._entries.get(job_id)
        if entry is not None:
            entry.announce = True           # the node that sent it waits for the finish
            self._spawn(super().cancel(job_id, entry.token_id), f"cancel-{job_id}")
            return
        # Not here (yet): this node may be claiming it right now.
        now = time.monotonic()
        self._early_cancels = {k: t for k, t in self._early_cancels.items()
                               if now - t < EARLY_CANCEL_TTL}
        self._early_cancels[job_id] = now

    async def cancel(self, job_id: str, token_id: int) -> None:
        """Cancel the token's job wherever it is queued or running; returns once recorded
        (or after the shutdown timeout when its node does not answer)."""
        if job_id in self._entries:
            await super().cancel(job_id, token_id)
            return
        entry = self._remote.get(job_id)    # before the await: its pesto_done may come first
        # The store saves the cancel only if the job is still queued (pesto.outcomes).
        body = await self._store.cancel_queued(job_id, token_id, utcnow())
        if body is not None:
            self._shared_queued = max(0, self._shared_queued - 1)
            # No node ran it, so none logs or counts it: the node that cancelled it does.
            if entry is not None:
                self._tell(entry, Outcome(JobStatus.CANCELLED, error=JobCancelled(
                    "the job was cancelled before it started")))
                self._log(entry, JobStatus.CANCELLED, None, None)
            else:
                log.info("job %s status=cancelled (queued; submitted to another node)", job_id)
            await self._callbacks([(job_id, token_id, body)])
            return
        job = await self._store.get_job(job_id, token_id)
        if job is None or job.status.finished:
            return
        watcher = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(job_id, []).append(watcher)
        await self._store.notify_cancel(job_id)
        deadline = time.monotonic() + self._shutdown_timeout + 2 * POLL_INTERVAL
        try:
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(asyncio.shield(watcher), POLL_INTERVAL)
                    return
                except asyncio.TimeoutError:
                    job = await self._store.get_job(job_id, token_id)
                    if job is None or job.status.finished:
                        return
        finally:
            watchers = self._watchers.get(job_id, [])
            if watcher in watchers:
                watchers.remove(watcher)
                if not watchers:
                    del self._watchers[job_id]

    # --- heartbeats and leases ---------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = max(0.1, self.lease / 4)
        error = error_json(Interrupted(
            "the node running this job stopped answering; the job was not run again "
            "(untrusted code is never re-run silently): submit it again"))
        while True:
            try:
                await self._store.heartbeat(self.node_id, self.node_name, self.workers,
                                            self._busy())
                if not self._store.listening:
                    log.warning("the LISTEN connection was lost; reconnecting")
                    await self._listen()
                    self._wake.set()
                reaped = await self._store.reap(self.lease, utcnow(), error)
                if reaped:
                    log.warning("failed %d job(s) of node(s) silent for over %.1f s: %s",
                                len(reaped), self.lease, ", ".join(r[0] for r in reaped))
                    await self._callbacks(reaped)
                self._shared_queued = await self._store.queued_count()
                # Waiters whose finish notification was missed (not those still inserting).
                waited = [job_id for job_id, e in self._remote.items() if e.inserting is None]
                if waited:
                    for job_id in await self._store.finished_among(waited):
                        self._on_done(job_id)
            except Exception:
                log.exception("heartbeat failed; will retry")
            await asyncio.sleep(interval)

    # --- shutdown --------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Stop claiming, let local runs finish (the base class), leave the cluster."""
        self._closing = True
        self._wake.set()
        if self._claimer is not None:
            await asyncio.gather(self._claimer, return_exceptions=True)
        await super().close(timeout)
        for entry in list(self._remote.values()):
            self._tell(entry, self._left_queued(entry))
        if self._beater is not None:
            self._beater.cancel()
            await asyncio.gather(self._beater, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        try:
            await self._store.leave(self.node_id)
        except Exception:
            log.exception("could not remove this node from the cluster (its lease will expire)")
