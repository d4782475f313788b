"""The change manager's KPI series, from a handful of items whose figures are known."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from config.settings import PostmortemSettings
from postmortem_tracker.models import ActionItem, GateEvent, Requirement
from postmortem_tracker.tracker import Tracker
from service.domain import reports
from service.domain.roles import Actor
from sync import store

TODAY = dt.date(2026, 12, 2)  # a Wednesday: this week began on Monday 2026-11-30
CM = Actor.token("dana", "change-manager")


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)


def test_kpis_by_week_and_severity(tmp_path: Path) -> None:
    db = store.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate(db)
    monday = dt.date(2026, 11, 23)  # last week
    with store.session_scope(db) as s:
        s.add(Requirement(incident_id="a", severity="SEV1"))
        s.add(Requirement(incident_id="b", severity="SEV2"))
        items = [
            # due last week: one done on time, one done late, one withdrawn (not counted)
            ("a1", "a", monday, "done", monday - dt.timedelta(days=1)),
            ("a2", "a", monday, "done", monday + dt.timedelta(days=3)),
            ("a3", "a", monday, "withdrawn", None),
            # open and past due: overdue, one SEV1 and two SEV2 (one of them months old)
            ("a4", "a", TODAY - dt.timedelta(days=1), "open", None),
            ("b1", "b", TODAY - dt.timedelta(days=2), "open", None),
            ("b2", "b", dt.date(2026, 1, 5), "open", None),
            # due later: neither on time nor overdue yet
            ("b3", "b", TODAY + dt.timedelta(days=9), "open", None),
        ]
        for key, incident, due, status, done_at in items:
            s.add(
                ActionItem(
                    key=key, idem_key=key, incident_id=incident, title=key, due_date=due,
                    status=status, status_at=_at(done_at) if done_at else None,
                    created_at=_at(dt.date(2026, 11, 10)),
                )
            )  # fmt: skip
        for key, days in (("a1", 2), ("a2", 4), ("b1", 6), ("b3", 1)):
            store.audit(
                s, action="create", incident_id=key[0], field="change_request",
                after={"number": "CHG1", "item": key},
                at=_at(dt.date(2026, 11, 10)) + dt.timedelta(days=days),
            )  # fmt: skip
        s.add(GateEvent(incident_id="a", kind="override", reason="r", at=_at(monday)))
        s.add(GateEvent(incident_id="b", kind="blocked", reason="r", at=_at(monday)))
    tracker = Tracker(db, {}, PostmortemSettings())
    k = reports.kpis(tracker, actor=CM, weeks=4, today=TODAY)
    assert k["weeks"] == ["2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30"]
    assert k["on_time"] == [None, None, 50, 0]  # last week 1 of 2; this week a4 and b1 late
    assert k["due"] == [0, 0, 2, 2]
    assert k["overdue"] == {"SEV1": 1, "SEV2": 2, "SEV3": 0, "SEV4": 0}
    assert k["days_to_cr"] == {"SEV1": 3.0, "SEV2": 3.5, "SEV3": None, "SEV4": None}
    assert k["overrides"] == [0, 0, 1, 0]


def test_outcomes_of_audit_rows() -> None:
    from postmortem_tracker.report import AuditRow

    def row(**kw: object) -> AuditRow:
        base = {name: "" for name in AuditRow.__dataclass_fields__}
        base.update(implemented=False, days_overdue=0)
        return AuditRow(**{**base, **kw})

    assert reports.outcome(row(item_status="withdrawn", overridden_by="token:dana")) == "withdrawn"
    assert reports.outcome(row(item_status="done", change_request="CHG1")) == "implemented"
    # An override in force lets an item without a change request through; a revoked one
    # (the audit row names no override in force) does not.
    assert reports.outcome(row(overridden_by="token:dana", gate="override ...")) == "overridden"
    assert reports.outcome(row(gate="override ... (revoked ...)")) == "blocked"
    assert reports.outcome(row(change_request="CHG2", days_overdue=3)) == "overdue"
    assert reports.outcome(row(change_request="CHG2")) == "in progress"
