"""The exception tree. Domain code raises these; the API maps them to JSON.

Each class carries its HTTP status and error code, so one function
(`pesto.api.errors`) can turn any of them into `{"code", "message"}`.
"""

from __future__ import annotations


class PestoError(Exception):
    status_code: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: object | None = None,
                 retry_after: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        # Clients of the original service switch on `message`: where docs/api.md
        # fixes its text, what would help a person goes in `hint`.
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.hint = hint


class InvalidRequest(PestoError):
    status_code = 400
    code = "INVALID_REQUEST"


class PistonError(InvalidRequest):
    """A request Piston itself refuses with 400 and this message (pesto/api/piston.py)."""


class RuntimeNotFound(PestoError):
    status_code = 400
    code = "RUNTIME_NOT_FOUND"


class ConfigError(PestoError):
    """Bad configuration or language file: fatal at start-up, never a client error."""


class SandboxError(PestoError):
    """The sandbox itself failed (not the program): a 500 and a log line."""


class SandboxSetupFailed(SandboxError):
    """A stage's sandbox could not be built (the exec helper's report): the
    host, not the program or a bug; `pesto doctor` says what is wrong."""
    status_code = 500
    code = "SANDBOX_SETUP_FAILED"


# --- Service errors (added by the API work; each maps to one row of API.md) ---

class TokenMissing(PestoError):
    status_code = 401
    code = "TOKEN_MISSING"


class TokenInvalid(PestoError):
    status_code = 401
    code = "TOKEN_INVALID"


class TokenRevoked(PestoError):
    status_code = 401
    code = "TOKEN_REVOKED"


class NotFound(PestoError):
    status_code = 404
    code = "NOT_FOUND"


class MethodNotAllowed(PestoError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"


class RequestTooLarge(PestoError):
    status_code = 413
    code = "REQUEST_TOO_LARGE"


class UnsupportedMediaType(PestoError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(PestoError):
    status_code = 429
    code = "RATE_LIMITED"


class QuotaExceeded(PestoError):
    status_code = 429
    code = "QUOTA_EXCEEDED"


class TooManyJobs(PestoError):
    status_code = 429
    code = "TOO_MANY_JOBS"


class QueueFull(PestoError):
    status_code = 503
    code = "QUEUE_FULL"


class JobCancelled(PestoError):
    """A job was cancelled (DELETE /api/jobs/<id>) while its client waited for it."""
    status_code = 409
    code = "JOB_CANCELLED"


class Interrupted(PestoError):
    """The server stopped (crash or shutdown) while the job was running."""
    status_code = 500
    code = "INTERRUPTED"


class ShuttingDown(PestoError):
    """The server is stopping and takes no new work."""
    status_code = 503
    code = "SHUTTING_DOWN"


# --- Token requests from the page at / (pesto/api/front.py) ---

class RequestRefused(PestoError):
    """A token request the store will not take: `why` is "duplicate" or "full".

    The store's answer, never sent as is: the page's handler turns it into
    DuplicateRequest or TooManyPending.
    """

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class TokenRequestsOff(PestoError):
    """The operator set token_requests = "off"."""
    status_code = 403
    code = "TOKEN_REQUESTS_OFF"


class DuplicateRequest(PestoError):
    """This email already has a token request that was not rejected."""
    status_code = 409
    code = "DUPLICATE_REQUEST"


class ClaimGone(PestoError):
    """The token of this claim code was already shown (it is shown once)."""
    status_code = 410
    code = "ALREADY_CLAIMED"


class TooManyPending(PestoError):
    """The bound on requests waiting for review is reached."""
    status_code = 503
    code = "TOO_MANY_PENDING"


# --- Signals inside one component (the sandbox's processes, the webhook sender):
# caught there and turned into an outcome, a reply or a log line, never a client's
# answer by themselves. Each line above a class names the module that raises it.

# pesto/sandbox/protocol.py
class BadMessage(ValueError):
    """A frame that is too large, or whose body is not the declared type."""


# pesto/sandbox/artifacts.py
class ArtifactError(Exception):
    """The compile output cannot be kept (too deep, too many entries): the program's fault."""


# pesto/sandbox/watch.py
class AbortRequested(Exception):
    """The server asked to abort the job (a cancelled request)."""


# pesto/sandbox/watch.py
class ServerGone(Exception):
    """The server closed the slot's socket (shutdown or crash)."""


# pesto/sandbox/supervisor.py
class SetupFailed(Exception):
    """The exec helper reported a failed set-up step ("step:errno:message")."""

    def __init__(self, step: str, err: int, text: str) -> None:
        super().__init__(f"sandbox setup failed at {step}: {text}")
        self.step, self.errno, self.text = step, err, text


# pesto/sandbox/helper.py
class HelperMissing(RuntimeError):
    """The helper is not built and cannot be (no C compiler)."""


# pesto/sandbox/uids.py
class NoFreeUid(Exception):
    """Every uid of the slot's range is held (leases not yet given back)."""


# pesto/webhooks.py
class CallbackRefused(Exception):
    """The URL may not be called: why, in words for a 400 or the delivery's last_error."""
