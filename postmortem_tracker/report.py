"""The change manager's audit: incident -> postmortem -> action item -> change request, and KPIs.

Pure reads of the store; the CLI prints them as a table, JSON or CSV, and ``GET /api/audit``
serves the same rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from mapping.model import Incident
from postmortem_tracker.models import ActionItem, GateEvent, Postmortem
from sync import store

COLUMNS = (
    "incident", "title", "severity", "team", "state", "postmortem", "action_item", "source",
    "owner", "due_date", "change_request", "cr_state", "implemented", "days_overdue", "blocked",
    "gate",
)  # fmt: skip
CR_STATES = {"-5": "New", "-4": "Assess", "-3": "Authorize", "-2": "Scheduled", "-1": "Implement",
             "0": "Review", "3": "Closed", "4": "Canceled"}  # fmt: skip


@dataclass
class AuditRow:
    incident: str
    title: str
    severity: str
    team: str
    state: str
    postmortem: str
    action_item: str
    source: str
    owner: str
    due_date: str
    change_request: str
    cr_state: str
    implemented: bool
    days_overdue: int
    blocked: str
    gate: str


def _event(e: GateEvent) -> str:
    """A refused end or an override, as the audit shows it (with its revocation, if any)."""
    at = f" at {e.severity}" if e.severity else ""
    text = f"{e.kind}{at if e.kind == 'override' else ''} {e.at:%Y-%m-%d %H:%M} by {e.actor}: "
    text += e.reason
    if e.revoked_at is not None:
        text += f" (revoked {e.revoked_at:%Y-%m-%d %H:%M} by {e.revoked_by}: {e.revoke_reason})"
    return text


def _incident_name(links: list[store.Link], fallback: str) -> str:
    keys = [x.remote_key for x in links if x.object_type == "incident" and x.remote_key]
    return keys[0] if keys else fallback


def audit_rows(
    db: Engine,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    team: str | None = None,
    overdue_only: bool = False,
    today: dt.date | None = None,
) -> list[AuditRow]:
    """One row per action item (and one per postmortem without items, so gaps show)."""
    today = today or dt.datetime.now(dt.UTC).date()
    rows: list[AuditRow] = []
    with store.session_scope(db, readonly=True) as s:
        chosen = select(Postmortem).order_by(col(Postmortem.created_at))
        # The window in SQL: a month's audit must not read every postmortem ever written.
        if since:
            chosen = chosen.where(
                col(Postmortem.created_at) >= dt.datetime.combine(since, dt.time(), dt.UTC)
            )
        if until:
            chosen = chosen.where(
                col(Postmortem.created_at)
                < dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), dt.UTC)
            )
        postmortems = s.exec(chosen).all()
        # Each table read once for the whole window, not four queries per postmortem.
        ids = [pm.incident_id for pm in postmortems]
        incidents = {
            r.id: r
            for r in s.exec(select(store.IncidentRow).where(col(store.IncidentRow.id).in_(ids)))
        }
        links_by: dict[str, list[store.Link]] = defaultdict(list)
        for link in s.exec(
            select(store.Link)
            .where(col(store.Link.incident_id).in_(ids))
            .order_by(col(store.Link.id))
        ):
            links_by[link.incident_id].append(link)
        events_by: dict[str, list[GateEvent]] = defaultdict(list)
        for event in s.exec(
            select(GateEvent).where(col(GateEvent.incident_id).in_(ids)).order_by(col(GateEvent.id))
        ):
            events_by[event.incident_id].append(event)
        items_by: dict[str, list[ActionItem]] = defaultdict(list)
        for each in s.exec(
            select(ActionItem)
            .where(col(ActionItem.incident_id).in_(ids))
            .order_by(col(ActionItem.id))
        ):
            items_by[each.incident_id].append(each)
        for pm in postmortems:
            row = incidents.get(pm.incident_id)
            if row is None:
                continue
            incident = Incident.model_validate({**row.data, "id": row.id})
            created = pm.created_at.date()
            if (since and created < since) or (until and created > until):
                continue
            if team and incident.team != team:
                continue
            links = links_by[row.id]
            events = events_by[row.id]
            gate = "; ".join(_event(e) for e in events)
            pm_state = "complete" if pm.completed_at else "open"
            if pm.jira_key:
                pm_state += f" ({pm.jira_key})"
            items = items_by[row.id]
            base = dict(
                incident=_incident_name(links, row.id), title=incident.title,
                severity=incident.severity.value if incident.severity else "", team=incident.team,
                state=incident.state.value, postmortem=pm_state, gate=gate,
            )  # fmt: skip
            if not items:
                rows.append(
                    AuditRow(
                        **base,
                        action_item="(none yet)",
                        source="",
                        owner="",
                        due_date="",
                        change_request="",
                        cr_state="",
                        implemented=False,
                        days_overdue=0,
                        blocked="no action items recorded",
                    )
                )
                continue
            for item in items:
                implemented = (
                    item.change_request_state == "3"
                    and item.change_request_close_code
                    in (
                        "successful",
                        "successful_issues",
                    )
                )
                overdue = 0
                if (
                    item.due_date
                    and not implemented
                    and item.change_request_state not in ("3", "4")
                ):
                    overdue = max(0, (today - item.due_date).days)
                rows.append(
                    AuditRow(
                        **base,
                        action_item=item.title,
                        source=item.source,
                        owner=item.owner,
                        due_date=str(item.due_date or ""),
                        change_request=item.change_request_number,
                        cr_state=CR_STATES.get(
                            item.change_request_state, item.change_request_state
                        ),
                        implemented=implemented,
                        days_overdue=overdue,
                        blocked=item.blocked if not item.change_request_number else "",
                    )
                )
    if overdue_only:
        rows = [r for r in rows if r.days_overdue > 0]
    return rows


def to_csv(rows: list[AuditRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("yes" if v is True else "no" if v is False else v) for k, v in asdict(row).items()}
        )
    return out.getvalue()


def to_dicts(rows: list[AuditRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def kpis(
    db: Engine, *, since: dt.date | None = None, until: dt.date | None = None
) -> list[dict[str, Any]]:
    """MTTA and MTTR per severity and team, in minutes, from the synced records and the audit
    log: acknowledged = first move out of ``new``; resolved = ``resolved_at`` (or the first
    move to resolved)."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(
        lambda: {"tta": [], "ttr": []}
    )
    with store.session_scope(db, readonly=True) as s:
        for row in s.exec(select(store.IncidentRow)).all():
            incident = Incident.model_validate({**row.data, "id": row.id})
            start = incident.started_at or row.created_at
            if (since and start.date() < since) or (until and start.date() > until):
                continue
            key = (incident.severity.value if incident.severity else "-", incident.team or "-")
            acked: dt.datetime | None = None
            resolved: dt.datetime | None = incident.resolved_at
            for entry in store.history(s, row.id):
                if entry.field == "state" and entry.before == "new" and acked is None:
                    acked = entry.at
                if entry.field == "state" and entry.after == "resolved" and resolved is None:
                    resolved = entry.at
            if acked:
                groups[key]["tta"].append((acked - start).total_seconds() / 60)
            if resolved:
                groups[key]["ttr"].append((resolved - start).total_seconds() / 60)
    out = []
    for (severity, team), values in sorted(groups.items()):
        out.append(
            {
                "severity": severity, "team": team,
                "acknowledged": len(values["tta"]), "resolved": len(values["ttr"]),
                "mtta_minutes": round(statistics.mean(values["tta"]), 1) if values["tta"] else None,
                "mttr_minutes": round(statistics.mean(values["ttr"]), 1) if values["ttr"] else None,
            }
        )  # fmt: skip
    return out
