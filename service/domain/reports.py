"""The change manager's views that the console draws: the audit trail filtered by date,
severity, team and outcome, and KPI series by week and severity.

Built on :func:`service.domain.postmortems.audit` (one definition of an audit row) and on bulk
reads of the postmortem tables (a query per table, not per incident, so a page stays fast with
thousands of postmortems).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import and_, func, not_
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from postmortem_tracker.models import ActionItem, GateEvent, Requirement
from postmortem_tracker.report import AuditRow
from postmortem_tracker.tracker import Tracker
from service.domain import postmortems
from service.domain.errors import Invalid
from service.domain.roles import Actor, Permission
from sync import store

OUTCOMES = ("implemented", "in progress", "overdue", "blocked", "overridden")
SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")


def outcome(row: AuditRow) -> str:
    """What became of an action item, in one word the filter offers."""
    if row.implemented:
        return "implemented"
    if "override" in row.gate and not row.change_request:
        return "overridden"
    if row.days_overdue > 0:
        return "overdue"
    if not row.change_request:
        return "blocked"
    return "in progress"


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
        if severity and row.severity != severity:
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
    """Series for the charts, over the last ``weeks`` weeks (Mondays):

    - ``on_time``: per week of due date, the share of action items due that week whose change
      request is implemented or still within its date (percent, None for a week with none);
    - ``overdue``: action items past their due date without an implemented change, by severity;
    - ``days_to_cr``: per severity, mean days from an action item (created in the window) to
      its change request (the item's last update once the change request is recorded);
    - ``overrides``: gate overrides per week.
    """
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
    implemented = and_(
        col(ActionItem.change_request_state) == "3",
        col(ActionItem.change_request_close_code).in_(("successful", "successful_issues")),
    )
    late = and_(
        col(ActionItem.due_date) < today,
        not_(implemented),
        col(ActionItem.change_request_state) != "4",
    )
    with store.session_scope(tracker.db, readonly=True) as s:
        # Counted in SQL (overdue items can be of any age); the rest reads the window only.
        for sev, n in s.execute(
            sa_select(col(Requirement.severity), func.count())
            .select_from(ActionItem)
            .outerjoin(Requirement, col(Requirement.incident_id) == col(ActionItem.incident_id))
            .where(late)
            .group_by(Requirement.severity)
        ):
            overdue[sev or "-"] += n
        for due_date, is_late in s.execute(
            sa_select(col(ActionItem.due_date), late).where(
                col(ActionItem.due_date) >= first, col(ActionItem.due_date) <= today
            )
        ):
            due[_week(due_date)] += 1
            kept[_week(due_date)] += not is_late
        for sev, created, updated in s.execute(
            sa_select(
                col(Requirement.severity), col(ActionItem.created_at), col(ActionItem.updated_at)
            )
            .select_from(ActionItem)
            .outerjoin(Requirement, col(Requirement.incident_id) == col(ActionItem.incident_id))
            .where(
                col(ActionItem.change_request_number) != "", col(ActionItem.created_at) >= window
            )
        ):
            to_cr[sev or "-"].append((updated - created).total_seconds() / 86400)
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
            sev: round(sum(to_cr[sev]) / len(to_cr[sev]), 1) if to_cr[sev] else None
            for sev in SEVERITIES
        },
        "overrides": [overrides[w] for w in labels],
    }
