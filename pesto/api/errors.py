"""The one place where an exception becomes an HTTP error body.

Every error leaves the server as `{"code", "message"}` (plus `details` for
validation errors and `hint` where one helps) with the status of API.md and, for 429/503, a
`Retry-After` header. Nothing else — never a stack trace, never an empty body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from pesto.errors import (InvalidRequest, MethodNotAllowed, NotFound, PestoError,
                          RequestTooLarge, UnsupportedMediaType)

log = logging.getLogger("pesto.api")

_encode = msgspec.json.Encoder().encode

# Litestar's own HTTP exceptions (routing, body size) in our vocabulary.
_BY_STATUS: dict[int, tuple[type[PestoError], str]] = {
    400: (InvalidRequest, "the request is invalid"),
    404: (NotFound, "no such route; see /schema for the API"),
    405: (MethodNotAllowed, "this route does not take that method"),
    413: (RequestTooLarge, "the request body is larger than the server accepts"),
    415: (UnsupportedMediaType, "the body must be application/json"),
}


def to_pesto_error(exc: BaseException) -> PestoError:
    """Translate any exception into the PestoError the client will see."""
    if isinstance(exc, PestoError):
        return exc
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        kind, message = _BY_STATUS.get(exc.status_code, (None, ""))
        if kind is None:
            err = PestoError(str(exc.detail) or "client error")
            err.status_code = exc.status_code
            err.code = "HTTP_%d" % exc.status_code
            return err
        return kind(message)
    return PestoError("internal error; it has been logged")


def error_response(exc: PestoError, headers: dict[str, str] | None = None) -> Response[bytes]:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details is not None:
        body["details"] = exc.details
    if exc.hint is not None:
        body["hint"] = exc.hint
    headers = dict(headers or {})
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return Response(_encode(body), status_code=exc.status_code, media_type="application/json",
                    headers=headers)


def handle_exception(request: Request[Any, Any, Any], exc: Exception, *,
                     render: Callable[[PestoError, dict[str, str] | None], Response[bytes]]
                     = error_response) -> Response[bytes]:
    """Litestar exception handler for every exception type; `render` makes the body
    (Piston's route renders its own)."""
    err = to_pesto_error(exc)
    if err.status_code == 429:   # a token limit (pesto.limits): counted by kind and token name
        services = getattr(request.app.state, "pesto", None)
        if services is not None and services.metrics is not None:
            token = request.scope.get("user")    # put there by pesto.api.auth
            services.metrics.refused(err.code.lower(), getattr(token, "name", ""))
    if err.status_code >= 500 and not isinstance(exc, PestoError):
        log.error("%s %s: unhandled %s", request.method, request.url.path, type(exc).__name__,
                  exc_info=exc)
    headers = None
    if isinstance(exc, HTTPException) and exc.status_code == 405 and exc.headers:
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return render(err, headers)
