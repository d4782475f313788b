"""The HTTP service: webhooks, health, metrics, and the JSON API (bearer tokens with roles).

Webhooks, ``/healthz`` and ``/metrics`` are open (webhooks prove themselves with their
signature or secret); every other route needs ``Authorization: Bearer <token>`` for a token
configured with a role that the route allows.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field
from sqlmodel import func, select

from mapping.model import Incident
from postmortem_tracker.report import audit_rows, to_csv, to_dicts
from service.runtime import Runtime
from sync import store
from sync.ingest import ingest_webhook
from sync.queue import incident_key, mark_dirty, queue_depth

log = logging.getLogger("itsm_sync.http")
Role = Literal["viewer", "change-manager", "admin"]
RANK: dict[str, int] = {"viewer": 0, "change-manager": 1, "admin": 2}


class _Collector(Collector):
    """Gauges read from the store at scrape time, and the connectors' call counts."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Any:
        with store.session_scope(self.runtime.db, readonly=True) as s:
            depth = queue_depth(s)
            parked = len(store.open_parked(s))
            watermarks = s.exec(select(store.Watermark)).all()
        yield GaugeMetricFamily(
            "itsm_sync_queue_depth", "incidents waiting to be reconciled", value=depth
        )
        yield GaugeMetricFamily("itsm_sync_parked", "(incident, target) pairs parked", value=parked)
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


class OverrideBody(BaseModel):
    reason: str = Field(min_length=3, max_length=2000)


class ActionBody(BaseModel):
    title: str = Field(min_length=1, max_length=160)
    owner: str = ""
    due: dt.date | None = None
    description: str = ""


class PublicBody(BaseModel):
    message: str = Field(min_length=1, max_length=25000)
    public: bool = True


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="itsm-sync", docs_url="/api/docs", openapi_url="/api/openapi.json")
    registry = CollectorRegistry()
    registry.register(_Collector(runtime))
    webhooks_total = Counter(
        "itsm_sync_webhooks",
        "webhook deliveries by answer",
        ["system", "status"],
        registry=registry,
    )
    tokens = [
        (t.token.get_secret_value().encode(), t.role, t.name) for t in runtime.settings.api_tokens
    ]

    def role_at_least(minimum: Role) -> Callable[[Request], str]:
        def check(request: Request) -> str:
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given:
                raise HTTPException(
                    401, "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
                )
            for secret, role, name in tokens:
                if hmac.compare_digest(secret, given.encode()):
                    if RANK[role] < RANK[minimum]:
                        raise HTTPException(
                            403, f"this route needs the {minimum} role; the token has {role}"
                        )
                    request.state.actor = f"token:{name}"
                    return name
            raise HTTPException(401, "unknown token", {"WWW-Authenticate": "Bearer"})

        return check

    viewer = Depends(role_at_least("viewer"))
    admin = Depends(role_at_least("admin"))

    app.add_middleware(RequestId)

    # -- open routes ----------------------------------------------------------------------

    async def _webhook(system: str, instance: str, request: Request) -> Response:
        connector = runtime.connectors.get((system, instance))
        if connector is None:
            return JSONResponse({"error": f"no {system}/{instance} configured"}, status_code=404)
        body = await request.body()
        # On the event loop's own thread: no thread hand-off to pay, and one delivery at a
        # time is what the database takes anyway on SQLite. (Measured: a pool of threads
        # made each delivery cost ~40 % more CPU on PostgreSQL, the GIL passing back and forth,
        # and the answers no faster.) The workers run in their own process (run's default).
        ack = ingest_webhook(
            runtime.db, connector, dict(request.headers), body, dict(request.query_params),
            coalesce=runtime.settings.sync.coalesce_seconds,
        )  # fmt: skip
        webhooks_total.labels(system, str(ack.status)).inc()
        log.info(
            "webhook %s/%s: %s %s", system, instance, ack.status, ack.message,
            extra={"request_id": request.state.request_id, "delivery_id": ack.delivery_id},
        )  # fmt: skip
        return JSONResponse(
            {"status": ack.message, "delivery": ack.delivery_id}, status_code=ack.status
        )

    @app.post("/webhooks/{system}")
    async def webhook(system: str, request: Request) -> Response:
        return await _webhook(system, "default", request)

    @app.post("/webhooks/{system}/{instance}")
    async def webhook_instance(system: str, instance: str, request: Request) -> Response:
        return await _webhook(system, instance, request)

    @app.get("/healthz")
    def healthz() -> Response:
        """200 when the database answers and the workers run (503 while ``itsm-sync run``'s
        worker process is starting, or died and is being replaced)."""
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

    @app.get("/metrics")
    def metrics() -> Response:
        return PlainTextResponse(
            generate_latest(registry).decode(), media_type="text/plain; version=0.0.4"
        )

    # -- the API --------------------------------------------------------------------------

    @app.get("/api/status", dependencies=[viewer])
    def status() -> dict[str, Any]:
        with store.session_scope(runtime.db, readonly=True) as s:
            links = s.exec(
                select(store.Link.system, func.count()).group_by(store.Link.system)
            ).all()
            watermarks = s.exec(select(store.Watermark)).all()
            return {
                "queue_depth": queue_depth(s),
                "parked": len(store.open_parked(s)),
                "links": {system: n for system, n in links},
                "watermarks": {
                    f"{w.system}/{w.instance}/{w.object_type}": w.value.isoformat()
                    if w.value
                    else None
                    for w in watermarks
                },
                "mappings": runtime.mapping_problems or "ok",
            }

    @app.get("/api/incidents/{incident_id}", dependencies=[viewer])
    def incident(incident_id: str) -> dict[str, Any]:
        with store.session_scope(runtime.db, readonly=True) as s:
            row = _find_incident(s, incident_id)
            links = store.links_of(s, row.id)
            return {
                "incident": row.data,
                "links": [
                    {"system": link.system, "instance": link.instance, "key": link.remote_key,
                     "id": link.remote_id, "url": link.url}
                    for link in links
                ],
            }  # fmt: skip

    @app.get("/api/incidents/{incident_id}/history", dependencies=[viewer])
    def incident_history(incident_id: str) -> list[dict[str, Any]]:
        with store.session_scope(runtime.db, readonly=True) as s:
            row = _find_incident(s, incident_id)
            return [entry.model_dump(mode="json") for entry in store.history(s, row.id)]

    @app.post("/api/incidents/{incident_id}/public", dependencies=[admin])
    def publish(incident_id: str, body: PublicBody, request: Request) -> dict[str, Any]:
        """Comms approves what customers read: the public flag and the public message."""
        with store.session_scope(runtime.db) as s:
            row = _find_incident(s, incident_id)
            current = Incident.model_validate(row.data)
            updated = current.model_copy(
                update={"public": body.public, "public_message": body.message}
            )
            store.save_incident(s, row, updated.model_dump(mode="json"))
            store.audit(
                s, action="update", incident_id=row.id, field="public_message",
                before=current.public_message, after=body.message, actor=request.state.actor,
                reason="public status approved" if body.public else "made private",
            )  # fmt: skip
            mark_dirty(s, incident_key(row.id), reason="public message")
            return {"incident": row.id, "public": body.public}

    @app.get("/api/parked", dependencies=[viewer])
    def parked() -> list[dict[str, Any]]:
        with store.session_scope(runtime.db, readonly=True) as s:
            return [p.model_dump(mode="json") for p in store.open_parked(s)]

    @app.post("/api/parked/{parked_id}/replay", dependencies=[admin])
    def replay(parked_id: int, request: Request) -> dict[str, Any]:
        with store.session_scope(runtime.db) as s:
            item = store.get_parked(s, parked_id)
            if item is None or item.resolved_at is not None:
                raise HTTPException(404, f"no open parked item {parked_id}")
            _replay(s, item, request.state.actor)
            return {"replayed": [parked_id]}

    @app.post("/api/parked/replay-all", dependencies=[admin])
    def replay_all(request: Request) -> dict[str, Any]:
        with store.session_scope(runtime.db) as s:
            items = store.open_parked(s)
            for item in items:
                _replay(s, item, request.state.actor)
            return {"replayed": [item.id for item in items]}

    change_manager = Depends(role_at_least("change-manager"))

    @app.get("/api/audit", dependencies=[change_manager])
    def audit_report(
        request: Request,
        since: str | None = None,
        until: str | None = None,
        team: str | None = None,
        overdue: bool = False,
        format: str = "json",
    ) -> Response:
        """Every action item with its change request; ``?format=csv`` for a spreadsheet."""
        try:
            start = dt.date.fromisoformat(since) if since else None
            end = dt.date.fromisoformat(until) if until else None
        except ValueError as exc:
            raise HTTPException(422, f"dates are YYYY-MM-DD: {exc}") from exc
        rows = audit_rows(runtime.db, since=start, until=end, team=team, overdue_only=overdue)
        if format == "csv":
            return Response(
                to_csv(rows), media_type="text/csv",
                headers={"Content-Disposition": 'attachment; filename="itsm-sync-audit.csv"'},
            )  # fmt: skip
        return JSONResponse(to_dicts(rows))

    @app.get("/api/incidents/{incident_id}/gate", dependencies=[viewer])
    def gate_state(incident_id: str) -> dict[str, Any]:
        with store.session_scope(runtime.db, readonly=True) as s:
            row = _find_incident(s, incident_id)
        state = runtime.tracker.gate(Incident.model_validate({**row.data, "id": row.id}))
        return {"can_close": state.open, "missing": state.missing, "why": state.explain()}

    @app.post("/api/incidents/{incident_id}/gate/override", dependencies=[change_manager])
    def gate_override(incident_id: str, body: OverrideBody, request: Request) -> dict[str, Any]:
        with store.session_scope(runtime.db, readonly=True) as s:
            row = _find_incident(s, incident_id)
        runtime.tracker.override(row.id, reason=body.reason, actor=request.state.actor)
        with store.session_scope(runtime.db) as s:
            mark_dirty(s, incident_key(row.id), reason="gate override")
        return {"incident": row.id, "overridden": True}

    @app.post("/api/incidents/{incident_id}/actions", dependencies=[change_manager])
    def add_action(incident_id: str, body: ActionBody, request: Request) -> dict[str, Any]:
        with store.session_scope(runtime.db, readonly=True) as s:
            row = _find_incident(s, incident_id)
        item = runtime.tracker.add_action(
            row.id, title=body.title, owner=body.owner, due=body.due,
            description=body.description, source=f"api:{request.state.actor}",
        )  # fmt: skip
        with store.session_scope(runtime.db) as s:
            mark_dirty(s, incident_key(row.id), reason="action item added")
        return {"key": item.key, "title": item.title}

    app.state.runtime = runtime
    app.state.role_at_least = role_at_least
    return app


class RequestId:
    """ASGI middleware: ``request.state.request_id`` from ``X-Request-Id`` (or a new one), and
    the same header on the answer. Plain ASGI rather than ``@app.middleware("http")``, whose
    per-request task and stream plumbing cost more than the rest of a webhook's HTTP handling.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                break
        rid = rid or uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _replay(s: Any, item: store.Parked, actor: str) -> None:
    store.resolve_parked(s, item.id or 0)
    store.audit(
        s, action="replay", incident_id=item.incident_id, system=item.target.split(":")[0],
        actor=actor, reason=f"replayed from the newest state: {item.error}",
    )  # fmt: skip
    mark_dirty(s, incident_key(item.incident_id), reason="replay")


def _find_incident(s: Any, ident: str) -> store.IncidentRow:
    row = store.find_incident(s, ident)
    if row is None:
        raise HTTPException(404, f"no incident {ident}")
    return row
