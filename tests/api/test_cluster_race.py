"""A waiter on a queued job is never settled before the job's row exists.

The cluster scheduler keeps a queued job's waiter in `_remote` from before
its insert (a fast finish on another node may be NOTIFYed before the insert
returns here). The heartbeat asks the database which waited-on jobs are
finished *or gone*; a job whose insert had not committed yet looked gone, and
its waiter got `500 the job is gone from the store` (seen under
tests/bench/bench_cluster.py). Here a real PostgreSQL store's insert is held
back on purpose while heartbeats run every 50 ms.

The engine is a stand-in: this is the scheduler's bookkeeping, not a run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pesto.cluster import ClusterScheduler
from pesto.models import ExecuteResult, StageResult, parse_request
from pesto.pgstore import PgStore
from pesto.sandbox.status import Status
from pesto.domain import JobStatus


class _HeldEngine:
    """Finishes a job when the test says so."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def execute(self, request: Any, job_id: str, **_: Any) -> ExecuteResult:
        await self.release.wait()
        stage = StageResult(stdout="1\n", output="1\n", exit_code=0, status=Status.OK)
        return ExecuteResult(id=job_id, language="python", version="3", compile=StageResult(),
                             runtime=stage)


class _SlowInsertStore(PgStore):
    """A queued job's insert that takes 0.5 s, as under contention for the token's row."""

    async def submit_job(self, job: Any, node_id: str | None, queue_limit: int | None) -> str:
        if job.status is JobStatus.QUEUED:
            await asyncio.sleep(0.5)
        return await super().submit_job(job, node_id, queue_limit)


def test_a_queued_job_inserting_while_the_heartbeat_runs_is_not_gone(postgres: Any) -> None:
    url = postgres.new_database()

    async def scenario() -> None:
        store = await _SlowInsertStore.open(url)
        engine = _HeldEngine()
        scheduler = ClusterScheduler(engine, store, lease=0.2, workers=1, queue_size=10,
                                     shutdown_timeout=5)
        try:
            token = await store.create_token("t", "h" * 64)
            body = json.dumps({"language": "python", "code": "print(1)"})
            request = parse_request(json.loads(body))
            await scheduler.recover()
            first = await scheduler.submit("job-1", request, body, token)      # takes the slot
            second = await scheduler.submit("job-2", request, body, token)     # queued, 0.5 s
            # Several heartbeats (every lease/4) ran during the insert; the job is queued now.
            assert (await store.job_by_id("job-2")).status is JobStatus.QUEUED
            await asyncio.sleep(0.2)
            assert not second.done.done(), second.done.result()
            engine.release.set()
            outcomes = await asyncio.wait_for(
                asyncio.gather(scheduler.wait(first), scheduler.wait(second)), 10)
            assert [o.status for o in outcomes] == [JobStatus.COMPLETED] * 2, outcomes
        finally:
            await scheduler.close(5)
            await store.close()

    asyncio.run(scenario())
