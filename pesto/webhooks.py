"""Signed webhooks: when a job with a `callbackUrl` finishes, POST its final state there.

- The body is the job as `GET /api/jobs/<id>` answers it. The header
  `X-Pesto-Signature: t=<unix seconds>,v1=<hex>` carries an HMAC-SHA256,
  keyed with the token's callback secret, of `<t>.<body>` (docs/judging.md
  shows a receiver checking it).
- Every delivery is a row in the store before the first attempt, so it
  survives a restart. The deliverer is one task of its own: a slow or dead
  receiver never holds a run slot. A delivery is retried with exponential
  backoff (1 s doubling, at most 5 min apart) until `callback_retry_seconds`
  after the job finished; a 2xx answer ends it.
- Targets are checked when the job is submitted (a 400 naming
  `$.callbackUrl`) and again at every attempt, after DNS resolution: a
  name that now resolves to a refused address is not contacted, and the
  connection goes to the address that was checked (no second lookup an
  attacker's DNS could answer differently). Link-local addresses (cloud
  metadata at 169.254.169.254) are always refused; private, loopback and
  other non-global ones unless `allow_private_callbacks` is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

# httpx: an async HTTP client with per-request timeouts and TLS SNI control
# (the `sni_hostname` extension), needed to connect to the very address that
# was checked while verifying the certificate for the URL's host name.
import httpx

from pesto.config import Settings
from pesto.domain import Delivery, Job
from pesto.errors import CallbackRefused
from pesto.models import invalid
from pesto.store import Store

log = logging.getLogger("pesto.webhooks")

SIGNATURE_HEADER = "X-Pesto-Signature"
MAX_URL = 2048
MAX_BACKOFF = 300.0
CONCURRENT = 8                 # deliveries in flight at once


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Pesto-Signature value for a body sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _address_refused(address: str, allow_private: bool) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped            # ::ffff:169.254.169.254 is 169.254.169.254
    if ip.is_link_local:
        return f"{ip} is a link-local address (cloud metadata lives there): never allowed"
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is not a unicast address"
    if not ip.is_global and not allow_private:
        return (f"{ip} is a private or loopback address: not allowed unless the operator "
                "sets allow_private_callbacks")
    return None


def _split(url: str) -> tuple[str, str, int]:
    if len(url) > MAX_URL:
        raise CallbackRefused(f"longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise CallbackRefused("must not carry a user name or password")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(url: str, allow_private: bool) -> str:
    """The address to connect to for `url`, every address it resolves to being allowed.

    Raises CallbackRefused (bad URL, unknown host, refused address).
    """
    _scheme, host, port = _split(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(f"host {host!r} cannot be resolved: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise CallbackRefused(f"host {host!r} has no address")
    # All of them: a name with one public and one private address could be
    # made to connect to either.
    for address in addresses:
        why = _address_refused(address, allow_private)
        if why:
            raise CallbackRefused(why)
    return addresses[0]


async def check(url: str, settings: Settings, field: str = "$.callbackUrl") -> None:
    """Refuse a callback URL at submission. Raises InvalidRequest naming the field."""
    try:
        await resolve(url, settings.allow_private_callbacks)
    except CallbackRefused as exc:
        raise invalid([f"{field}: {exc}"]) from None


class Deliverer:
    """Queues and sends the deliveries of one server; `start` it, `close` it."""

    def __init__(self, store: Store, settings: Settings, render: Callable[[Job], bytes]) -> None:
        self._store = store
        self._settings = settings
        self._render = render          # a job as GET /api/jobs/<id> answers it
        self._wake = asyncio.Event()
        self._busy: set[int] = set()   # delivery ids in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._closing = False

    def start(self) -> None:
        # No redirects: a 3xx could point anywhere, past the address check.
        self._client = httpx.AsyncClient(follow_redirects=False,
                                         timeout=self._settings.callback_timeout)
        self._loop_task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def close(self) -> None:
        """Stop; deliveries not yet done stay pending in the store for the next start."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            for task in [self._loop_task, *self._tasks]:
                task.cancel()
            await asyncio.gather(self._loop_task, *self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def job_finished(self, job_id: str, token_id: int, url: str) -> None:
        """Queue the delivery of a job just recorded as finished."""
        job = await self._store.get_job(job_id, token_id)
        if job is None or not job.status.finished:
            return
        await self._store.add_delivery(job_id, token_id, url, self._render(job).decode(),
                                       time.time())
        self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            try:
                now = time.time()
                for delivery in await self._store.due_deliveries(now, 4 * CONCURRENT):
                    if delivery.id in self._busy or len(self._busy) >= CONCURRENT:
                        continue
                    self._busy.add(delivery.id)
                    task = asyncio.create_task(self._attempt(delivery),
                                               name=f"webhook-{delivery.job_id}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                next_at = await self._store.next_delivery_at()
                # Nothing pending: sleep until a job finishes (job_finished wakes us).
                wait = None if next_at is None else min(1.0, max(0.05, next_at - time.time()))
            except Exception:
                log.exception("webhook deliveries: could not read the queue; will retry")
                wait = 5.0
            self._wake.clear()
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancel that
            # arrives as the event is set, and this loop would never stop.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=wait)
            finally:
                waiter.cancel()

    async def _attempt(self, delivery: Delivery) -> None:
        attempts = delivery.attempts + 1
        try:
            error = await self._send(delivery)
            now = time.time()
            if error is None:
                await self._store.end_delivery(delivery.id, "delivered", attempts, now)
                return
            backoff = min(MAX_BACKOFF, 2.0 ** (attempts - 1))
            if now + backoff > delivery.created_at + self._settings.callback_retry_seconds:
                log.warning("webhook for job %s to %s failed for good after %d attempt(s): %s",
                            delivery.job_id, delivery.url, attempts, error)
                await self._store.end_delivery(delivery.id, "failed", attempts, now, error)
            else:
                await self._store.retry_delivery(delivery.id, attempts, now + backoff, error)
        except Exception:
            log.exception("webhook for job %s: could not record the attempt", delivery.job_id)
        finally:
            self._busy.discard(delivery.id)
            self._wake.set()

    async def _send(self, delivery: Delivery) -> str | None:
        """One attempt; None when the receiver took it (2xx), else why not."""
        try:
            address = await resolve(delivery.url, self._settings.allow_private_callbacks)
        except CallbackRefused as exc:
            return f"refused: {exc}"
        secret = await self._store.callback_secret(delivery.token_id)
        if not secret:
            return "the token has no callback secret"
        body = delivery.payload.encode()
        scheme, host, port = _split(delivery.url)
        parts = urlsplit(delivery.url)
        # Connect to the checked address; the Host header and TLS SNI (and
        # certificate check) still name the URL's host.
        literal = f"[{address}]" if ":" in address else address
        target = parts._replace(netloc=f"{literal}:{port}").geturl()
        headers = {"Content-Type": "application/json", "Host": parts.netloc.rsplit("@", 1)[-1],
                   SIGNATURE_HEADER: sign(secret, int(time.time()), body),
                   "User-Agent": "pesto-webhooks"}
        assert self._client is not None
        try:
            # Streamed and never read: a receiver's answer body, however
            # large, is not loaded into the server's memory.
            async with self._client.stream(
                    "POST", target, content=body, headers=headers,
                    extensions={"sni_hostname": host} if scheme == "https" else {}) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"
