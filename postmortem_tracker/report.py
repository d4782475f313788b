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
from postmortem_tracker.models import ActionItem, GateEvent, Postmortem, Requirement
from postmortem_tracker.tracker import DONE, OPEN, WITHDRAWN
from sync import store

COLUMNS = (
    "incident", "title", "severity", "highest_severity", "team", "state", "ended",
    "postmortem", "action_item", "item_key", "item_status", "item_created", "source", "owner",
    "due_date", "change_request", "cr_state", "implemented", "days_overdue", "blocked",
    "overridden_by", "override_reason", "override_severity", "gate",
)  # fmt: skip
ENDED = ("closed", "canceled")
CR_STATES = {"-5": "New", "-4": "Assess", "-3": "Authorize", "-2": "Scheduled", "-1": "Implement",
             "0": "Review", "3": "Closed", "4": "Canceled"}  # fmt: skip


@dataclass
class AuditRow:
    incident: str
    title: str
    severity: str  # now
    highest_severity: str  # the highest it ever had (latched): what the KPIs count it by
    team: str
    state: str
    ended: str  # when it reached closed/canceled (YYYY-MM-DD), "" while it has not
    postmortem: str
    action_item: str
    item_key: str
    item_status: str  # open | done | withdrawn ("" for a postmortem without items)
    item_created: str
    source: str
    owner: str
    due_date: str
    change_request: str
    cr_state: str
    implemented: bool
    days_overdue: int
    blocked: str
    overridden_by: str  # the override in force (who), "" if none
    override_reason: str
    override_severity: str
    gate: str  # every refused end and override, with revocations


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


def _ended(incident: Incident, row: store.IncidentRow) -> dt.date | None:
    if incident.state.value not in ENDED:
        return None
    return (incident.closed_at or row.updated_at).date()


def _highest(latched: str, incident: Incident) -> str:
    """The higher of the latched severity and the incident's own now (SEV1 < SEV2)."""
    now = incident.severity.value if incident.severity else ""
    return min((x for x in (latched, now) if x), default="")


def _in_window(
    start: dt.date, end: dt.date | None, since: dt.date | None, until: dt.date | None
) -> bool:
    """Whether [start, end or open] overlaps [since, until]."""
    if until and start > until:
        return False
    return not (since and end is not None and end < since)


def audit_rows(
    db: Engine,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    team: str | None = None,
    overdue_only: bool = False,
    today: dt.date | None = None,
) -> list[AuditRow]:
    """One row per action item (and one per postmortem without items, so gaps show), of the
    incidents whose postmortem started in [since, until]."""
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
        latched = {
            r.incident_id: r.severity
            for r in s.exec(select(Requirement).where(col(Requirement.incident_id).in_(ids)))
        }
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
            ended = _ended(incident, row)
            if team and incident.team != team:
                continue
            links = links_by[row.id]
            events = events_by[row.id]
            overrides = [e for e in events if e.kind == "override" and e.revoked_at is None]
            override = overrides[-1] if overrides else None
            pm_state = "complete" if pm.completed_at else "open"
            if pm.jira_key:
                pm_state += f" ({pm.jira_key})"
            items = items_by[row.id]
            base = dict(
                incident=_incident_name(links, row.id), title=incident.title,
                severity=incident.severity.value if incident.severity else "",
                highest_severity=_highest(latched.get(row.id, ""), incident), team=incident.team,
                state=incident.state.value, ended=str(ended or ""), postmortem=pm_state,
                overridden_by=override.actor if override else "",
                override_reason=override.reason if override else "",
                override_severity=override.severity if override else "",
                gate="; ".join(_event(e) for e in events),
            )  # fmt: skip
            if not items:
                rows.append(
                    AuditRow(
                        **base,
                        action_item="(none yet)",
                        item_key="",
                        item_status="",
                        item_created="",
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
                implemented = item.status == DONE
                overdue = 0
                if item.due_date and item.status == OPEN:
                    overdue = max(0, (today - item.due_date).days)
                rows.append(
                    AuditRow(
                        **base,
                        action_item=item.title,
                        item_key=item.key,
                        item_status=item.status,
                        item_created=str(item.created_at.date()),
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


def item_kpis(
    db: Engine, *, since: dt.date | None = None, until: dt.date | None = None,
    group_by: str = "severity", today: dt.date | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The change manager's figures per severity (the highest the incident ever had, so a
    downgrade hides nothing) or per team:

    - ``incidents``: incidents needing a postmortem whose postmortem was open in the window;
    - ``items_created``: action items created in the window; of those, ``on_time`` (done by
      their due date), ``done``, ``overdue`` (open and past due), ``withdrawn``;
    - ``median_days_to_change_request``: from an item's creation to its first change request;
    - ``overrides`` given in the window (``revoked`` of them since);
    - ``ended_with_open_items``: incidents that ended (closed, canceled) in the window while an
      item was still open.
    """
    if group_by not in ("severity", "team"):
        raise ValueError(f"group_by {group_by!r}: use severity or team")
    today = today or dt.datetime.now(dt.UTC).date()

    def inside(day: dt.date) -> bool:
        return not ((since and day < since) or (until and day > until))

    groups: dict[str, dict[str, Any]] = {}
    with store.session_scope(db, readonly=True) as s:
        for req in s.exec(select(Requirement)).all():
            row = store.get_incident(s, req.incident_id)
            if row is None:
                continue
            incident = Incident.model_validate({**row.data, "id": row.id})
            highest = _highest(req.severity, incident)
            key = (highest if group_by == "severity" else incident.team) or "-"
            g = groups.setdefault(
                key,
                {
                    group_by: key, "incidents": 0, "items_created": 0, "on_time": 0, "done": 0,
                    "overdue": 0, "withdrawn": 0, "days": [], "overrides": 0, "revoked": 0,
                    "ended_with_open_items": 0,
                },
            )  # fmt: skip
            ended = _ended(incident, row)
            if _in_window(req.since.date(), ended, since, until):
                g["incidents"] += 1
            items = s.exec(
                select(ActionItem).where(col(ActionItem.incident_id) == incident.id)
            ).all()
            if ended is not None and inside(ended) and any(i.status == OPEN for i in items):
                g["ended_with_open_items"] += 1
            created = _change_request_times(s, incident.id)
            for item in items:
                if not inside(item.created_at.date()):
                    continue
                g["items_created"] += 1
                if item.status == WITHDRAWN:
                    g["withdrawn"] += 1
                elif item.status == DONE:
                    g["done"] += 1
                    done_on = (item.status_at or item.updated_at).date()
                    g["on_time"] += bool(item.due_date and done_on <= item.due_date)
                elif item.due_date and item.due_date < today:
                    g["overdue"] += 1
                first = created.get(item.key)
                if first is not None:
                    g["days"].append((first - item.created_at).total_seconds() / 86400)
            for event in s.exec(
                select(GateEvent).where(
                    col(GateEvent.incident_id) == incident.id, col(GateEvent.kind) == "override"
                )
            ).all():
                if inside(event.at.date()):
                    g["overrides"] += 1
                    g["revoked"] += event.revoked_at is not None
    out = []
    for key in sorted(groups):
        g = groups[key]
        days = g.pop("days")
        g["median_days_to_change_request"] = round(statistics.median(days), 2) if days else None
        out.append(g)
    return out


def _change_request_times(s: Any, incident_id: str) -> dict[str, dt.datetime]:
    """When each item (by key) got its first change request, from the audit log."""
    out: dict[str, dt.datetime] = {}
    for entry in store.history(s, incident_id):
        if entry.action != "create" or entry.field != "change_request":
            continue
        after: Any = entry.after
        key = after.get("item") if hasattr(after, "get") else None
        if key and key not in out:
            out[str(key)] = entry.at
    return out


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
