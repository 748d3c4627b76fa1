"""Scheduler edge cases driven directly (real engine, real store), where HTTP timing cannot reach."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.api.conftest import make_settings, sqlite_only
from pesto.engine import Engine
from pesto.models import parse_request
from pesto.scheduler import Scheduler
from pesto.clock import utcnow
from pesto.domain import JobStatus
from pesto.store import Store

HELLO = {"language": "python", "code": "print(1)"}


async def _setup(data_dir: Path, workers: int = 1, queue_size: int = 5):
    sqlite_only(data_dir, "drives the in-process queue of the single-node Scheduler")
    settings = make_settings(data_dir, workers=workers, queue_size=queue_size)
    engine = await Engine.start(settings)
    store = await Store.open(data_dir)
    token = await store.create_token("t", "hash", max_concurrency=10)
    scheduler = Scheduler(engine, store, workers=workers, queue_size=queue_size,
                          shutdown_timeout=5)
    return engine, store, token, scheduler


def test_cancel_before_the_run_task_first_step_releases_everything(data_dir: Path) -> None:
    async def scenario() -> None:
        engine, store, token, scheduler = await _setup(data_dir)
        try:
            entry = await scheduler.submit("j1", parse_request(HELLO), json.dumps(HELLO), token)
            # No await between: the run task has been created but has not run a step.
            await asyncio.wait_for(scheduler.cancel("j1", token.id), 10)
            job = await store.get_job("j1", token.id)
            assert job is not None and job.status is JobStatus.CANCELLED
            assert (await scheduler.wait(entry)).status is JobStatus.CANCELLED
            assert scheduler.stats()["running"] == 0 and scheduler.stats()["tracked"] == 0
            # The slot is usable again.
            again = await scheduler.submit("j2", parse_request(HELLO), json.dumps(HELLO), token)
            outcome = await asyncio.wait_for(scheduler.wait(again), 30)
            assert outcome.status is JobStatus.COMPLETED
            assert json.loads(outcome.result)["runtime"]["stdout"] == "1\n"
        finally:
            await scheduler.close()
            await store.close()
            await engine.close()

    asyncio.run(scenario())


def test_queue_order_and_cancel_of_queued_job(data_dir: Path) -> None:
    async def scenario() -> None:
        engine, store, token, scheduler = await _setup(data_dir)
        try:
            bodies = [{"language": "python", "code": f"print({i})"} for i in range(4)]
            entries = [await scheduler.submit(f"q{i}", parse_request(b), json.dumps(b), token)
                       for i, b in enumerate(bodies)]
            assert scheduler.stats()["queued"] == 3
            await scheduler.cancel("q2", token.id)
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(scheduler.wait(e) for e in entries)), 60)
            assert [o.status for o in outcomes] == [JobStatus.COMPLETED, JobStatus.COMPLETED,
                                                   JobStatus.CANCELLED, JobStatus.COMPLETED]
            rows = [await store.get_job(f"q{i}", token.id) for i in range(4)]
            started = [r.started_at for r in rows if r.status is JobStatus.COMPLETED]
            assert started == sorted(started)          # first in, first run
            assert rows[2].started_at is None and rows[2].finished_at <= utcnow()
        finally:
            await scheduler.close()
            await store.close()
            await engine.close()

    asyncio.run(scenario())


def test_a_waiter_is_told_an_outcome_the_store_holds_already(data_dir: Path) -> None:
    """pesto.outcomes: the outcome is saved, then handed over; a shutdown saves the
    ends of the runs it waited for before `close` returns."""
    async def scenario() -> None:
        engine, store, token, scheduler = await _setup(data_dir)
        try:
            first = await scheduler.submit("first", parse_request(HELLO), json.dumps(HELLO), token)
            outcome = await asyncio.wait_for(scheduler.wait(first), 30)
            assert outcome.status is JobStatus.COMPLETED
            job = await store.get_job("first", token.id)
            assert job.status is JobStatus.COMPLETED and job.result == outcome.result.decode()
            shut = await scheduler.submit("shut", parse_request(HELLO), json.dumps(HELLO), token)
            await scheduler.close()
            assert (await scheduler.wait(shut)).status is JobStatus.COMPLETED
            job = await store.get_job("shut", token.id)
            assert job.status is JobStatus.COMPLETED and json.loads(job.result)["runtime"][
                "stdout"] == "1\n"
        finally:
            await scheduler.close()
            await store.close()
            await engine.close()

    asyncio.run(scenario())
