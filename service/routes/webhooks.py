"""``POST /webhooks/{system}[/{instance}]``: verify, store durably, answer at once.

Open routes: a delivery proves itself with its signature or secret (the connector checks it).
What an unauthenticated caller can cost is bounded (``intake`` settings): per source address
and route a token bucket for every delivery and a much smaller one for refused deliveries
(bad signature, malformed); beyond either the answer is 429 with ``Retry-After``, before the
body is read. What is kept of refused deliveries is capped in the store (:mod:`sync.ingest`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from config.settings import IntakeSettings
from connectors.http import KeyedBuckets
from service.runtime import Runtime
from sync.ingest import MAX_BODY, RejectedLimits, ingest_webhook

log = logging.getLogger("itsm_sync.http")
router = APIRouter(tags=["webhooks"])


class Intake:
    """The webhook routes' rate limits, per (source address, route)."""

    def __init__(
        self, settings: IntakeSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.requests = KeyedBuckets(settings.requests_per_second, settings.burst, clock=clock)
        self.rejections = KeyedBuckets(
            settings.rejections_per_minute / 60.0, settings.rejection_burst, clock=clock
        )
        self.forwarded_for = settings.forwarded_for
        self.limits = RejectedLimits(
            keep=settings.rejected_keep,
            max_bytes=settings.rejected_max_bytes,
            body_bytes=settings.rejected_body_bytes,
        )

    def source(self, request: Request) -> str:
        """The caller's address: the peer's, or (``intake.forwarded_for``) the one the proxy
        appended to ``X-Forwarded-For`` (the last: what a client sends itself comes before)."""
        if self.forwarded_for:
            forwarded = request.headers.get("x-forwarded-for", "")
            last = forwarded.rsplit(",", 1)[-1].strip()
            if last:
                return last
        return request.client.host if request.client else "-"

    def admit(self, key: str) -> float:
        """0.0: go ahead (one request counted); else the seconds to wait (429)."""
        wait = self.rejections.get(key).try_acquire(take=False)
        if wait > 0:
            return wait
        return self.requests.get(key).try_acquire()

    def refused(self, key: str) -> None:
        """A delivery from ``key`` was refused: it counts against the source's rejections."""
        self.rejections.get(key).try_acquire()


async def _webhook(system: str, instance: str, request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    connector = runtime.connectors.get((system, instance))
    if connector is None:
        return JSONResponse({"error": f"no {system}/{instance} configured"}, status_code=404)
    if not getattr(getattr(connector, "settings", None), "webhooks", True):
        return JSONResponse({"error": f"webhooks of {system}/{instance} are off"}, status_code=404)
    intake: Intake = request.app.state.intake
    metrics = request.app.state.metrics
    source = f"{intake.source(request)} {system}/{instance}"
    wait = intake.admit(source)
    if wait > 0:
        metrics.webhooks.labels(system, "429").inc()
        return JSONResponse(
            {"error": "too many requests from this address"},
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:  # not even read
        intake.refused(source)
        metrics.rejected.labels(system).inc()
        metrics.webhooks.labels(system, "413").inc()
        return JSONResponse({"error": f"body over {MAX_BODY} bytes"}, status_code=413)
    body = await request.body()
    # On the event loop's own thread: no thread hand-off to pay, and one delivery at a time is
    # what the database takes anyway on SQLite. (Measured: a pool of threads made each delivery
    # cost ~40 % more CPU on PostgreSQL, the GIL passing back and forth, and the answers no
    # faster.) The workers run in their own process (run's default).
    ack = ingest_webhook(
        runtime.db, connector, dict(request.headers), body, dict(request.query_params),
        coalesce=runtime.settings.sync.coalesce_seconds, limits=intake.limits,
    )  # fmt: skip
    if ack.rejected:
        intake.refused(source)
        metrics.rejected.labels(system).inc()
        if ack.dropped:
            metrics.rejected_dropped.inc(ack.dropped)
    metrics.webhooks.labels(system, str(ack.status)).inc()
    log.info(
        "webhook %s/%s: %s %s", system, instance, ack.status, ack.message,
        extra={"request_id": request.state.request_id, "delivery_id": ack.delivery_id},
    )  # fmt: skip
    return JSONResponse(
        {"status": ack.message, "delivery": ack.delivery_id}, status_code=ack.status
    )


@router.post("/webhooks/{system}")
async def webhook(system: str, request: Request) -> Response:
    return await _webhook(system, "default", request)


@router.post("/webhooks/{system}/{instance}")
async def webhook_instance(system: str, instance: str, request: Request) -> Response:
    return await _webhook(system, instance, request)
