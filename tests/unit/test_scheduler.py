"""The scheduler against a fake engine, a fake store and a fake clock.

No root, no sandbox, no sleeps: the engine runs a job until the test
releases it (an event per job), the store can hold any write back the same
way, and the scheduler's clock is a number the test sets. What is proved
here with real runs and a real SQLite file is in tests/api/test_scheduler.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from pesto.errors import QueueFull, ShuttingDown, TooManyJobs
from pesto.models import ExecuteRequest, ExecuteResult, StageResult, parse_request
from pesto.sandbox.status import Status
from pesto.scheduler import EngineLike, Scheduler, State
from pesto.domain import Job, JobStatus, Token


def _request(code: str = "print(1)", **extra: Any) -> tuple[ExecuteRequest, str]:
    body = {"language": "python", "code": code, **extra}
    return parse_request(body), json.dumps(body)


def _token(token_id: int = 1, max_concurrency: int | None = None) -> Token:
    return Token(id=token_id, name=f"t{token_id}", created_at="2026-01-01T00:00:00Z",
                 last_used_at=None, rate_limit=None, monthly_limit=None,
                 max_concurrency=max_concurrency)


class FakeEngine:
    """Runs each job until the test calls `finish(job_id)`; records what it saw."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.killed: list[str] = []
        self.running: set[str] = set()
        self.most_at_once = 0
        self._release: dict[str, asyncio.Event] = {}

    def _event(self, job_id: str) -> asyncio.Event:
        return self._release.setdefault(job_id, asyncio.Event())

    def finish(self, job_id: str) -> None:
        self._event(job_id).set()

    async def execute(self, request: ExecuteRequest, job_id: str, *,
                      lender: Any = None) -> ExecuteResult:
        self.started.append(job_id)
        self.running.add(job_id)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            await self._event(job_id).wait()
        except asyncio.CancelledError:
            self.killed.append(job_id)
            raise
        finally:
            self.running.discard(job_id)
        stage = StageResult(stdout=f"{job_id}\n", output=f"{job_id}\n", exit_code=0,
                            status=Status.OK)
        return ExecuteResult(id=job_id, language="python", version="3", compile=StageResult(),
                             runtime=stage)


class FakeStore:
    """The job rows, by id; `hold(method)` makes that write wait for `let(method)`."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[int, Token] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_finish = False
        self._held: dict[str, asyncio.Event] = {}

    def hold(self, method: str) -> None:
        self._held[method] = asyncio.Event()

    def let(self, method: str) -> None:
        self._held.pop(method).set()

    async def _gate(self, method: str, job_id: str) -> None:
        self.calls.append((method, job_id))
        held = self._held.get(method)
        if held is not None:
            await held.wait()

    async def insert_job(self, job: Job) -> None:
        await self._gate("insert_job", job.id)
        self.jobs[job.id] = job

    async def mark_running(self, job_id: str, started_at: str) -> None:
        await self._gate("mark_running", job_id)
        job = self.jobs[job_id]
        if job.status is JobStatus.QUEUED:
            self.jobs[job_id] = _evolve(job, status=JobStatus.RUNNING, started_at=started_at)

    async def finish_job(self, job_id: str, status: JobStatus, finished_at: str, *,
                         result: str | None = None, error: str | None = None,
                         announce: bool = True) -> None:
        await self._gate("finish_job", job_id)
        if self.fail_finish:
            raise OSError("disk full")
        job = self.jobs[job_id]
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            self.jobs[job_id] = _evolve(job, status=status, finished_at=finished_at,
                                        result=result, error=error)

    async def get_job(self, job_id: str, token_id: int) -> Job | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.token_id == token_id else None

    async def running_jobs(self) -> list[tuple[str, int, str]]:
        return [(j.id, j.token_id, j.request) for j in self.jobs.values()
                if j.status is JobStatus.RUNNING]

    async def fail_running(self, finished_at: str, error: str) -> int:
        running = [j for j in self.jobs.values() if j.status is JobStatus.RUNNING]
        for job in running:
            self.jobs[job.id] = _evolve(job, status=JobStatus.FAILED, finished_at=finished_at,
                                        error=error)
        return len(running)

    async def queued_jobs(self) -> list[tuple[Job, Token]]:
        return [(j, self.tokens[j.token_id]) for j in self.jobs.values()
                if j.status is JobStatus.QUEUED]


def _evolve(job: Job, **changes: Any) -> Job:
    return attrs.evolve(job, **changes)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(scenario: Callable[..., Awaitable[None]], *, workers: int = 1, queue_size: int = 10,
        engine: EngineLike | None = None) -> None:
    """Run `scenario(scheduler, engine, store, clock)`, then close the scheduler."""
    async def main() -> None:
        fake_engine = engine or FakeEngine()
        store, clock = FakeStore(), FakeClock()
        scheduler = Scheduler(fake_engine, store, workers=workers, queue_size=queue_size,
                              shutdown_timeout=0, clock=clock)
        try:
            await asyncio.wait_for(scenario(scheduler, fake_engine, store, clock), 10)
        finally:
            for job_id in list(store.jobs):
                if isinstance(fake_engine, FakeEngine):
                    fake_engine.finish(job_id)
            await scheduler.close(0)
    asyncio.run(main())


async def settle() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def submit(scheduler: Scheduler, job_id: str, token: Token | None = None, **extra: Any):
    request, body = _request(**extra)
    return await scheduler.submit(job_id, request, body, token or _token())


def test_at_most_workers_jobs_run_at_once_and_the_rest_wait_in_order() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        entries = [await submit(scheduler, f"j{i}") for i in range(5)]
        await settle()
        assert engine.started == ["j0", "j1"]
        assert scheduler.stats() == {"running": 2, "queued": 3, "workers": 2,
                                          "queueSize": 10, "tracked": 5}
        assert [store.jobs[f"j{i}"].status for i in range(5)] == \
            [JobStatus.RUNNING] * 2 + [JobStatus.QUEUED] * 3
        for job_id in ["j1", "j0", "j2", "j3", "j4"]:
            engine.finish(job_id)
            await settle()
        outcomes = [await scheduler.wait(e) for e in entries]
        assert [o.status for o in outcomes] == [JobStatus.COMPLETED] * 5
        assert engine.started == ["j0", "j1", "j2", "j3", "j4"]       # first in, first run
        assert engine.most_at_once == 2
        assert scheduler.stats()["running"] == scheduler.stats()["queued"] == 0
        assert scheduler.stats()["tracked"] == 0
    run(scenario, workers=2)


def test_a_full_queue_and_a_token_at_its_limit_are_refused_before_any_write() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        await submit(scheduler, "a")
        await submit(scheduler, "b")
        with pytest.raises(QueueFull):
            await submit(scheduler, "c")
        limited = _token(2, max_concurrency=1)
        with pytest.raises(QueueFull):
            scheduler.check_room(limited, 1)
        assert "c" not in store.jobs and not scheduler.accepting
        engine.finish("a")
        await settle()
        await submit(scheduler, "d", limited)
        with pytest.raises(TooManyJobs):
            await submit(scheduler, "e", limited)
        assert "e" not in store.jobs
    run(scenario, workers=1, queue_size=1)


def test_cancel_of_a_queued_job_saves_it_cancelled_and_it_never_runs() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        first = await submit(scheduler, "first")
        queued = await submit(scheduler, "queued")
        last = await submit(scheduler, "last")
        await scheduler.cancel("queued", 1)
        outcome = await scheduler.wait(queued)
        assert outcome.status is JobStatus.CANCELLED and outcome.error.code == "JOB_CANCELLED"
        assert store.jobs["queued"].status is JobStatus.CANCELLED
        assert scheduler.stats()["queued"] == 1
        engine.finish("first")
        engine.finish("last")
        assert (await scheduler.wait(first)).status is JobStatus.COMPLETED
        assert (await scheduler.wait(last)).status is JobStatus.COMPLETED
        assert "queued" not in engine.started
    run(scenario)


def test_cancel_of_a_running_job_kills_the_run_and_frees_its_slot() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        running = await submit(scheduler, "running")
        nxt = await submit(scheduler, "next")
        await settle()
        assert engine.started == ["running"]
        await scheduler.cancel("running", 1)
        assert engine.killed == ["running"]
        outcome = await scheduler.wait(running)
        assert outcome.status is JobStatus.CANCELLED
        assert store.jobs["running"].status is JobStatus.CANCELLED
        await settle()
        assert engine.started == ["running", "next"]
        engine.finish("next")
        assert (await scheduler.wait(nxt)).status is JobStatus.COMPLETED
    run(scenario)


def test_cancel_before_the_run_task_first_step_still_saves_and_frees_everything() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        entry = await submit(scheduler, "j")
        assert entry.state is State.STARTING        # its task has not run a step
        await scheduler.cancel("j", 1)
        assert (await scheduler.wait(entry)).status is JobStatus.CANCELLED
        assert engine.started == [] and store.jobs["j"].status is JobStatus.CANCELLED
        assert scheduler.stats()["running"] == 0 and scheduler.stats()["tracked"] == 0
    run(scenario)


def test_a_cancel_while_the_insert_is_in_flight_acts_once_the_job_is_stored() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        await submit(scheduler, "first")
        store.hold("insert_job")
        submitting = asyncio.ensure_future(submit(scheduler, "second"))
        await settle()
        cancelling = asyncio.ensure_future(scheduler.cancel("second", 1))
        await settle()
        assert not cancelling.done()
        store.let("insert_job")
        entry = await submitting
        await cancelling
        assert (await scheduler.wait(entry)).status is JobStatus.CANCELLED
        assert store.jobs["second"].status is JobStatus.CANCELLED
        assert "second" not in engine.started
    run(scenario)


def test_the_waiter_is_told_only_after_the_outcome_is_saved() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        entry = await submit(scheduler, "j")
        await settle()
        store.hold("finish_job")
        engine.finish("j")
        await settle()
        # The run is over and its outcome known; the save is held, so nobody is told.
        assert ("finish_job", "j") in store.calls and not entry.done.done()
        assert store.jobs["j"].status is JobStatus.RUNNING
        store.let("finish_job")
        outcome = await scheduler.wait(entry)
        assert outcome.status is JobStatus.COMPLETED
        assert store.jobs["j"].status is JobStatus.COMPLETED
        assert store.jobs["j"].result == outcome.result.decode()
    run(scenario)


def test_an_outcome_that_could_not_be_saved_is_never_answered() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        called: list[str] = []

        async def on_finish(job_id: str, token_id: int, url: str) -> None:
            called.append(job_id)

        scheduler.on_finish = on_finish
        entry = await submit(scheduler, "j", callbackUrl="https://example.com/hook")
        store.fail_finish = True
        engine.finish("j")
        outcome = await scheduler.wait(entry)
        assert outcome.status is JobStatus.FAILED and outcome.result is None
        assert outcome.error.code == "INTERNAL_ERROR" and "could not be saved" in \
            outcome.error.message
        assert called == []                 # no callback for an end the store does not hold
        assert scheduler.stats()["running"] == 0 and scheduler.stats()["tracked"] == 0
    run(scenario)


def test_shutdown_fails_unfinished_runs_and_leaves_queued_jobs_queued() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        running = await submit(scheduler, "running")
        queued = await submit(scheduler, "queued")
        await settle()
        await scheduler.close(0)            # no time to finish: the run is cancelled
        assert engine.killed == ["running"]
        outcome = await scheduler.wait(running)
        assert outcome.status is JobStatus.FAILED and outcome.error.code == "INTERRUPTED"
        assert store.jobs["running"].status is JobStatus.FAILED
        assert json.loads(store.jobs["running"].error)["code"] == "INTERRUPTED"
        told = await scheduler.wait(queued)
        assert told.status is JobStatus.QUEUED and isinstance(told.error, ShuttingDown)
        assert store.jobs["queued"].status is JobStatus.QUEUED      # runs after the next start
        with pytest.raises(ShuttingDown):
            await submit(scheduler, "late")
        assert "late" not in store.jobs and not scheduler.accepting
    run(scenario)


def test_shutdown_lets_a_run_finish_within_its_timeout() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        entry = await submit(scheduler, "j")
        await settle()
        closing = asyncio.ensure_future(scheduler.close(60))
        await settle()
        assert not closing.done() and scheduler.closing
        engine.finish("j")
        await closing
        assert (await scheduler.wait(entry)).status is JobStatus.COMPLETED
        assert store.jobs["j"].status is JobStatus.COMPLETED and engine.killed == []
    run(scenario)


def test_a_shutdown_during_the_insert_of_a_job_that_had_a_slot_fails_it_unrun() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        store.hold("insert_job")
        submitting = asyncio.ensure_future(submit(scheduler, "j"))
        await settle()
        await scheduler.close(0)
        store.let("insert_job")
        with pytest.raises(ShuttingDown):
            await submitting
        assert store.jobs["j"].status is JobStatus.FAILED and engine.started == []
        assert scheduler.stats()["running"] == 0 and scheduler.stats()["tracked"] == 0
    run(scenario)


def test_recovery_fails_interrupted_jobs_and_runs_queued_ones_in_order() -> None:
    async def scenario(scheduler, engine, store, clock) -> None:
        token = _token()
        store.tokens[token.id] = token
        hooked = json.dumps({"language": "python", "code": "print(1)",
                             "callbackUrl": "https://example.com/hook"})
        plain = json.dumps({"language": "python", "code": "print(2)"})
        store.jobs["crashed"] = Job(id="crashed", token_id=1, status=JobStatus.RUNNING,
                                    request=hooked, created_at="2026-01-01T00:00:00Z")
        for i in range(3):
            store.jobs[f"q{i}"] = Job(id=f"q{i}", token_id=1, status=JobStatus.QUEUED,
                                      request=plain, created_at="2026-01-01T00:00:00Z")
        store.jobs["bad"] = Job(id="bad", token_id=1, status=JobStatus.QUEUED,
                                request="{not json", created_at="2026-01-01T00:00:00Z")
        called: list[str] = []

        async def on_finish(job_id: str, token_id: int, url: str) -> None:
            called.append(job_id)

        scheduler.on_finish = on_finish
        assert await scheduler.recover() == (2, 3)
        crashed = store.jobs["crashed"]
        assert crashed.status is JobStatus.FAILED
        assert json.loads(crashed.error)["code"] == "INTERRUPTED"
        assert called == ["crashed"]
        assert store.jobs["bad"].status is JobStatus.FAILED
        for i in range(3):
            await settle()
            engine.finish(f"q{i}")
        await settle()
        assert engine.started == ["q0", "q1", "q2"] and "crashed" not in engine.started
        assert all(store.jobs[f"q{i}"].status is JobStatus.COMPLETED for i in range(3))
    run(scenario)


def test_retry_after_follows_run_times_on_the_schedulers_clock() -> None:
    class TimedEngine(FakeEngine):
        clock: FakeClock

        async def execute(self, request: ExecuteRequest, job_id: str, *,
                          lender: Any = None) -> ExecuteResult:
            self.clock.now += 30.0                   # each run takes 30 s of the fake clock
            return await super().execute(request, job_id, lender=lender)

    engine = TimedEngine()

    async def scenario(scheduler, engine, store, clock) -> None:
        engine.clock = clock
        assert scheduler.retry_after() == 1          # no run yet: the initial half second
        for i in range(10):
            entry = await submit(scheduler, f"j{i}")
            engine.finish(f"j{i}")
            await scheduler.wait(entry)
        # Ten 30 s runs bring the moving average near 30 s; an empty queue waits one run.
        assert 19 <= scheduler.retry_after() <= 30
    run(scenario, engine=engine)


def test_slots_lent_to_a_judged_job_count_against_workers_and_the_token() -> None:
    class LendingEngine(FakeEngine):
        lender: Any = None

        async def execute(self, request: ExecuteRequest, job_id: str, *,
                          lender: Any = None) -> ExecuteResult:
            self.lender = lender
            return await super().execute(request, job_id, lender=lender)

    engine = LendingEngine()

    async def scenario(scheduler, engine, store, clock) -> None:
        token = _token(max_concurrency=2)
        judged = await submit(scheduler, "judged", token,
                              testCases=[{"stdin": "", "expectedOutput": "1\n"}])
        await settle()
        lender = engine.lender
        assert lender is not None
        assert lender.try_borrow()                   # a second slot, the token's second job
        assert not lender.try_borrow()               # the token is at its limit
        assert scheduler.stats()["running"] == 2
        with pytest.raises(TooManyJobs):
            await submit(scheduler, "other", token)
        lender.release()
        assert scheduler.stats()["running"] == 1
        engine.finish("judged")
        assert (await scheduler.wait(judged)).status is JobStatus.COMPLETED
    run(scenario, workers=3, engine=engine)


class ClusterFakeStore(FakeStore):
    """FakeStore with what pesto.cluster's submit and close call; `verdict` is the
    insert's answer ('ok' stores the job)."""
    verdict = "ok"

    async def submit_job(self, job: Job, node_id: str | None, queue_limit: int | None) -> str:
        await self._gate("submit_job", job.id)
        if self.verdict == "ok":
            self.jobs[job.id] = job
        return self.verdict

    async def leave(self, node_id: str) -> None:
        pass


def test_a_run_beside_its_insert_that_ends_at_once_is_saved_after_the_insert() -> None:
    """pesto.cluster starts a job beside its insert: a run that ends before its first
    await (an engine failing at once) must still wait for the row it finishes."""
    from pesto.cluster import ClusterScheduler

    class FailingEngine(FakeEngine):
        async def execute(self, request: ExecuteRequest, job_id: str, *,
                          lender: Any = None) -> ExecuteResult:
            raise RuntimeError("broken at once")

    async def main() -> None:
        store = ClusterFakeStore()
        scheduler = ClusterScheduler(FailingEngine(), store, workers=1, queue_size=10,
                                     shutdown_timeout=0, clock=FakeClock())
        entry = await submit(scheduler, "j")
        outcome = await asyncio.wait_for(scheduler.wait(entry), 5)
        assert outcome.status is JobStatus.FAILED and outcome.error.code == "INTERNAL_ERROR"
        assert store.calls.index(("submit_job", "j")) < store.calls.index(("finish_job", "j"))
        assert store.jobs["j"].status is JobStatus.FAILED
        await scheduler.close(0)

    asyncio.run(main())


def test_a_refused_insert_after_a_shutdown_cancel_still_frees_the_slot() -> None:
    """A job run beside its insert (pesto.cluster), cancelled by a shutdown while the
    insert is out, then refused by it: the refusal's second cancel lands while the
    task waits for the insert, and must not skip the slot's release."""
    from pesto.cluster import ClusterScheduler
    from pesto.errors import TokenRevoked

    async def main() -> None:
        engine, store = FakeEngine(), ClusterFakeStore()
        store.verdict = "revoked"
        scheduler = ClusterScheduler(engine, store, workers=1, queue_size=10,
                                     shutdown_timeout=0, clock=FakeClock())
        store.hold("submit_job")
        submitting = asyncio.ensure_future(submit(scheduler, "j"))
        await settle()
        assert engine.started == ["j"]                  # beside its insert
        closing = asyncio.ensure_future(scheduler.close(0))
        await settle()
        assert engine.killed == ["j"]                   # the shutdown's cancel
        store.let("submit_job")                         # refused: the second cancel
        await asyncio.wait_for(closing, 5)
        with pytest.raises(TokenRevoked):
            await submitting
        assert "j" not in store.jobs
        assert ("finish_job", "j") not in store.calls
        assert scheduler.stats()["running"] == 0 and scheduler.stats()["tracked"] == 0

    asyncio.run(main())
