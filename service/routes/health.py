"""``/healthz`` and ``/metrics`` (open routes), and the gauges ``/metrics`` reads at scrape time."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import func, select

from service.routes.deps import RuntimeDep
from service.runtime import Runtime
from sync import cadence, store
from sync.queue import queue_depth

router = APIRouter(tags=["health"])


class _Collector(Collector):
    """Gauges read from the store at scrape time, and the connectors' call counts."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Any:
        with store.session_scope(self.runtime.db, readonly=True) as s:
            depth = queue_depth(s)
            parked = len(store.open_parked(s))
            watermarks = s.exec(select(store.Watermark)).all()
            overdue = cadence.overdue(s, self.runtime.settings.comms)
        yield GaugeMetricFamily(
            "itsm_sync_queue_depth", "incidents waiting to be reconciled", value=depth
        )
        yield GaugeMetricFamily("itsm_sync_parked", "(incident, target) pairs parked", value=parked)
        yield GaugeMetricFamily(
            "itsm_sync_incidents_update_overdue",
            "open incidents that owe an update by their severity's cadence",
            value=overdue,
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

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(runtime))
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
def healthz(runtime: RuntimeDep) -> Response:
    """200 when the database answers and the workers run (503 while ``itsm-sync run``'s worker
    process is starting, or died and is being replaced)."""
    with store.session_scope(runtime.db, readonly=True) as s:
        s.exec(select(func.count()).select_from(store.Link)).one()
    healthy, workers = runtime.health()
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unhealthy",
        "workers": workers,
        "mappings": runtime.mapping_problems or "ok",
    }
    if runtime.worker_process is not None:
        body["worker_pid"] = runtime.worker_process.ready_pid
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return PlainTextResponse(
        generate_latest(registry).decode(), media_type="text/plain; version=0.0.4"
    )
