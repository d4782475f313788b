"""The change manager's views that the console draws: the audit trail filtered by date,
severity, team and outcome, and KPI series by week and severity.

Built on :func:`service.domain.postmortems.audit` (one definition of an audit row) and on bulk
reads of the postmortem tables (a query per table, not per incident, so a page stays fast with
thousands of postmortems).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from postmortem_tracker.models import ActionItem, GateEvent, Requirement
from postmortem_tracker.report import AuditRow
from postmortem_tracker.tracker import Tracker
from service.domain import postmortems
from service.domain.errors import Invalid
from service.domain.roles import Actor, Permission
from sync import store

OUTCOMES = ("implemented", "in progress", "overdue", "blocked", "overridden", "withdrawn")
SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")


def outcome(row: AuditRow) -> str:
    """What became of an action item, in one word the filter offers."""
    if row.item_status == "withdrawn":
        return "withdrawn"
    if row.implemented or row.item_status == "done":
        return "implemented"
    if _override_in_force(row) and not row.change_request:
        return "overridden"
    if row.days_overdue > 0:
        return "overdue"
    if not row.change_request:
        return "blocked"
    return "in progress"


def _override_in_force(row: AuditRow) -> bool:
    """Whether an override lets the incident close now (a revoked one does not)."""
    return bool(row.overridden_by)


def audit(
    tracker: Tracker,
    *,
    actor: Actor,
    since: dt.date | None = None,
    until: dt.date | None = None,
    team: str = "",
    severity: str = "",
    outcome_is: str = "",
) -> list[dict[str, Any]]:
    """Audit rows (as dicts, with their ``outcome``) that pass every filter given."""
    if severity and severity not in SEVERITIES:
        raise Invalid(f"severity {severity!r}: one of {', '.join(SEVERITIES)}", field="severity")
    if outcome_is and outcome_is not in OUTCOMES:
        raise Invalid(f"outcome {outcome_is!r}: one of {', '.join(OUTCOMES)}", field="outcome")
    if since and until and since > until:
        raise Invalid(f"from {since} is after to {until}", field="since")
    rows = postmortems.audit(tracker, since=since, until=until, team=team or None, actor=actor)
    out = []
    for row in rows:
        # By the highest severity the incident ever had (as the KPIs count it).
        if severity and (row.highest_severity or row.severity) != severity:
            continue
        became = outcome(row)
        if outcome_is and became != outcome_is:
            continue
        out.append({**row.__dict__, "outcome": became})
    return out


def _week(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def kpis(
    tracker: Tracker, *, actor: Actor, weeks: int = 12, today: dt.date | None = None
) -> dict[str, Any]:
    """Series for the charts, over the last ``weeks`` weeks (Mondays), in the words of the
    postmortem KPIs (``itsm-sync kpis``): an item is *on time* when it was done (its change
    closed successful) by its due date, *overdue* when still open past it; withdrawn items do
    not count; severity is the highest the incident ever had (the latched requirement's).

    - ``on_time``: per week of due date (up to today), the percentage of items due that week
      that were done on time (None for a week with none due);
    - ``overdue``: open items past their due date now, by severity (of any age);
    - ``days_to_cr``: per severity, the median days from an item's creation (in the window) to
      its first change request (the audit log's ``create change_request``);
    - ``overrides``: gate overrides given per week.

    Each figure is one query for all incidents (the page must stay fast with thousands)."""
    actor.require(Permission.POSTMORTEM)
    today = today or dt.datetime.now(dt.UTC).date()
    first = _week(today) - dt.timedelta(weeks=weeks - 1)
    labels = [first + dt.timedelta(weeks=i) for i in range(weeks)]
    due: Counter[dt.date] = Counter()
    kept: Counter[dt.date] = Counter()
    overdue: Counter[str] = Counter()
    to_cr: dict[str, list[float]] = defaultdict(list)
    overrides: Counter[dt.date] = Counter()
    window = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    severity_of = col(Requirement.severity)

    def with_severity(*columns: Any) -> Any:
        return (
            sa_select(*columns)
            .select_from(ActionItem)
            .outerjoin(Requirement, col(Requirement.incident_id) == col(ActionItem.incident_id))
        )

    with store.session_scope(tracker.db, readonly=True) as s:
        for sev, n in s.execute(
            with_severity(severity_of, func.count())
            .where(col(ActionItem.status) == "open", col(ActionItem.due_date) < today)
            .group_by(severity_of)
        ):
            overdue[sev or "-"] += n
        for due_date, status, done_at in s.execute(
            sa_select(col(ActionItem.due_date), col(ActionItem.status), col(ActionItem.status_at))
            .where(col(ActionItem.due_date) >= first, col(ActionItem.due_date) <= today)
            .where(col(ActionItem.status) != "withdrawn")
        ):
            due[_week(due_date)] += 1
            kept[_week(due_date)] += status == "done" and (done_at or window).date() <= due_date
        created: dict[str, tuple[str, dt.datetime]] = {}
        incidents: set[str] = set()
        for key, incident_id, sev, at in s.execute(
            with_severity(
                col(ActionItem.key), col(ActionItem.incident_id), severity_of,
                col(ActionItem.created_at),
            ).where(col(ActionItem.created_at) >= window)
        ):  # fmt: skip
            created[key] = (sev or "-", at)
            incidents.add(incident_id)
        firsts: dict[str, dt.datetime] = {}
        for after, at in s.execute(
            sa_select(col(store.AuditEntry.after), col(store.AuditEntry.at))
            .where(
                # Those incidents' entries only (indexed), not the whole audit log.
                col(store.AuditEntry.incident_id).in_(incidents),
                col(store.AuditEntry.action) == "create",
                col(store.AuditEntry.field) == "change_request",
                col(store.AuditEntry.at) >= window,
            )
            .order_by(col(store.AuditEntry.at))
        ):
            key = after.get("item") if isinstance(after, dict) else None
            if key in created and key not in firsts:
                firsts[key] = at
        for key, at in firsts.items():
            sev, made = created[key]
            to_cr[sev].append((at - made).total_seconds() / 86400)
        for event in s.exec(
            select(GateEvent).where(col(GateEvent.kind) == "override", col(GateEvent.at) >= window)
        ):
            overrides[_week(event.at.date())] += 1
    return {
        "weeks": [w.isoformat() for w in labels],
        "on_time": [round(100 * kept[w] / due[w]) if due[w] else None for w in labels],
        "due": [due[w] for w in labels],
        "overdue": {sev: overdue[sev] for sev in SEVERITIES},
        "days_to_cr": {
            sev: round(statistics.median(to_cr[sev]), 1) if to_cr[sev] else None
            for sev in SEVERITIES
        },
        "overrides": [overrides[w] for w in labels],
    }
