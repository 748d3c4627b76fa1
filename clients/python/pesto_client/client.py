"""`Client` (blocking) and `AsyncClient` (asyncio): the same methods, the same answers.

Both run the operations of `pesto_client._ops`; each only knows how to send
one request and how to sleep. Every error answer raises `PestoApiError`
(see `pesto_client.errors`); `retries=N` makes 429 and 503 answers be sent
again up to N times, each after the server's Retry-After.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx

from pesto_client import _ops
from pesto_client._ops import Call, Op, Pause, RetryPolicy
from pesto_client.errors import from_response
from pesto_client.models import ExecuteResult, Job, JobRef, Program, Runtime

T = TypeVar("T")

TOKEN_HEADER = "X-Pesto-Token"
# A run may compile for 30 s and run for 30 s, and wait in the queue before.
DEFAULT_TIMEOUT = 120.0


class _Common:
    def __init__(self, token: str | None, retries: int, max_retry_wait: float) -> None:
        self._headers = {TOKEN_HEADER: token} if token else {}
        self._retry = RetryPolicy(retries=retries, max_wait=max_retry_wait)

    def _request(self, call: Call) -> dict[str, Any]:
        return {"method": call.method, "url": call.path, "json": call.json,
                "params": call.params, "headers": self._headers}

    def _backoff(self, response: httpx.Response, attempt: int) -> float:
        """Seconds to wait before sending again; raises the answer's error when not retrying."""
        delay = self._retry.delay(response, attempt)
        if delay is None:
            raise from_response(response)
        return delay


class Client(_Common):
    """A blocking client. Use it as a context manager, or call `close()`.

    `http` may be your own `httpx.Client` (its base URL must be the server's).
    """

    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 0,
                 max_retry_wait: float = 60.0, http: httpx.Client | None = None) -> None:
        super().__init__(token, retries, max_retry_wait)
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        for attempt in itertools.count():
            response = self._http.request(**self._request(call))
            if response.is_success:
                return response.json()
            time.sleep(self._backoff(response, attempt))

    def _drive(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(self._send(step))
        except StopIteration as done:
            return done.value
        finally:
            op.close()

    def execute(self, program: Program) -> ExecuteResult:
        """Run a program and wait for its result (POST /api/execute)."""
        return self._drive(_ops.execute(program))

    def submit(self, program: Program) -> JobRef:
        """Queue a program; answers at once (POST /api/jobs)."""
        return self._drive(_ops.submit(program))

    def submit_batch(self, programs: Sequence[Program]) -> list[JobRef]:
        """Queue several programs, all or none (POST /api/jobs/batch)."""
        return self._drive(_ops.submit_batch(programs))

    def get(self, job_id: str) -> Job:
        """The job as it stands (GET /api/jobs/<id>)."""
        return self._drive(_ops.get(job_id))

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Several jobs in the order asked; None for an id this token has no job of."""
        return self._drive(_ops.get_many(job_ids))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; the job as it now stands (DELETE /api/jobs/<id>)."""
        return self._drive(_ops.cancel(job_id))

    def wait(self, job_id: str, *, timeout: float = 60.0, interval: float = 0.2) -> Job:
        """Poll until the job is finished. Raises WaitTimeout after `timeout` seconds."""
        return self._drive(_ops.wait(job_id, timeout, interval))

    def runtimes(self) -> list[Runtime]:
        """The installed languages (GET /api/runtimes)."""
        return self._drive(_ops.runtimes())


class AsyncClient(_Common):
    """The asyncio client: the methods of `Client`, awaited.

    `http` may be your own `httpx.AsyncClient` (its base URL must be the server's).
    """

    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 0,
                 max_retry_wait: float = 60.0, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(token, retries, max_retry_wait)
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        for attempt in itertools.count():
            response = await self._http.request(**self._request(call))
            if response.is_success:
                return response.json()
            await asyncio.sleep(self._backoff(response, attempt))

    async def _drive(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(await self._send(step))
        except StopIteration as done:
            return done.value
        finally:
            op.close()

    async def execute(self, program: Program) -> ExecuteResult:
        return await self._drive(_ops.execute(program))

    async def submit(self, program: Program) -> JobRef:
        return await self._drive(_ops.submit(program))

    async def submit_batch(self, programs: Sequence[Program]) -> list[JobRef]:
        return await self._drive(_ops.submit_batch(programs))

    async def get(self, job_id: str) -> Job:
        return await self._drive(_ops.get(job_id))

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        return await self._drive(_ops.get_many(job_ids))

    async def cancel(self, job_id: str) -> Job:
        return await self._drive(_ops.cancel(job_id))

    async def wait(self, job_id: str, *, timeout: float = 60.0, interval: float = 0.2) -> Job:
        return await self._drive(_ops.wait(job_id, timeout, interval))

    async def runtimes(self) -> list[Runtime]:
        return await self._drive(_ops.runtimes())
