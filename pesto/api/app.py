"""`create_app(settings)`: the Litestar app whose lifespan owns engine, store and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

import pesto
from pesto.api.auth import hash_token
from pesto.api.errors import handle_exception
from pesto.api.front import ROUTES as FRONT_ROUTES
from pesto.api.observe import metrics_endpoint, response_counter
from pesto.api.options import options_handlers
from pesto.api.piston import ROUTES as PISTON_ROUTES
from pesto.api.routes import PUBLIC_ROUTES, Services, job_body, token_router
from pesto.api.schema import WireSchemaPlugin
from pesto.config import Settings
from pesto.limits import RateWindow, Rates
from pesto.metrics import Metrics
from pesto.models import ExecuteRequest
from pesto.scheduler import Scheduler
from pesto.stores import StoreAPI, open_store
from pesto.webhooks import Deliverer
from pesto.validation import limits_text, validate_request

log = logging.getLogger("pesto.api")

PURGE_INTERVAL = 3600.0


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _purge_forever(store: StoreAPI, retention_days: float) -> None:
    """Delete finished jobs older than the retention period, now and every hour."""
    while True:
        try:
            cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=retention_days)
            gone = await store.purge_finished(_iso(cutoff))
            if gone:
                log.info("purged %d job(s) finished before %s", gone, _iso(cutoff))
            await store.purge_deliveries(cutoff.timestamp())
        except Exception:
            log.exception("purging old jobs failed; will retry")
        await asyncio.sleep(PURGE_INTERVAL)


def create_app(settings: Settings) -> Litestar:
    """The HTTP service of API.md for these settings (not started until its lifespan runs)."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        from pesto.engine import Engine    # imported late: it probes the kernel

        # The engine first: it starts its spawner before the store brings threads.
        engine = await Engine.start(settings)
        try:
            store = await open_store(settings)
            if settings.admin_token:
                # PESTO_ADMIN_TOKEN: a first token without `pesto token create`.
                if await store.ensure_token("admin", hash_token(settings.admin_token)):
                    log.info("token 'admin' created from PESTO_ADMIN_TOKEN")
        except BaseException:
            await engine.close()
            raise
        rates: Rates = RateWindow()

        def read_request(payload: Any) -> ExecuteRequest:
            return validate_request(payload, settings, engine.registry)
        if getattr(store, "cluster", False):
            # PostgreSQL: the queue and the rate windows are shared (pesto/cluster.py).
            from pesto.cluster import ClusterScheduler
            scheduler: Scheduler = ClusterScheduler(
                engine, store, workers=settings.workers, queue_size=settings.queue_size,
                shutdown_timeout=settings.shutdown_timeout, metrics=metrics,
                node_name=settings.node_name, lease=settings.node_lease,
                read_request=read_request)
            rates = store                   # PgStore.rate_hit: one window for every node
        else:
            scheduler = Scheduler(engine, store, workers=settings.workers,
                                  queue_size=settings.queue_size,
                                  shutdown_timeout=settings.shutdown_timeout, metrics=metrics,
                                  read_request=read_request)
        metrics.watch(lambda: {**scheduler.stats(), "ready": engine.sandbox.idle_slots})
        runtimes = msgspec.json.encode({"runtime": [
            {"language": r.language, "version": r.version, "aliases": list(r.spec.aliases),
             "compiled": r.compiled} for r in engine.registry.installed]})
        app.state.pesto = Services(settings=settings, engine=engine, store=store,
                                   scheduler=scheduler, rates=rates, runtimes=runtimes,
                                   metrics=metrics)
        deliverer = Deliverer(store, settings, job_body)
        scheduler.on_finish = deliverer.job_finished
        deliverer.start()
        purge = asyncio.create_task(_purge_forever(store, settings.retention_days),
                                    name="purge-old-jobs")
        try:
            await scheduler.recover()
            log.info("serving with %d worker(s), queue of %d, data in %s",
                     scheduler.workers, scheduler.queue_size, store.path)
            yield
        finally:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
            try:
                await scheduler.close()
                await deliverer.close()
            finally:
                await store.close()
                await engine.close()

    # The routes under /api that need a token are in `token_router()`;
    # of the others, Piston's execute route declares its own authentication,
    # /metrics checks its own token, and the rest are public.
    public = [*PUBLIC_ROUTES, *PISTON_ROUTES, *FRONT_ROUTES, metrics_endpoint]
    return Litestar(
        route_handlers=[*options_handlers(public), token_router(), *public],
        lifespan=[lifespan],
        before_send=[response_counter(metrics)],
        exception_handlers={Exception: handle_exception},
        plugins=[WireSchemaPlugin()],     # the document of the wire model
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Pesto", version=pesto.__version__,
            # The configurable maxima, from these settings: the request shapes
            # (pesto.models) state none, so the document never states a wrong one.
            description="Self-hosted remote code execution engine.\n\n" + limits_text(settings),
            components=Components(security_schemes={"token": SecurityScheme(
                type="apiKey", name="X-Pesto-Token", security_scheme_in="header",
                description="created with `pesto token create --name NAME`"),
                # The Piston routes also take the token as Piston's public instance does.
                "authorization": SecurityScheme(
                    type="apiKey", name="Authorization", security_scheme_in="header",
                    description="the same token, for /api/v2 (Piston) routes")})),
        debug=False,
        logging_config=None,   # logging is the CLI's business (pesto serve)
    )
