"""The front door: the page at `/`, its static files, and the token-request routes.

The page is plain files of the package (pesto/web/), read once and served
with a strict Content-Security-Policy: scripts and styles only from this
origin, no inline code, no other origin, no framing. It talks to the same
JSON API as any client.

The two public routes, `POST /api/token-requests` (the form) and
`POST /api/token-requests/claim`, answer only the request they are given:
neither takes an id, neither lists anything, and a claim is found by a
256-bit code, so they cannot be used to enumerate requests or tokens.
Both are rate limited per client address.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.resources
import ipaddress
import logging
import math
import re
import time
import unicodedata
from typing import Annotated, Any

import msgspec
from cryptography.exceptions import InvalidTag
from litestar import Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.params import FromPath

from pesto.api import claim
from pesto.api.auth import hash_token, new_token
from pesto.api.routes import read_json
from pesto.api.schema import body_of, errors, ok
from pesto.domain import RequestStatus
from pesto.errors import (ClaimGone, DuplicateRequest, InvalidRequest, NotFound, PestoError,
                          RateLimited, RequestRefused, TokenRequestsOff, TooManyPending)
from pesto.models import invalid

log = logging.getLogger("pesto.api")

_encode = msgspec.json.Encoder().encode

# Served on the page and its files. 'self' only: the editor and everything
# else are files of this package; output is inserted as text (app.js).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

_TYPES = {".html": "text/html", ".js": "text/javascript",
          ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain"}


def _load_web() -> dict[str, tuple[bytes, str]]:
    """Every file of pesto/web/ by name: a fixed set, so no path ever reaches the disk."""
    files = {}
    for entry in (importlib.resources.files("pesto") / "web").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return files


_WEB = _load_web()


def _page(name: str) -> Response[bytes]:
    body, media = _WEB[name]
    return Response(body, media_type=media, headers=SECURITY_HEADERS)


@get("/", include_in_schema=False)
async def index() -> Response[bytes]:
    return _page("index.html")


@get("/docs", include_in_schema=False)
async def api_docs() -> Response[bytes]:
    """The API documentation: the OpenAPI document rendered by the page's own script."""
    return _page("api.html")


@get("/web/{name:str}", include_in_schema=False)
async def web_file(name: FromPath[str]) -> Response[bytes]:
    if name not in _WEB:
        raise NotFound(f"no file {name!r} here")
    return _page(name)


@get("/web/page.json", include_in_schema=False)
async def page_data(request: Request[Any, Any, Any]) -> Response[bytes]:
    """What the page needs besides /api/runtimes: the token_requests mode, and the
    hello-world program of each installed runtime (its language folder's test file)."""
    state = request.app.state
    body = getattr(state, "front_page_data", None)
    if body is None:
        out = []
        for r in state.pesto.engine.registry.installed:
            try:
                code = r.test_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                code = ""
            out.append({"language": r.language, "version": r.version, "code": code})
        body = state.front_page_data = _encode(
            {"tokenRequests": state.pesto.settings.token_requests, "samples": out})
    return Response(body, media_type="application/json", headers=SECURITY_HEADERS)


# --- token requests -----------------------------------------------------------

FIELD_LIMITS = {"name": 100, "email": 254, "purpose": 2000}
CLAIMS_PER_HOUR = 60
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_ADDRESSES_MAX = 10_000


class _PerAddress:
    """Sliding one-hour window of hits per client address, in memory.

    Bounded: past _ADDRESSES_MAX addresses the table starts afresh (an
    attacker with that many addresses is not slowed by a per-address limit
    anyway; the pending bound still holds).
    """

    def __init__(self) -> None:
        self._hits: dict[str, collections.deque[float]] = {}

    def hit(self, address: str, per_hour: int, what: str) -> None:
        now = time.monotonic()
        if len(self._hits) >= _ADDRESSES_MAX and address not in self._hits:
            self._hits.clear()
        window = self._hits.setdefault(address, collections.deque())
        while window and window[0] <= now - 3600.0:
            window.popleft()
        if len(window) >= per_hour:
            retry = max(1, math.ceil(window[0] + 3600.0 - now))
            raise RateLimited(f"too many {what} from your address; retry in {retry} s",
                              retry_after=retry)
        window.append(now)


def _limiter(request: Request[Any, Any, Any], name: str) -> _PerAddress:
    state = request.app.state
    limiter = getattr(state, name, None)
    if limiter is None:
        limiter = _PerAddress()
        setattr(state, name, limiter)
    return limiter


def _address(request: Request[Any, Any, Any]) -> str:
    """The client address the limits count: an IPv6 client counts as its /64,
    since one host commonly holds a whole /64."""
    return address_key(request.client.host if request.client else "unknown")


def address_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


async def _small_json(request: Request[Any, Any, Any], limit: int = 16 * 1024) -> dict[str, Any]:
    """A JSON object body of at most `limit` bytes, or a 4xx."""
    payload = await read_json(request, limit)
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object")
    return payload


def _text(payload: dict[str, Any], field: str, problems: list[str]) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"$.{field}: required")
        return ""
    value = value.strip()
    if len(value) > FIELD_LIMITS[field]:
        problems.append(f"$.{field}: at most {FIELD_LIMITS[field]} characters")
    # Control characters (newlines too, except in the free text) would let a
    # request forge lines in the operator's `pesto token requests` output.
    allowed = "\n\t" if field == "purpose" else ""
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in allowed for c in value):
        problems.append(f"$.{field}: control characters are not allowed")
    return value


def parse_token_request(payload: dict[str, Any]) -> tuple[str, str, str]:
    """(name, email lower-cased, purpose) of a form, or InvalidRequest naming every bad field."""
    problems = [f"$.{key}: unknown field" for key in payload if key not in FIELD_LIMITS]
    name = _text(payload, "name", problems)
    email = _text(payload, "email", problems).lower()
    purpose = _text(payload, "purpose", problems)
    if email and not _EMAIL.fullmatch(email):
        problems.append("$.email: not an email address")
    if problems:
        raise invalid(problems, lead="the form has problems")
    return name, email, purpose


def trial_limits(settings: Any) -> dict[str, int | None]:
    return {"rate_limit": settings.trial_rate_limit, "monthly_limit": settings.trial_monthly_limit,
            "max_concurrency": settings.trial_max_concurrency}


def token_name(email: str) -> str:
    """The name of the token issued for a request: unique, as the email is among requests."""
    return "request:" + email


async def _mail(settings: Any, to: str, name: str, token: str) -> None:
    try:
        await asyncio.to_thread(claim.send_token_email, settings.smtp_url, settings.smtp_from,
                                to, name, token)
        log.info("token for request of %s mailed", to)
    except Exception as exc:   # the visitor has the token on the page already
        log.warning("mailing the token to %s failed: %s", to, exc)


class RequestAnswer(msgspec.Struct, rename="camel", omit_defaults=True):
    status: str                     # pending | claimed | rejected
    claim_code: str | None = None   # shown once: keep it to claim the token
    token: str | None = None        # shown once
    reason: str | None = None       # why it was rejected


# The bodies, for the document only: the handlers check them field by field
# (parse_token_request) so that a form names every problem at once.
class TokenForm(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=FIELD_LIMITS["name"])]
    email: Annotated[str, msgspec.Meta(max_length=FIELD_LIMITS["email"])]
    purpose: Annotated[str, msgspec.Meta(max_length=FIELD_LIMITS["purpose"])]


class Claim(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    claim_code: str


def _json(body: dict[str, Any], status: int = 200,
          background: BackgroundTask | None = None) -> Response[bytes]:
    # no-store: these answers may carry a token or a claim code.
    return Response(_encode(body), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"}, background=background)


@post("/api/token-requests", status_code=201, summary="Ask for a token (public)",
      description="Body {name, email, purpose}. Answers a claim code, shown once, or (when the "
                  "server issues trial tokens at once) the token itself.",
      dependencies=body_of(TokenForm),
      responses={201: ok(RequestAnswer, "pending with a claim code, or claimed with the token"),
                 **errors(400, 403, 409, 413, 415, 429, 503)})
async def request_token(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = request.app.state.pesto
    settings = services.settings
    if settings.token_requests == "off":
        raise TokenRequestsOff("this server does not take token requests; ask its operator")
    # Counted before anything is read: bad forms count too.
    _limiter(request, "front_forms").hit(_address(request), settings.token_requests_per_hour,
                                         "token requests")
    name, email, purpose = parse_token_request(await _small_json(request))
    code = claim.new_claim_code()
    auto = settings.token_requests == "auto"
    secret = new_token() if auto else None
    try:
        await services.store.add_token_request(
            name=name, email=email, purpose=purpose, address=_address(request),
            claim_hash=claim.claim_hash(code), public_key=claim.public_key(code),
            max_pending=settings.token_requests_pending_max,
            issue=(token_name(email), hash_token(secret), trial_limits(settings)) if auto else None)
    except RequestRefused as refused:
        if refused.why == "duplicate":
            raise DuplicateRequest(
                "a token request for this email address already exists; use its claim code, "
                "or ask the operator") from None
        raise TooManyPending("too many token requests are waiting for review; try again later",
                             retry_after=3600) from None
    if auto:
        mail = (BackgroundTask(_mail, settings, email, name, secret)
                if settings.smtp_url else None)
        return _json({"status": "claimed", "token": secret}, 201, mail)
    return _json({"status": "pending", "claimCode": code}, 201)


@post("/api/token-requests/claim", status_code=200, summary="Claim a requested token (public)",
      description="Body {claimCode}. Answers the request's status; once approved, the token, "
                  "exactly once.",
      dependencies=body_of(Claim),
      responses={200: ok(RequestAnswer, "pending, rejected (with a reason) or claimed (with the "
                                        "token)"), **errors(400, 404, 410, 413, 415, 429)})
async def claim_token(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = request.app.state.pesto
    _limiter(request, "front_claims").hit(_address(request), CLAIMS_PER_HOUR, "claims")
    payload = await _small_json(request, 1024)
    code = payload.get("claimCode")
    if not isinstance(code, str) or not code.strip() or set(payload) != {"claimCode"}:
        raise InvalidRequest("the body must be {\"claimCode\": \"claim_...\"}")
    code = code.strip()
    digest = claim.claim_hash(code)
    found = await services.store.request_by_claim(digest)
    if found is None:
        raise NotFound("no token request has this claim code")
    if found.status is RequestStatus.PENDING:
        return _json({"status": "pending"})
    if found.status is RequestStatus.REJECTED:
        return _json({"status": "rejected", "reason": found.reason})
    if found.status is RequestStatus.CLAIMED:
        raise ClaimGone("the token of this request was already shown; "
                        "ask the operator for a new one if it is lost")
    sealed = await services.store.take_sealed_token(digest)
    if sealed is None:   # another claim took it between the two statements
        raise ClaimGone("the token of this request was already shown")
    try:
        token = claim.open_sealed(sealed, code)
    except InvalidTag:   # cannot happen for the code that hashed to this row
        raise PestoError("the sealed token could not be opened") from None
    return _json({"status": "claimed", "token": token})


ROUTES = [index, api_docs, web_file, page_data, request_token, claim_token]
