"""Prometheus metrics of one app: counters the hot path bumps, gauges read at scrape time.

Each app has its own `CollectorRegistry` (tests run many apps in one
process; the global default registry would refuse the second). The hot
path pays a dict lookup and a counter increment per event: label children
are cached, and queue depth and slots are not tracked at all but read
from the scheduler and the sandbox when `/metrics` is scraped.

Metric names and labels are listed in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Seconds. Runs of interest span a hello world to the 30 s maximum.
_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Queue waits: zero when a slot is free; seconds to minutes under overload.
_WAIT_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)

# Routes the app does not know are one label value, so that scanners
# probing random paths cannot grow the label set without bound.
UNMATCHED = "unmatched"


class _Live(Collector):
    """Gauges computed when scraped: nothing to update on the hot path."""

    def __init__(self) -> None:
        self.read: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.read is None:
            return
        now = self.read()
        yield GaugeMetricFamily("pesto_queue_depth", "Jobs waiting for a slot",
                                value=now["queued"])
        yield GaugeMetricFamily("pesto_slots_busy", "Run slots running a job",
                                value=now["running"])
        yield GaugeMetricFamily("pesto_slots_ready", "Idle run slots ready to take a job",
                                value=now["ready"])
        yield GaugeMetricFamily("pesto_slots", "Run slots configured", value=now["workers"])


class Metrics:
    """The metrics of one Pesto app; `render()` is the body of GET /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter("pesto_jobs", "Jobs finished, by language, version and final status",
                            ["language", "version", "status"], registry=r)
        self.stage_seconds = Histogram(
            "pesto_stage_duration_seconds", "Wall-clock time of a compile or run stage",
            ["language", "stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.queue_wait = Histogram("pesto_queue_wait_seconds",
                                    "Time from submission to taking a run slot",
                                    buckets=_WAIT_BUCKETS, registry=r)
        self.sandbox_failures = Counter(
            "pesto_sandbox_failures", "Jobs failed because the sandbox itself failed "
            "(setting up a run, a slot dying), not the program", registry=r)
        self.responses = Counter("pesto_http_responses", "HTTP responses, by route and status",
                                 ["method", "route", "status"], registry=r)
        self.refusals = Counter("pesto_token_refusals",
                                "Requests refused for a token limit, by kind and token name",
                                ["kind", "token"], registry=r)
        self._live = _Live()
        r.register(self._live)
        # Label values -> child metric: `labels()` validates, locks and builds
        # a tuple each time; a dict hit is cheaper on every response and job.
        self._children: dict[tuple[Any, ...], Any] = {}

    def watch(self, read: Callable[[], dict[str, int]]) -> None:
        """Read queue and slot gauges from `read()` at scrape time (keys: queued,
        running, ready, workers)."""
        self._live.read = read

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- events ----------------------------------------------------------------

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def response(self, method: str, route: str, status: int) -> None:
        self._child(self.responses, method, route, str(status)).inc()

    def job_finished(self, language: str, version: str, status: str, queue_wait: float | None,
                     stages: tuple[tuple[str, int], ...] = ()) -> None:
        """One finished job; `stages` are (name, wall ms) of the stages that ran."""
        self._child(self.jobs, language, version, status).inc()
        if queue_wait is not None:
            self.queue_wait.observe(max(0.0, queue_wait))
        for stage, wall_ms in stages:
            self._child(self.stage_seconds, language, stage).observe(wall_ms / 1000)

    def refused(self, kind: str, token: str) -> None:
        self.refusals.labels(kind, token).inc()
