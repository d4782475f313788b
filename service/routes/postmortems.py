"""Postmortem routes: action items, the gate and overrides, the change manager's audit."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from postmortem_tracker.report import to_csv, to_dicts
from service.domain import postmortems
from service.routes.deps import ChangeManager, Reader, TrackerDep

router = APIRouter(prefix="/api", tags=["postmortems"])


class OverrideBody(BaseModel):
    reason: str = Field(min_length=3, max_length=2000)


class ActionBody(BaseModel):
    title: str = Field(min_length=1, max_length=postmortems.MAX_TITLE)
    owner: str = ""
    due: dt.date | None = None
    description: str = ""
    # Makes the add idempotent (else the title does): a retry with it returns the first item.
    key: str = Field(default="", max_length=postmortems.MAX_KEY)


@router.get("/incidents/{incident_id}/gate")
def gate_state(incident_id: str, tracker: TrackerDep, _: Reader) -> dict[str, Any]:
    return postmortems.gate(tracker, ident=incident_id)


@router.get("/incidents/{incident_id}/postmortem")
def postmortem(incident_id: str, tracker: TrackerDep, _: Reader) -> dict[str, Any]:
    return postmortems.show(tracker, ident=incident_id)


@router.post("/incidents/{incident_id}/gate/override")
def gate_override(
    incident_id: str, body: OverrideBody, tracker: TrackerDep, actor: ChangeManager
) -> dict[str, Any]:
    return postmortems.override(tracker, ident=incident_id, reason=body.reason, actor=actor)


@router.post("/incidents/{incident_id}/gate/override/revoke")
def gate_override_revoke(
    incident_id: str, body: OverrideBody, tracker: TrackerDep, actor: ChangeManager
) -> dict[str, Any]:
    """Take back the override in force; the gate is armed again (audited)."""
    return postmortems.revoke_override(tracker, ident=incident_id, reason=body.reason, actor=actor)


@router.post("/incidents/{incident_id}/actions")
def add_action(
    incident_id: str,
    body: ActionBody,
    tracker: TrackerDep,
    actor: ChangeManager,
    idempotency_key: Annotated[str, Header(max_length=postmortems.MAX_KEY)] = "",
) -> dict[str, Any]:
    """Add an action item (``created`` false: it existed, with the same key or title)."""
    return postmortems.add_action(
        tracker, ident=incident_id, title=body.title, owner=body.owner, due=body.due,
        description=body.description, actor=actor, source=f"api:{actor.label}",
        key=body.key or idempotency_key,
    )  # fmt: skip


class EditBody(BaseModel):
    """Only the fields given change; ``"due": null`` clears the due date."""

    title: str | None = Field(default=None, min_length=1, max_length=postmortems.MAX_TITLE)
    owner: str | None = None
    due: dt.date | None = None


class WithdrawBody(BaseModel):
    reason: str = Field(min_length=3, max_length=2000)


@router.patch("/incidents/{incident_id}/actions/{item}")
def edit_action(
    incident_id: str, item: str, body: EditBody, tracker: TrackerDep, actor: ChangeManager
) -> dict[str, Any]:
    """Edit an action item's title, owner or due date; its change request follows."""
    due: Any = body.due if "due" in body.model_fields_set else postmortems.UNSET
    return postmortems.edit_action(
        tracker, ident=incident_id, item=item, title=body.title, owner=body.owner, due=due,
        actor=actor,
    )  # fmt: skip


@router.post("/incidents/{incident_id}/actions/{item}/withdraw")
def withdraw_action(
    incident_id: str, item: str, body: WithdrawBody, tracker: TrackerDep, actor: ChangeManager
) -> dict[str, Any]:
    """Withdraw an action item with a reason: it no longer blocks the gate (audited)."""
    return postmortems.withdraw_action(
        tracker, ident=incident_id, item=item, reason=body.reason, actor=actor
    )


@router.get("/audit")
def audit_report(
    tracker: TrackerDep,
    actor: ChangeManager,
    since: str | None = None,
    until: str | None = None,
    team: str | None = None,
    overdue: bool = False,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Every action item with its change request; ``?format=csv`` for a spreadsheet."""
    rows = postmortems.audit(
        tracker,
        since=postmortems.parse_date(since, field="since"),
        until=postmortems.parse_date(until, field="until"),
        team=team, overdue_only=overdue, actor=actor,
    )  # fmt: skip
    if format == "csv":
        return Response(
            to_csv(rows), media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="itsm-sync-audit.csv"'},
        )  # fmt: skip
    return JSONResponse(to_dicts(rows))


@router.get("/audit.csv")
def audit_csv(
    tracker: TrackerDep,
    actor: ChangeManager,
    since: str | None = None,
    until: str | None = None,
    team: str | None = None,
    overdue: bool = False,
) -> Response:
    """The audit as a spreadsheet: one row per action item (GET /api/audit's rows)."""
    text = postmortems.audit_csv(
        tracker,
        since=postmortems.parse_date(since, field="since"),
        until=postmortems.parse_date(until, field="until"),
        team=team, overdue_only=overdue, actor=actor,
    )  # fmt: skip
    return Response(
        text, media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="itsm-sync-audit.csv"'},
    )  # fmt: skip


@router.get("/kpis")
def kpis(
    tracker: TrackerDep,
    actor: ChangeManager,
    since: str | None = None,
    until: str | None = None,
    group_by: str = "severity",
) -> list[dict[str, Any]]:
    """Per severity (the highest ever) or team: items created, on time, overdue, median days
    to change request, overrides, incidents that ended with open items."""
    return postmortems.kpis(
        tracker,
        since=postmortems.parse_date(since, field="since"),
        until=postmortems.parse_date(until, field="until"),
        group_by=group_by, actor=actor,
    )  # fmt: skip
