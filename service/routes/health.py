"""``/healthz``, ``/readyz`` and ``/metrics`` (open routes), and the gauges ``/metrics`` reads at
scrape time."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import select

from service.domain import health as health_data
from service.readiness import Readiness
from service.runtime import Runtime
from sync import store
from sync.queue import queue_depth

router = APIRouter(tags=["health"])


class _Collector(Collector):
    """Gauges read from the store at scrape time, and the connectors' call counts."""

    def __init__(self, runtime: Runtime, readiness: Readiness | None = None) -> None:
        self.runtime = runtime
        self.readiness = readiness

    def collect(self) -> Any:
        with store.session_scope(self.runtime.db, readonly=True) as s:
            depth = queue_depth(s)
            watermarks = s.exec(select(store.Watermark)).all()
            stuck = health_data.stuck(s)
        parked = stuck["parked"]
        yield GaugeMetricFamily(
            "itsm_sync_oldest_change_age_seconds",
            "how long the oldest due, unprocessed change has waited",
            value=stuck["oldest_change_age_seconds"],
        )
        yield GaugeMetricFamily(
            "itsm_sync_failing_changes",
            "queued changes whose last reconcile failed (retried with backoff)",
            value=stuck["failing"],
        )
        backoff = GaugeMetricFamily(
            "itsm_sync_target_backoff_incidents",
            "incidents waiting to retry a target",
            labels=["target"],
        )
        backoff_wait = GaugeMetricFamily(
            "itsm_sync_target_backoff_seconds",
            "longest wait before a target is tried again",
            labels=["target"],
        )
        for target, info in stuck["backoff"].items():
            backoff.add_metric([target], info["incidents"])
            backoff_wait.add_metric([target], info["max_wait_seconds"])
        yield backoff
        yield backoff_wait
        yield CounterMetricFamily(
            "itsm_sync_gate_blocks",
            "closes the postmortem gate refused",
            value=stuck["gate_blocks"],
        )
        yield GaugeMetricFamily(
            "itsm_sync_queue_depth", "incidents waiting to be reconciled", value=depth
        )
        yield GaugeMetricFamily("itsm_sync_parked", "(incident, target) pairs parked", value=parked)
        if self.readiness is not None:
            ready, report = self.readiness.report()  # remote sign-ins: cached, not per scrape
            yield GaugeMetricFamily("itsm_sync_ready", "1 when /readyz says ready", value=ready)
            checks = GaugeMetricFamily(
                "itsm_sync_check_ok", "1 when this /readyz check passes", labels=["check"]
            )
            for name, check in report["checks"].items():
                checks.add_metric([name], 1 if check["ok"] else 0)
            yield checks
        overdue, age = self.runtime.overdue.read()  # counted in the background, not per scrape
        if overdue is not None and age is not None:
            yield GaugeMetricFamily(
                "itsm_sync_incidents_update_overdue",
                "open incidents that owe an update by their severity's cadence",
                value=overdue,
            )
            yield GaugeMetricFamily(
                "itsm_sync_incidents_update_overdue_age_seconds",
                "how long ago itsm_sync_incidents_update_overdue was counted",
                value=age,
            )
        lag = GaugeMetricFamily(
            "itsm_sync_poll_lag_seconds",  # since the last poll stored something
            "age of the poll watermark",
            labels=["system", "object_type"],
        )
        now = time.time()
        for w in watermarks:
            if w.value is not None:
                lag.add_metric(
                    [f"{w.system}/{w.instance}", w.object_type], now - w.updated_at.timestamp()
                )
        yield lag
        # This process's and the worker process's (it makes most remote calls) together.
        stats = self.runtime.stats()
        yield GaugeMetricFamily(
            "itsm_sync_conflicts", "conflicts resolved by policy", value=stats["conflicts"]
        )
        waits = CounterMetricFamily(
            "itsm_sync_rate_limit_wait_seconds",
            "seconds remote calls waited for a rate budget (ours or a Retry-After)",
            labels=["system"],
        )
        for system, seconds in stats.get("rate_waits", {}).items():
            waits.add_metric([system], seconds)
        yield waits
        calls = CounterMetricFamily(
            "itsm_sync_api_calls", "remote API calls", labels=["system", "method", "status"]
        )
        for (system, method, status), n in stats["calls"].items():
            calls.add_metric([system, method, status], n)
        yield calls
        if self.runtime.worker_process is not None:
            healthy, _ = self.runtime.health()
            yield GaugeMetricFamily(
                "itsm_sync_worker_process_up",
                "1 while the worker process runs and answers",
                value=1 if healthy and stats["worker_process"] else 0,
            )
            yield CounterMetricFamily(
                "itsm_sync_worker_process_restarts",
                "worker processes that died and were replaced",
                value=self.runtime.worker_process.deaths,
            )


class Metrics:
    """One registry per app: the store's gauges, and counters the routes add to."""

    def __init__(self, runtime: Runtime, readiness: Readiness | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(runtime, readiness))
        self.webhooks = Counter(
            "itsm_sync_webhooks",
            "webhook deliveries by answer",
            ["system", "status"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "itsm_sync_rejected_deliveries",
            "webhook deliveries refused (bad signature or secret, malformed, too big)",
            ["system"],
            registry=self.registry,
        )
        self.rejected_dropped = Counter(
            "itsm_sync_rejected_deliveries_dropped",
            "refused deliveries dropped from the store to keep within intake.rejected_* caps",
            registry=self.registry,
        )


@router.get("/healthz")
def healthz(request: Request) -> Response:
    """Liveness: 200 while this process answers; reads nothing (not the database, not the
    workers), so a restart is never the answer to a database or a remote system being down.
    Whether the service can do its work is ``/readyz``."""
    return JSONResponse(
        {
            "status": "ok",
            "checks": {
                "process": {
                    "ok": True,
                    "pid": os.getpid(),
                    "uptime_seconds": round(time.monotonic() - request.app.state.started, 1),
                }
            },
        }
    )


@router.get("/readyz")
def readyz(request: Request) -> Response:
    """200 when ready (database, each system's sign-in, workers, queue age), else 503; the
    JSON body has each check and the warnings (failing changes, backoff, parked)."""
    ready, body = request.app.state.readiness.report()
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return PlainTextResponse(
        generate_latest(registry).decode(), media_type="text/plain; version=0.0.4"
    )
