"""Every error answer of the API becomes one exception type, `PestoApiError`.

It carries what the server said (`code`, `message`, `details`) and how
(`status`, `retry_after` from the Retry-After header). Subclasses by
status let a caller catch only what it handles.
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any

import httpx


class PestoError(Exception):
    """Base of every exception this client raises."""


class PestoApiError(PestoError):
    """The server answered with an error status."""

    def __init__(self, status: int, code: str, message: str, *,
                 retry_after: int | None = None, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details


class InvalidRequest(PestoApiError):
    """400: a field is missing or wrong, or no such language (code RUNTIME_NOT_FOUND)."""


class Unauthorized(PestoApiError):
    """401: no token, an unknown one, or a revoked one."""


class NotFound(PestoApiError):
    """404: no such job for this token, or no such route."""


class TooManyRequests(PestoApiError):
    """429: a token limit (RATE_LIMITED, QUOTA_EXCEEDED, TOO_MANY_JOBS); see `retry_after`."""


class Unavailable(PestoApiError):
    """503: the queue is full or the server is shutting down; see `retry_after`."""


class JobCancelled(PestoApiError):
    """409: the job was cancelled while `execute` waited for it."""


class WaitTimeout(PestoError, TimeoutError):
    """`wait` gave up before the job finished (the job itself goes on)."""

    def __init__(self, job_id: str, status: str, seconds: float) -> None:
        super().__init__(f"job {job_id} still {status} after {seconds:g} s")
        self.job_id = job_id
        self.status = status


_BY_STATUS: dict[int, type[PestoApiError]] = {
    400: InvalidRequest, 401: Unauthorized, 404: NotFound, 409: JobCancelled,
    429: TooManyRequests, 503: Unavailable,
}


def retry_after(response: httpx.Response) -> int | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(when.timestamp() - time.time()))


def from_response(response: httpx.Response) -> PestoApiError:
    """The exception for an error answer, whatever its body (a proxy may send HTML)."""
    code, message, details = f"HTTP_{response.status_code}", response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        message = str(body.get("message", message))
        details = body.get("details")
    elif response.text:
        message = response.text[:200]
    kind = _BY_STATUS.get(response.status_code, PestoApiError)
    return kind(response.status_code, code, message, retry_after=retry_after(response),
                details=details)
