"""Piston's v2 API (github.com/engineer-man/piston) on Pesto's own job path.

`POST /api/v2/execute` takes Piston's body, translates it into a
native request and runs it exactly like `POST /api/execute` (the same
token limits, scheduler, sandbox, and a stored job fetchable by the id in
the `X-Pesto-Job` header); the result is translated back into Piston's
answer. `GET /api/v2/runtimes` lists the runtimes the Piston way.

What follows Piston's own code (api/src/api/v2.js, job.js): its validation
messages, status codes and `{"message"}` error bodies (its Python client
treats a one-key `{"message"}` body as the error), the semver version
selector, a missing trailing newline added to stdin, a failed compile
answered as `run` too, unnamed files, and the rule that a request may
only lower a limit. Where Pesto differs, docs/api.md says so.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import msgspec
import nodesemver
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec

from pesto.api.auth import require_piston_token
from pesto.api.errors import handle_exception
from pesto.api.routes import Authed, Services, decode_body, is_json, media_type, submit_job
from pesto.api.schema import body_of
from pesto.domain import JobStatus
from pesto.errors import PestoError, PistonError, RuntimeNotFound, UnsupportedMediaType
from pesto.models import described
from pesto.runtimes import Registry, Runtime
from pesto.validation import validate_request

log = logging.getLogger("pesto.api")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# Piston's status of a stage, by Pesto's (null: it exited 0).
_STATUS = {"ok": None, "error": "RE", "signal": "SG", "timeout": "TO", "memory": "SG"}
LIMITS = ("memory_limit", "timeout", "cpu_time")


def _error(exc: PestoError, headers: dict[str, str] | None = None) -> Response[bytes]:
    """Piston's error body: `{"message"}` alone, with the status of Pesto's error."""
    message = exc.message if exc.hint is None else f"{exc.message} ({exc.hint})"
    headers = dict(headers or {})
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return Response(_encode({"message": message}), status_code=exc.status_code,
                    media_type="application/json", headers=headers or None)


def _piston_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every error of Piston's execute route (its token's too), counted and logged as
    any other (`pesto.api.errors.handle_exception`), in Piston's body."""
    return handle_exception(request, exc, render=_error)


# --- the request -----------------------------------------------------------------

async def _read_body(request: Request[Any, Any, Any], services: Services) -> Any:
    media = media_type(request)
    # Piston wants application/json; its own npm client (piston-client) sends
    # JSON as text/plain, and others send no type at all: both are read as JSON.
    if media not in ("", "text/plain") and not is_json(media):
        raise UnsupportedMediaType("requests must be of type application/json")
    return await decode_body(request, services.settings.max_body_bytes)


def find_runtime(registry: Registry, language: str, selector: str) -> Runtime | None:
    """The newest installed runtime called `language` whose version satisfies the npm-style
    semver range `selector` (`3.11.2`, `3.x`, `^3.10`, `*`), as Piston picks one."""
    key = language.strip().lower()
    selector = "*" if selector.strip().lower() == "latest" else selector
    best: Runtime | None = None
    for runtime in registry.installed:
        if key not in runtime.names:
            continue
        try:
            ok = nodesemver.satisfies(runtime.version, selector, loose=True)
        except (ValueError, TypeError):      # a version or a range semver cannot read
            ok = False
        if ok and (best is None or nodesemver.gt(runtime.version, best.version, loose=True)):
            best = runtime
    return best


def _limit(payload: dict[str, Any], name: str, cap: int, floor: int) -> int | None:
    """A client's lower limit, checked as Piston checks it; None keeps the default.

    Piston skips falsy values; -1 is Piston's "no limit" and here means the default.
    """
    value = payload.get(name)
    if not value or value == -1:
        return None
    if type(value) not in (int, float):
        raise PistonError(f"If specified, {name} must be a number")
    if value > cap:
        raise PistonError(f"{name} cannot exceed the configured limit of {cap}")
    if value < 0:
        raise PistonError(f"{name} must be non-negative")
    if value < floor:
        raise PistonError(f"{name} must be at least {floor}")
    return int(value)


def translate(payload: Any, services: Services) -> tuple[dict[str, Any], Runtime]:
    """Piston's execute body as a native `/api/execute` body (exact version) and its
    runtime. The native body is validated like any (`pesto.validation`), and it is
    what the job store keeps and a restart reads back.

    Raises PistonError / RuntimeNotFound (400) with Piston's messages.
    """
    if not isinstance(payload, dict):
        raise PistonError("the body must be a JSON object")
    language, version, files = (payload.get(k) for k in ("language", "version", "files"))
    if not language or not isinstance(language, str):
        raise PistonError("language is required as a string")
    if not version or not isinstance(version, str):
        raise PistonError("version is required as a string")
    if not isinstance(files, list):
        raise PistonError("files is required as an array")
    for i, file in enumerate(files):
        if not isinstance(file, dict) or not isinstance(file.get("content"), str):
            raise PistonError(f"files[{i}].content is required as a string")
        if file.get("name") is not None and not isinstance(file["name"], str):
            raise PistonError(f"files[{i}].name must be a string")
    runtime = find_runtime(services.engine.registry, language, version)
    if runtime is None:
        raise RuntimeNotFound(f"{language}-{version} runtime is unknown")
    if not any(not f.get("encoding") or f.get("encoding") == "utf8" for f in files):
        raise PistonError("files must include at least one utf8 encoded file")

    s = services.settings
    caps = {"timeout": s.timeout_max, "cpu_time": s.timeout_max, "memory_limit": s.memory_max}
    floors = {"timeout": 1, "cpu_time": 1, "memory_limit": s.memory_min}
    asked = {f"{stage}_{kind}": _limit(payload, f"{stage}_{kind}", caps[kind], floors[kind])
             for kind in LIMITS for stage in ("compile", "run")}

    stdin, args = payload.get("stdin"), payload.get("args")
    stdin = "" if stdin is None else stdin
    args = [] if args is None else args
    if not isinstance(stdin, str):
        raise PistonError("stdin must be a string")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise PistonError("args must be an array of strings")
    if not stdin.endswith("\n"):
        stdin += "\n"                      # as Piston does

    # Piston runs the first UTF-8 file; an unknown encoding is UTF-8. An
    # unnamed entry file gets the language's own file name (gcc, javac and
    # friends go by the extension); other unnamed files Piston's `file<i>.code`.
    encodings = [f.get("encoding") if f.get("encoding") in ("base64", "hex") else "utf8"
                 for f in files]
    entry = encodings.index("utf8")
    sources = []
    for i, f in enumerate(files):
        source = {"name": f.get("name") or (runtime.file_name if i == entry else f"file{i}.code"),
                  "code": f["content"]}
        if i == entry:
            source["entrypoint"] = True
        if encodings[i] != "utf8":
            source["encoding"] = encodings[i]
        sources.append(source)

    limits = runtime.spec.limits
    # Pesto has one clock per stage (wall time, with CPU time as a backstop):
    # a CPU-time limit below the stage's timeout lowers that timeout.
    timeouts = {}
    for stage, default in (("compile", limits.compile_timeout or s.compile_timeout_default),
                           ("run", limits.run_timeout or s.run_timeout_default)):
        wall, cpu = asked[f"{stage}_timeout"], asked[f"{stage}_cpu_time"]
        timeouts[stage] = None if wall is None and cpu is None else min(
            x for x in (wall or default, cpu) if x is not None)
    run_memory, compile_memory = asked["run_memory_limit"], asked["compile_memory_limit"]
    if run_memory is not None and compile_memory is None and runtime.compiled:
        # Lowering the run's memory leaves the compile stage its own default.
        compile_memory = max(s.memory_default, limits.compile_memory or 0)
    native = {"language": language, "version": runtime.version, "files": sources,
              "stdin": stdin, "args": args, "compileTimeout": timeouts["compile"],
              "runTimeout": timeouts["run"], "memoryLimit": run_memory,
              "compileMemoryLimit": compile_memory}
    return {k: v for k, v in native.items() if v is not None}, runtime


# --- the answer ------------------------------------------------------------------

def stage(result: dict[str, Any], output_limit: int) -> dict[str, Any]:
    """One stage of Pesto's result (wire JSON) in Piston's words."""
    status = result["status"]
    code: int | None = result["exitCode"]
    signal = result["signal"]
    message = None
    piston_status = _STATUS.get(status)
    if status == "error":
        message = f"Exited with error status {code}"
    elif status == "signal":
        code, message = None, f"Caught fatal signal {result['exitCode'] - 128}"
    elif status == "timeout":
        code, signal, message = None, "SIGKILL", "Time limit exceeded"
    elif status == "memory":
        code, signal, message = None, "SIGKILL", "Memory limit exceeded"
    elif status == "output":
        err = len(result["stderr"].encode()) >= output_limit > len(result["stdout"].encode())
        piston_status = "EL" if err else "OL"
        code, signal = None, "SIGKILL"
        message = "stderr length exceeded" if err else "stdout length exceeded"
    return {"stdout": result["stdout"], "stderr": result["stderr"], "code": code,
            "signal": signal, "output": result["output"], "memory": result["memory"],
            "message": message, "status": piston_status, "cpu_time": result["cpuTime"],
            "wall_time": result["wallTime"]}


def answer(result: bytes, runtime: Runtime, output_limit: int) -> dict[str, Any]:
    native = _decode(result)
    body: dict[str, Any] = {}
    if runtime.compiled:
        body["compile"] = stage(native["compile"], output_limit)
    if native["runtime"]["status"] == "skipped" and "compile" in body:
        # Piston answers a failed compile as the run as well ("backward compatibility").
        body["run"] = body["compile"]
    else:
        body["run"] = stage(native["runtime"], output_limit)
    return {**body, "language": runtime.language.lower(), "version": runtime.version}


# --- the OpenAPI document ----------------------------------------------------------

class PistonStage(msgspec.Struct):
    stdout: str
    stderr: str
    code: int | None
    signal: str | None
    output: str
    memory: int
    message: str | None
    # Piston's XX (its sandbox failed) is never sent: that is a 500 here.
    status: Literal["RE", "SG", "TO", "OL", "EL"] | None
    cpu_time: int
    wall_time: int


class PistonResult(msgspec.Struct, omit_defaults=True):
    run: PistonStage
    language: str
    version: str
    compile: PistonStage | None = None


class PistonRuntime(msgspec.Struct):
    language: str
    version: str
    aliases: list[str]


class PistonMessage(msgspec.Struct):
    message: str


_LIMIT = "lower than the server's maximum; 0 or -1 keep the default"
_MS = Annotated[int, described(f"ms; {_LIMIT}")] | None
_BYTES = Annotated[int, described(f"bytes; {_LIMIT}")] | None


class PistonFile(msgspec.Struct):
    content: Annotated[str, described("the file, in `encoding`")]
    name: Annotated[str, described("relative path; default: the language's file name for the "
                              "first UTF-8 file, file<i>.code for others")] | None = None
    encoding: Annotated[str, described("utf8 (default), base64 or hex")] | None = None


class PistonRequest(msgspec.Struct):
    """Piston's v2 execute body. For the document only: `translate` reads it field by
    field, with Piston's own messages, as Piston does."""
    language: Annotated[str, described("name or alias, case-insensitive")]
    version: Annotated[str, described("semver range: '3.11.2', '3.x', '^3.10', '*'")]
    files: Annotated[list[PistonFile], described("the first UTF-8 file is run")]
    stdin: Annotated[str, described("standard input; a final newline is added if missing")] | None \
        = None
    args: list[str] | None = None
    compile_timeout: _MS = None
    run_timeout: _MS = None
    compile_cpu_time: _MS = None
    run_cpu_time: _MS = None
    compile_memory_limit: _BYTES = None
    run_memory_limit: _BYTES = None


# --- routes ----------------------------------------------------------------------

def _services(request: Request[Any, Any, Any]) -> Services:
    return request.app.state.pesto


@post("/api/v2/execute", status_code=200, summary="Piston v2: run a program and wait",
      description="Piston's execute body and answer (docs/api.md, \"Piston\"). The token goes "
                  "in X-Pesto-Token or Authorization; without either, the operator's anonymous "
                  "token (if configured) is used. Errors are `{\"message\"}`.",
      dependencies=body_of(PistonRequest), security=[{"token": []}, {"authorization": []}],
      before_request=require_piston_token,
      exception_handlers={Exception: _piston_exception},
      responses={200: ResponseSpec(PistonResult, generate_examples=False,
                                   description="both stages; `compile` only for compiled languages"),
                 **{status: ResponseSpec(PistonMessage, generate_examples=False,
                                         description="error: {message}")
                    for status in (400, 401, 409, 413, 415, 429, 500, 503)}})
async def v2_execute(request: Authed) -> Response[bytes]:
    services = _services(request)
    native, runtime = translate(await _read_body(request, services), services)
    # File names, counts and ranges, as for /api/execute; its errors become
    # Piston's {"message"} (_piston_exception).
    execute_request = validate_request(native, services.settings, services.engine.registry)
    entry = await submit_job(services, request.user, execute_request, _encode(native).decode())
    outcome = await services.scheduler.wait(entry)
    if outcome.status is JobStatus.COMPLETED and outcome.result is not None:
        body = answer(outcome.result, runtime, services.settings.output_limit)
        return Response(_encode(body), media_type="application/json",
                        headers={"X-Pesto-Job": entry.job_id})
    raise outcome.error or PestoError("the job ended without a result")


@get("/api/v2/runtimes", summary="Piston v2: installed languages",
     responses={200: ResponseSpec(list[PistonRuntime], generate_examples=False,
                                  description="installed runtimes, names in lower case")})
async def v2_runtimes(request: Request[Any, Any, Any]) -> Response[bytes]:
    # Piston's names are lower case; its clients match them as sent.
    return Response(_encode([
        {"language": r.language.lower(), "version": r.version, "aliases": list(r.spec.aliases)}
        for r in _services(request).engine.registry.installed]), media_type="application/json")


ROUTES = [v2_execute, v2_runtimes]
