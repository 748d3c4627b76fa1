"""Route handlers. Each reads what it needs, calls the scheduler or the store,
and answers JSON bytes; every error is raised and mapped in `pesto.api.errors`."""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.params import FromPath

from pesto.api.auth import require_token
from pesto.api.errors import error_response
from pesto.api.options import options_handlers
from pesto.api.schema import (BatchCreated, Health, JobCreated, JobList, JobView, Pong,
                              RuntimeList, body_of, errors, ok)
from pesto.domain import Job, JobStatus, Token
from pesto.errors import (InvalidRequest, NotFound, PestoError, QueueFull, RequestTooLarge,
                          ShuttingDown, UnsupportedMediaType)
from pesto.limits import Rates, check_month
from pesto.models import ExecuteRequest, ExecuteResult, JudgeResult, invalid
from pesto.scheduler import Scheduler
from pesto.stores import StoreAPI
from pesto.validation import validate_request
from pesto.webhooks import check as check_callback

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
JSON = "application/json"
SECURITY = [{"token": []}]
# The handlers of routes that need a token take the request as this: its
# `user` is the caller's live token (put there by pesto.api.auth's hooks).
Authed = Request[Token, Any, Any]


@attrs.define
class Services:
    """What the lifespan owns; handlers reach it as `request.app.state.pesto`."""
    settings: Any
    engine: Any
    store: StoreAPI
    scheduler: Scheduler
    rates: Rates                    # where request times are counted (pesto.limits)
    runtimes: bytes = b'{"runtime":[]}'
    metrics: Any = None


def _services(request: Request[Any, Any, Any]) -> Services:
    return request.app.state.pesto


def _json(body: bytes | dict[str, Any], status: int = 200,
          headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(body if isinstance(body, bytes) else _encode(body), status_code=status,
                    media_type=JSON, headers=headers)


def media_type(request: Request[Any, Any, Any]) -> str:
    """The request's Content-Type without parameters, in lower case ("" if none)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(media: str) -> bool:
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request[Any, Any, Any], limit: int) -> Any:
    """The decoded JSON body. Raises UnsupportedMediaType (415), RequestTooLarge
    (413) or InvalidRequest (400)."""
    media = media_type(request)
    if not is_json(media):
        raise UnsupportedMediaType(
            f"the body must be JSON sent as Content-Type: {JSON} (got {media or 'none'!r})")
    return await decode_body(request, limit)


async def decode_body(request: Request[Any, Any, Any], limit: int) -> Any:
    """The body decoded as JSON, whatever its media type (the caller checked that).
    Raises RequestTooLarge (413) or InvalidRequest (400)."""
    body = await request.body()
    if len(body) > limit:
        raise RequestTooLarge(f"the body is larger than {limit} bytes")
    try:
        return _decode(body)
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply") from None
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None


async def _check_submission(payload: Any, services: Services) -> ExecuteRequest:
    """Fields, runtime, limits and callback URL of one submission.

    Raises InvalidRequest / RuntimeNotFound (400).
    """
    execute_request = validate_request(payload, services.settings, services.engine.registry)
    if execute_request.callback_url is not None:
        await check_callback(execute_request.callback_url, services.settings)
    return execute_request


async def _read_job_request(request: Request[Any, Any, Any],
                            services: Services) -> tuple[ExecuteRequest, str]:
    """Validate an execute body at the edge: media type, size, JSON, fields, runtime, limits.

    Raises UnsupportedMediaType (415), RequestTooLarge (413), InvalidRequest /
    RuntimeNotFound (400). Returns the request and its body as text for the store.
    """
    payload = await read_json(request, services.settings.max_body_bytes)
    execute_request = await _check_submission(payload, services)
    return execute_request, (await request.body()).decode("utf-8")


async def _submit(request: Authed):
    services = _services(request)
    execute_request, body = await _read_job_request(request, services)
    return services, await submit_job(services, request.user, execute_request, body)


async def submit_job(services: Services, token: Token, execute_request: ExecuteRequest,
                     body: str):
    """Hand a validated request to the scheduler if the token's month allows it
    (the scheduler asks its concurrency; pesto.limits decides both).

    Raises QuotaExceeded (429) and whatever `Scheduler.submit` raises.
    """
    check_month(token)
    job_id = uuid.uuid4().hex
    return await services.scheduler.submit(job_id, execute_request, body, token)


@post("/api/execute", status_code=200, summary="Run a program and wait",
      dependencies=body_of(ExecuteRequest),
      responses={200: ok(ExecuteResult | JudgeResult, "the result of both stages (with testCases: "
                         "compile, testCases and summary instead of runtime; docs/judging.md)"),
                 **errors(400, 401, 409, 413, 415, 429, 500, 503)})
async def execute(request: Authed) -> Response[bytes]:
    services, entry = await _submit(request)
    # Saved before it is handed over (pesto.outcomes): the answer is what the store holds.
    outcome = await services.scheduler.wait(entry)
    if outcome.status is JobStatus.COMPLETED and outcome.result is not None:
        return _json(outcome.result)
    raise outcome.error or PestoError("the job ended without a result")


@post("/api/jobs", status_code=202, summary="Queue a program",
      description="Same body as /api/execute; answers at once with a Location header.",
      dependencies=body_of(ExecuteRequest),
      responses={202: ok(JobCreated, "accepted"), **errors(400, 401, 413, 415, 429, 503)})
async def create_job(request: Authed) -> Response[bytes]:
    _, entry = await _submit(request)
    # API.md fixes the answer as "queued" (accepted, not yet done); a job that
    # found a free slot is already `running` by the time it is fetched.
    return _json({"id": entry.job_id, "status": "queued"}, 202,
                 {"Location": f"/api/jobs/{entry.job_id}"})


def job_body(job: Job) -> bytes:
    """A job as GET /api/jobs/<id> shows it: the JobView shape, with the stored
    result and error JSON passed through as they were saved (msgspec.Raw, which
    msgspec encodes as is: the fields' declared types are for the document)."""
    return _encode(JobView(
        id=job.id, status=job.status.value, created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at,
        result=msgspec.Raw(job.result) if job.result is not None else None,  # type: ignore
        error=msgspec.Raw(job.error) if job.error is not None else None))  # type: ignore


async def _own_job(services: Services, job_id: str, token: Token) -> Job:
    job = await services.store.get_job(job_id, token.id)
    if job is None:
        raise NotFound(f"no job {job_id!r} for this token")
    return job


@get("/api/jobs/{job_id:str}", summary="Fetch a job",
     responses={200: ok(JobView, "the job"), **errors(401, 404, 429)})
async def get_job(request: Authed, job_id: FromPath[str]) -> Response[bytes]:
    return _json(job_body(await _own_job(_services(request), job_id, request.user)))


@delete("/api/jobs/{job_id:str}", status_code=200, summary="Cancel a job",
        description="Cancels a queued or running job; answers the job as it now stands.",
        responses={200: ok(JobView, "the job"), **errors(401, 404, 429)})
async def cancel_job(request: Authed, job_id: FromPath[str]) -> Response[bytes]:
    token = request.user
    services = _services(request)
    await _own_job(services, job_id, token)
    await services.scheduler.cancel(job_id, token.id)
    return _json(job_body(await _own_job(services, job_id, token)))


@post("/api/jobs/batch", status_code=202, summary="Queue several programs",
      description="`{\"submissions\": [...]}`, each the body of a POST /api/jobs; all are "
      "queued or none (any invalid one is a 400 naming it).",
      responses={202: ok(BatchCreated, "accepted, in order"),
                 **errors(400, 401, 413, 415, 429, 503)})
async def create_batch(request: Authed) -> Response[bytes]:
    token = request.user
    services = _services(request)
    settings = services.settings
    payload = await read_json(request, settings.max_batch_body_bytes)
    if not isinstance(payload, dict) or set(payload) != {"submissions"} or \
            not isinstance(payload["submissions"], list):
        raise InvalidRequest("Missing parameters: the body must be {\"submissions\": [...]}",
                             details=["$.submissions: expected a list of job bodies"])
    submissions = payload["submissions"]
    if not 1 <= len(submissions) <= settings.max_batch:
        raise invalid([f"$.submissions: 1 to {settings.max_batch} submissions "
                       f"(got {len(submissions)})"])
    # Every submission is checked before any is stored: all or nothing.
    checked: list[ExecuteRequest] = []
    problems: list[str] = []
    for i, submission in enumerate(submissions):
        try:
            checked.append(await _check_submission(submission, services))
        except PestoError as exc:
            # Every detail line starts with its path, "$...": re-rooted in the batch.
            found = exc.details if isinstance(exc.details, list) else [f"$: {exc.message}"]
            problems += [f"$.submissions[{i}]{line[1:]}" for line in found]
    if problems:
        raise invalid(problems)
    check_month(token, len(checked))
    services.scheduler.check_room(token, len(checked))
    jobs = []
    for execute_request, submission in zip(checked, submissions):
        job_id = uuid.uuid4().hex
        await services.scheduler.submit(job_id, execute_request,
                                        _encode(submission).decode(), token)
        jobs.append({"id": job_id, "status": "queued"})
    return _json({"jobs": jobs}, 202)


@get("/api/jobs", summary="Fetch several jobs",
     description="`?ids=a,b,c`: the jobs in that order; null for an id this token has no job of.",
     responses={200: ok(JobList, "the jobs"), **errors(400, 401, 429)})
async def get_jobs(request: Authed) -> Response[bytes]:
    token = request.user
    services = _services(request)
    ids = [i for i in request.query_params.get("ids", "").split(",") if i]
    limit = max(services.settings.max_batch, 100)
    if not ids:
        raise InvalidRequest("Missing parameters: ?ids=ID,ID,...", details=["ids: required"])
    if len(ids) > limit:
        raise invalid([f"ids: at most {limit} ids"])
    found = [await services.store.get_job(job_id, token.id) for job_id in ids]
    return _json(b'{"jobs":[' + b",".join(job_body(j) if j else b"null" for j in found) + b"]}")


@get(["/api/runtimes", "/api/list-runtimes"], summary="Installed languages",
     responses={200: ok(RuntimeList, "installed runtimes")})
async def runtimes(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json(_services(request).runtimes)


@get("/api/ping", summary="Liveness", responses={200: ok(Pong, "always OK")})
async def ping() -> Response[bytes]:
    return _json(b'{"message":"OK"}')


@get("/healthz", summary="Readiness: 200 while the server accepts work",
     responses={200: ok(Health, "accepting work"), **errors(503)})
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    scheduler = _services(request).scheduler
    if scheduler.accepting:
        return _json(b'{"status":"ok"}')
    if scheduler.closing:
        return error_response(ShuttingDown("the server is shutting down", retry_after=5))
    return error_response(QueueFull("every worker is busy and the queue is full",
                                    retry_after=scheduler.retry_after()))


TOKEN_ROUTES = [execute, create_job, create_batch, get_jobs, get_job, cancel_job]
PUBLIC_ROUTES = [runtimes, ping, healthz]


def token_router() -> Router:
    """The routes under /api that need a token, each only through this router, whose
    `require_token` runs before every handler (pesto.api.auth); none of them may
    declare a `before_request` of its own (it would replace the router's)."""
    return Router(path="/", route_handlers=[*options_handlers(TOKEN_ROUTES), *TOKEN_ROUTES],
                  security=SECURITY, before_request=require_token)
