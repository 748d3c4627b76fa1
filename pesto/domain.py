"""The records Pesto keeps: jobs, tokens, token requests and webhook deliveries.

Frozen attrs classes with enums for states, changed with `attrs.evolve`.
Both stores (`pesto.store`, `pesto.pgstore`) read and write them; the
scheduler, the API and the CLI pass them around. Nothing here knows SQL or HTTP.
"""

from __future__ import annotations

import enum

import attrs


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


@attrs.frozen
class Token:
    id: int
    name: str
    created_at: str
    last_used_at: str | None
    rate_limit: int | None          # requests per minute
    monthly_limit: int | None       # executions per calendar month (UTC)
    max_concurrency: int | None     # queued + running jobs at once
    revoked_at: str | None = None
    month_executions: int = 0       # executions in the month asked about


@attrs.frozen
class Job:
    id: str
    token_id: int
    status: JobStatus
    request: str                    # the request body as JSON text
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    result: str | None = None       # the execute response as JSON text
    error: str | None = None        # {"code", "message"} as JSON text


@attrs.frozen
class Delivery:
    """One webhook delivery of a finished job's state (pesto/webhooks.py)."""
    id: int
    job_id: str
    token_id: int
    url: str
    payload: str
    status: str                     # pending, delivered, failed
    attempts: int
    created_at: float               # Unix time
    next_attempt_at: float
    last_error: str | None = None


class RequestStatus(str, enum.Enum):
    PENDING = "pending"             # waiting for `pesto token approve` or `reject`
    APPROVED = "approved"           # its token waits, sealed, for the claim
    REJECTED = "rejected"
    CLAIMED = "claimed"             # its token was shown (or issued at once, in auto mode)


@attrs.frozen
class TokenRequest:
    """A visitor's request for a token (the form on the page at /)."""
    id: int
    name: str
    email: str                      # lower-cased; unique among requests not rejected
    purpose: str
    address: str                    # the client address it came from
    status: RequestStatus
    created_at: str
    decided_at: str | None = None
    reason: str | None = None       # why it was rejected
    token_id: int | None = None     # the token issued for it
    claimed_at: str | None = None
