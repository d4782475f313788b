"""``/api/status`` and ``/api/incidents/...``: what the sync holds, and the public message."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.domain import incidents
from service.routes.deps import Operator, Publisher, Reader, ReadSession, RuntimeDep

router = APIRouter(prefix="/api", tags=["incidents"])


class LinkBody(BaseModel):
    first: str = Field(min_length=1, max_length=200)
    second: str = Field(min_length=1, max_length=200)


class PublicBody(BaseModel):
    message: str = Field(default="", max_length=incidents.MAX_PUBLIC_MESSAGE)
    public: bool = True
    # Publish although it is below what the status page shows: why (audited).
    force: str = Field(default="", max_length=2000)


@router.get("/status")
def status(s: ReadSession, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    overdue, age = runtime.overdue.read()  # counted in the background, at most 30 s old
    out = incidents.status(
        s,
        mapping_problems=runtime.mapping_problems,
        comms=runtime.settings.comms,
        overdue=overdue,
        counted=True,
    )
    out["updates_overdue_age_seconds"] = age
    return out


@router.get("/incidents/{incident_id}")
def incident(incident_id: str, s: ReadSession, runtime: RuntimeDep, _: Reader) -> dict[str, Any]:
    return incidents.detail(s, ident=incident_id, comms=runtime.settings.comms)


@router.get("/incidents/{incident_id}/history")
def incident_history(incident_id: str, s: ReadSession, _: Reader) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = incidents.history(s, ident=incident_id)["entries"]
    return entries


@router.post("/incidents/{incident_id}/public")
def publish(
    incident_id: str, body: PublicBody, runtime: RuntimeDep, actor: Publisher
) -> dict[str, Any]:
    """Comms approves what customers read: the public flag and the public message."""
    return incidents.set_public(
        runtime.db, ident=incident_id, message=body.message, public=body.public, actor=actor,
        mappings=runtime.mappings, force=body.force,
    )  # fmt: skip


@router.post("/links")
def link(body: LinkBody, runtime: RuntimeDep, actor: Operator) -> dict[str, Any]:
    """Link an existing pair (INC0010001 and OPS-12) as one incident."""
    return incidents.link(runtime.reconciler, first=body.first, second=body.second, actor=actor)
