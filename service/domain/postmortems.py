"""Postmortems: action items, the closure gate and its overrides, the change manager's audit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlmodel import col, select

from connectors.errors import ConnectorError
from mapping.model import Incident
from postmortem_tracker.models import ActionItem, Postmortem
from postmortem_tracker.report import AuditRow, audit_rows, item_kpis, to_csv
from postmortem_tracker.report import kpis as mtta_mttr_figures
from postmortem_tracker.tracker import WITHDRAWN, Tracker, active_override
from service.domain.errors import Conflict, Invalid, NotFound, Unavailable
from service.domain.incidents import find
from service.domain.roles import Actor, Permission
from sync import store
from sync.queue import incident_key, mark_dirty

MAX_TITLE = 160
MAX_KEY = 200


def _incident(row: store.IncidentRow) -> Incident:
    return Incident.model_validate({**row.data, "id": row.id})


def gate(tracker: Tracker, *, ident: str) -> dict[str, Any]:
    """May the incident close, and what is missing if not."""
    with store.session_scope(tracker.db, readonly=True) as s:
        row = find(s, ident=ident)
    state = tracker.gate(_incident(row))
    with store.session_scope(tracker.db, readonly=True) as s:
        event = active_override(s, row.id)
    return {
        "incident": row.id,
        "can_close": state.open,
        "required": state.required,
        "missing": state.missing,
        "overridden": state.overridden,
        "override": None
        if event is None
        else {
            "by": event.actor, "reason": event.reason, "severity": event.severity,
            "at": event.at.isoformat(), "in_force": bool(state.overridden),
        },
        "why": state.explain(),
    }  # fmt: skip


def show(tracker: Tracker, *, ident: str) -> dict[str, Any]:
    """The postmortem, its action items, their change requests and the gate."""
    with store.session_scope(tracker.db, readonly=True) as s:
        row = find(s, ident=ident)
        postmortem = s.exec(select(Postmortem).where(col(Postmortem.incident_id) == row.id)).first()
        items = list(
            s.exec(
                select(ActionItem)
                .where(col(ActionItem.incident_id) == row.id)
                .order_by(col(ActionItem.id))
            ).all()
        )
    return {
        "incident": row.id,
        "postmortem": None
        if postmortem is None
        else {
            "review": postmortem.jira_key,
            "complete": postmortem.completed_at is not None,
            "completed_by": postmortem.completed_by,
            "problem": postmortem.problem_number,
        },
        "action_items": [_item_dict(i) for i in items],
        "gate": gate(tracker, ident=row.id),
    }  # fmt: skip


def _today() -> dt.date:
    return store.utcnow().date()


def _check_owner(tracker: Tracker, owner: str) -> str:
    owner = owner.strip().lower()
    if not owner:
        return ""
    if "@" not in owner:
        raise Invalid(f"owner {owner!r}: give the owner's email address", field="owner")
    try:
        problem = tracker.owner_problem(owner)
    except ConnectorError as exc:
        raise Unavailable(f"owner {owner!r} could not be checked: {exc}", field="owner") from exc
    if problem:
        raise Invalid(f"owner {owner!r} cannot own a change request: {problem}", field="owner")
    return owner


def _check_due(due: dt.date | None, today: dt.date | None) -> None:
    today = today or _today()
    if due is not None and due < today:
        raise Invalid(f"due {due}: the due date is in the past (today is {today})", field="due")


def _check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise Invalid("the action item needs a title", field="title")
    if len(title) > MAX_TITLE:
        raise Invalid(f"the title has {len(title)} characters; at most {MAX_TITLE}", field="title")
    return title


def add_action(
    tracker: Tracker, *, ident: str, title: str, owner: str, due: dt.date | None,
    description: str = "", actor: Actor, source: str = "", key: str = "",
    today: dt.date | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Add an action item; it becomes a change request on the next reconcile.

    Idempotent: ``key`` (the client's), else the incident and the title, name the item; the
    same add again returns the first (``created`` false). Every input is checked before
    anything is written: an unknown incident, a due date in the past or an owner who is no
    user of the change system is refused, naming the field."""
    actor.require(Permission.POSTMORTEM)
    title = _check_title(title)
    if len(key) > MAX_KEY:
        raise Invalid(f"the key has {len(key)} characters; at most {MAX_KEY}", field="key")
    with store.session_scope(tracker.db, readonly=True) as s:
        row = find(s, ident=ident)
    _check_due(due, today)
    owner = _check_owner(tracker, owner)
    item, created = tracker.add_action(
        row.id, title=title, owner=owner, due=due, description=description,
        source=source or actor.label, client_key=key,
    )  # fmt: skip
    if created:
        with store.session_scope(tracker.db) as s:
            mark_dirty(s, incident_key(row.id), reason="action item added")
    missing = [w for w, ok in (("an owner", item.owner), ("a due date", item.due_date)) if not ok]
    return {
        "key": item.key, "title": item.title, "incident": row.id, "still_needs": missing,
        "created": created,
    }  # fmt: skip


def _item(s: Any, incident_id: str, item: str) -> ActionItem:
    row = s.exec(
        select(ActionItem).where(
            col(ActionItem.incident_id) == incident_id, col(ActionItem.key) == item.strip()
        )
    ).first()
    if row is None:
        raise NotFound(f"no action item {item!r} on this incident", field="item")
    return row


UNSET: Any = object()  # edit_action: the due date was not given


def edit_action(
    tracker: Tracker, *, ident: str, item: str, title: str | None = None,
    owner: str | None = None, due: dt.date | None = UNSET, actor: Actor,
    today: dt.date | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Change an item's title, owner or due date (``None``/unset: unchanged; ``due=None``
    clears it). Checked as an add is, before anything is written; the change request follows
    on the next reconcile (and an item from Jira is changed in Jira first)."""
    actor.require(Permission.POSTMORTEM)
    with store.session_scope(tracker.db, readonly=True) as s:
        row = find(s, ident=ident)
        current = _item(s, row.id, item)
    if current.status == WITHDRAWN:
        raise Conflict(f"action item {item} is withdrawn; add a new one", field="item")
    new_title = None if title is None else _check_title(title)
    due_given = due is not UNSET
    if due_given:
        _check_due(due, today)
    new_owner = None if owner is None else _check_owner(tracker, owner)
    try:
        edited = tracker.edit_item(
            current.id or 0, title=new_title, owner=new_owner, due=due if due_given else None,
            due_given=due_given, actor=actor.label,
        )  # fmt: skip
    except ConnectorError as exc:
        raise Unavailable(f"{current.source} could not be changed: {exc}", field="item") from exc
    with store.session_scope(tracker.db) as s:
        mark_dirty(s, incident_key(row.id), reason="action item edited")
    return _item_dict(edited)


def withdraw_action(
    tracker: Tracker, *, ident: str, item: str, reason: str, actor: Actor
) -> dict[str, Any]:
    """Withdraw an item with a reason: it no longer blocks the gate (audited)."""
    actor.require(Permission.POSTMORTEM)
    reason = _reason(reason, "withdrawing an action item")
    with store.session_scope(tracker.db, readonly=True) as s:
        row = find(s, ident=ident)
        current = _item(s, row.id, item)
    if current.status == WITHDRAWN:
        return _item_dict(current)
    withdrawn = tracker.withdraw_item(current.id or 0, reason=reason, actor=actor.label)
    with store.session_scope(tracker.db) as s:
        mark_dirty(s, incident_key(row.id), reason="action item withdrawn")
    return _item_dict(withdrawn)


def _item_dict(i: ActionItem) -> dict[str, Any]:
    return {
        "key": i.key, "title": i.title, "owner": i.owner, "due": str(i.due_date or ""),
        "source": i.source, "status": i.status, "status_reason": i.status_reason,
        "status_by": i.status_by, "change_request": i.change_request_number,
        "change_request_state": i.change_request_state, "blocked": i.blocked,
        "attempt": i.attempt,
    }  # fmt: skip


def complete(tracker: Tracker, *, ident: str, actor: Actor) -> dict[str, Any]:
    """Mark the postmortem complete (when it has no Jira review issue)."""
    actor.require(Permission.POSTMORTEM)
    with store.session_scope(tracker.db) as s:
        row = find(s, ident=ident)
        postmortem = s.exec(select(Postmortem).where(col(Postmortem.incident_id) == row.id)).first()
        if postmortem is None:
            postmortem = Postmortem(incident_id=row.id)
            s.add(postmortem)
        postmortem.completed_at, postmortem.completed_by = store.utcnow(), actor.name
        store.audit(
            s, action="update", incident_id=row.id, field="postmortem", after="complete",
            actor=actor.label,
        )  # fmt: skip
        mark_dirty(s, incident_key(row.id), reason="postmortem complete")
    return {"incident": row.id, "complete": True}


def _reason(reason: str, what: str) -> str:
    reason = reason.strip()
    if len(reason) < 3:
        raise Invalid(
            f"{what} needs a reason of 3 characters or more (it is audited)", field="reason"
        )
    return reason


def override(tracker: Tracker, *, ident: str, reason: str, actor: Actor) -> dict[str, Any]:
    """Let the incident close although the gate is shut: on the record, with who and why, at
    the severity it has (raised above it later, the gate shuts again)."""
    actor.require(Permission.POSTMORTEM)
    reason = _reason(reason, "an override")
    with store.session_scope(tracker.db, readonly=True) as s:
        row = find(s, ident=ident)
    event = tracker.override(_incident(row), reason=reason, actor=actor.label)
    with store.session_scope(tracker.db) as s:
        mark_dirty(s, incident_key(row.id), reason="gate override")
    return {
        "incident": row.id, "overridden": True, "by": event.actor, "reason": event.reason,
        "severity": event.severity,
    }  # fmt: skip


def revoke_override(tracker: Tracker, *, ident: str, reason: str, actor: Actor) -> dict[str, Any]:
    """Take back the override in force: the gate is armed again (audited). 409 if none."""
    actor.require(Permission.POSTMORTEM)
    reason = _reason(reason, "revoking an override")
    with store.session_scope(tracker.db, readonly=True) as s:
        row = find(s, ident=ident)
    try:
        event = tracker.revoke_override(row.id, reason=reason, actor=actor.label)
    except LookupError:
        raise Conflict(f"{ident} has no override in force to revoke", field="incident") from None
    with store.session_scope(tracker.db) as s:
        mark_dirty(s, incident_key(row.id), reason="gate override revoked")
    return {
        "incident": row.id, "revoked": True, "override_by": event.actor, "by": actor.label,
        "reason": reason,
    }  # fmt: skip


def audit(
    tracker: Tracker, *, since: dt.date | None = None, until: dt.date | None = None,
    team: str | None = None, overdue_only: bool = False, actor: Actor,
) -> list[AuditRow]:  # fmt: skip
    actor.require(Permission.POSTMORTEM)
    return audit_rows(tracker.db, since=since, until=until, team=team, overdue_only=overdue_only)


def mtta_mttr(
    tracker: Tracker, *, since: dt.date | None = None, until: dt.date | None = None,
    actor: Actor,
) -> list[dict[str, Any]]:  # fmt: skip
    actor.require(Permission.POSTMORTEM)
    return mtta_mttr_figures(tracker.db, since=since, until=until)


def kpis(
    tracker: Tracker, *, since: dt.date | None = None, until: dt.date | None = None,
    group_by: str = "severity", actor: Actor, today: dt.date | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Items created, on time, overdue, median days to change request, overrides, and
    incidents that ended with open items: per severity (the highest ever) or per team."""
    actor.require(Permission.POSTMORTEM)
    if group_by not in ("severity", "team"):
        raise Invalid(f"group_by {group_by!r}: use severity or team", field="group_by")
    _check_window(since, until)
    return item_kpis(tracker.db, since=since, until=until, group_by=group_by, today=today)


def audit_csv(
    tracker: Tracker, *, since: dt.date | None = None, until: dt.date | None = None,
    team: str | None = None, overdue_only: bool = False, actor: Actor,
    today: dt.date | None = None,
) -> str:  # fmt: skip
    """The audit as CSV: one row per action item, with the incident's highest severity, when
    it ended, the item's status and the override in force (who, why, at which severity)."""
    actor.require(Permission.POSTMORTEM)
    _check_window(since, until)
    return to_csv(
        audit_rows(
            tracker.db, since=since, until=until, team=team, overdue_only=overdue_only,
            today=today,
        )
    )  # fmt: skip


def _check_window(since: dt.date | None, until: dt.date | None) -> None:
    if since and until and until < since:
        raise Invalid(f"until {until} is before since {since}", field="until")


def parse_date(text: str | None, *, field: str) -> dt.date | None:
    """A YYYY-MM-DD date from a form, a query or the CLI."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise Invalid(f"{field} {text!r}: use YYYY-MM-DD", field=field) from exc
