"""The HTTP service: webhooks, health, metrics, and the JSON API (bearer tokens with roles).

Webhooks, ``/healthz``, ``/readyz`` and ``/metrics`` are open (webhooks prove themselves with their
signature or secret); every other route needs ``Authorization: Bearer <token>`` for a token
whose role grants what the route does (:mod:`service.domain.roles`). The routes live in one
router per domain (:mod:`service.routes`) and call the service layer (:mod:`service.domain`);
this module only assembles them. The web console (:mod:`service.routes.console`) is served at
``/`` with its own sign-in (a token exchanged for a session cookie).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.domain.errors import ServiceError
from service.readiness import Readiness
from service.routes import console, health, incidents, parked, postmortems, webhooks
from service.routes.deps import token_table
from service.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="itsm-sync", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.runtime = runtime
    app.state.started = time.monotonic()  # /healthz's uptime
    app.state.tokens = token_table(runtime)
    app.state.readiness = Readiness(runtime)
    app.state.metrics = health.Metrics(runtime, app.state.readiness)
    app.state.intake = webhooks.Intake(runtime.settings.intake)
    app.add_middleware(RequestId)
    app.add_exception_handler(ServiceError, _service_error)
    for router in (webhooks.router, health.router, incidents.router, parked.router):
        app.include_router(router)
    app.include_router(postmortems.router)
    console.install(app)
    return app


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    body: dict[str, Any] = {"detail": exc.message}
    if exc.field:
        body["field"] = exc.field
    return JSONResponse(body, status_code=exc.status)


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
