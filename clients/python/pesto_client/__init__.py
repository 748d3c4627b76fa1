"""Typed client for the Pesto code execution API (sync and async; needs only httpx).

    from pesto_client import Client, Program
    with Client("http://localhost:8080", token="pesto_...") as pesto:
        print(pesto.execute(Program("python", "print(1)")).run.stdout)
"""

from pesto_client.client import AsyncClient, Client
from pesto_client.errors import (InvalidRequest, JobCancelled, NotFound, PestoApiError, PestoError,
                                 TooManyRequests, Unauthorized, Unavailable, WaitTimeout)
from pesto_client.models import (CaseResult, Checker, ExecuteResult, File, Job, JobError, JobRef,
                                 Program, Runtime, Stage, Summary, TestCase)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "CaseResult", "Checker", "Client", "ExecuteResult", "File", "InvalidRequest",
    "Job", "JobCancelled", "JobError", "JobRef", "NotFound", "PestoApiError", "PestoError",
    "Program", "Runtime", "Stage", "Summary", "TestCase", "TooManyRequests", "Unauthorized",
    "Unavailable", "WaitTimeout",
]
