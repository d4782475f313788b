"""Postmortems, action items -> change requests, and the closure gate.

When an incident that needs a postmortem is resolved, the tracker makes sure the postmortem
exists (a "Post-incident review" Jira issue linked to the incident's issue, if configured),
collects its action items (Jira issues linked to the incident's or the review's issue, or
added with the CLI/API), and turns each into a ServiceNow change request with the owner as
``assigned_to``, the due date, the incident as ``parent`` and the item's key as
``correlation_id`` (so a crash between creating the change and recording it creates no second
one). The change request's number goes back onto the source as a Jira remote link. Owner and
due date changes on either side follow. An item whose owner is not a ServiceNow user, or that
has no due date, gets no change request and says why.

The gate: an incident may not close while a required postmortem is not complete or an action
item lacks its change request. A close attempt is reverted (the engine writes Resolved back)
with an internal note listing exactly what is missing; a change manager may override, with a
reason, and the override is audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import BindParameter, String, bindparam, literal, union_all
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from config.settings import PostmortemSettings
from connectors.base import (
    Capability,
    Connector,
    IssueLinks,
    Mentions,
    RemoteRecord,
    RemoteRef,
    Visibility,
)
from connectors.errors import ConnectorError, NotFound
from mapping.conditions import parse_condition
from mapping.engine import canonical_values
from mapping.model import CANONICAL_FIELDS, Incident, State
from postmortem_tracker.models import ActionItem, GateEvent, Postmortem, Requirement
from sync import store

log = logging.getLogger("itsm_sync.postmortem")
CR_CLOSED = "3"
OPEN, DONE, WITHDRAWN = "open", "done", "withdrawn"  # an action item's status
CR_DONE_CODES = ("successful", "successful_issues")


@dataclass
class GateState:
    required: bool
    missing: list[str] = field(default_factory=list)
    overridden: str = ""  # the override's reason, if any

    @property
    def open(self) -> bool:
        return not self.required or not self.missing or bool(self.overridden)

    def explain(self) -> str:
        if not self.required:
            return "no postmortem is required for this incident"
        if self.overridden:
            return f"overridden: {self.overridden}"
        if not self.missing:
            return "the postmortem is complete and every action item has its change request"
        return "; ".join(self.missing)


def active_override(s: Any, incident_id: str) -> GateEvent | None:
    """The newest override of the incident that was not revoked."""
    return s.exec(
        select(GateEvent)
        .where(
            col(GateEvent.incident_id) == incident_id,
            col(GateEvent.kind) == "override",
            col(GateEvent.revoked_at).is_(None),
        )
        .order_by(col(GateEvent.id).desc())
    ).first()


def _ref(link: store.Link) -> RemoteRef:
    return RemoteRef(link.system, link.instance, link.object_type, link.remote_id, link.remote_key)


def idempotency_key(title: str, client_key: str = "") -> str:
    """What makes adding an item idempotent: the client's key, else the title with case and
    runs of spaces folded (the natural key, with the incident)."""
    if client_key.strip():
        return f"key:{client_key.strip()}"
    return "title:" + " ".join(title.casefold().split())


def item_key(incident_id: str, idem_key: str) -> str:
    """The item's change-request correlation key: stable for one incident and idempotency key,
    and safe in a ServiceNow query (no ``^``)."""
    digest = hashlib.sha256(f"{incident_id}\0{idem_key}".encode()).hexdigest()[:24]
    return f"itsm-ai-{digest}"


def _date(value: Any) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _owner_statement(dialect: str) -> Any:
    """The incident of a record that is an action item's change request, a postmortem's
    review or problem, or an action item's source, in that order of precedence."""
    rid: BindParameter[str] = bindparam("rid", type_=String)
    item, review = ActionItem.__table__.c, Postmortem.__table__.c  # type: ignore[attr-defined]
    ranked = union_all(
        sa_select(item.incident_id, literal(1).label("rank")).where(item.change_request_id == rid),
        sa_select(review.incident_id, literal(2).label("rank")).where(
            (review.jira_id == rid) | (review.problem_id == rid)
        ),
        sa_select(item.incident_id, literal(3).label("rank")).where(item.source_id == rid),
    ).subquery()
    return sa_select(ranked.c.incident_id).order_by(ranked.c.rank).limit(1)


class Tracker:
    def __init__(
        self,
        db: Engine,
        connectors: Mapping[tuple[str, str], Connector],
        settings: PostmortemSettings,
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.settings = settings
        self._required = parse_condition(settings.required_when, fields=CANONICAL_FIELDS)
        # Requirements known latched, with their severity: a requirement is never lifted and
        # its severity only rises, so "latched at this severity or a higher one" stays true
        # and every later reconcile of the incident skips the read (bounded: cleared when big).
        self._latched: dict[str, str] = {}

    def rule_holds(self, incident: Incident) -> bool:
        """Whether ``postmortem.required_when`` holds for the incident as it is now."""
        return self._required.evaluate(canonical_values(incident))

    def required(self, incident: Incident) -> bool:
        """Whether the incident needs a postmortem: the rule holds now, or it once did (the
        requirement latches, so a downgrade before closing is no way around the gate)."""
        if self.rule_holds(incident):
            return True
        with store.session_scope(self.db, readonly=True) as s:
            return s.get(Requirement, incident.id) is not None

    def note(self, incident: Incident) -> None:
        """Latch the requirement while the rule holds, with the highest severity seen. A
        duplicate that needs a postmortem makes its parent need one: the parent's covers it."""
        if not incident.id or not self.rule_holds(incident):
            return
        severity = incident.severity.value if incident.severity else ""
        why = f"{self.settings.required_when} held"
        known = self._latched.get(incident.id)
        if known is not None and known <= severity and not incident.parent:
            return  # latched already, at this severity or a higher one: nothing to write
        # Straight to the write transaction, which reads the row itself: a read transaction
        # first cost every new incident one more transaction (~1 ms of a backfill's 30 ms per
        # incident) to spare a write lock only to an incident latched before this process
        # met it, which then holds an empty transaction once and is remembered.
        with store.session_scope(self.db) as s:
            latched = self._latch(s, incident.id, severity, why)
            if incident.parent:
                self._latch(s, incident.parent, severity, f"its duplicate {incident.id} needs one")
        # Committed: the next reconciles of this incident skip the read (each incident's second
        # reconcile read it again, ~2 ms of the worker's CPU, measured).
        self._remember(incident.id, latched)

    def _remember(self, incident_id: str, severity: str) -> None:
        if len(self._latched) >= 100_000:
            self._latched.clear()
        self._latched[incident_id] = severity

    def _latch(self, s: Any, incident_id: str, severity: str, reason: str) -> str:
        """Latch the requirement (or raise its severity); the severity it is latched at."""
        row = s.get(Requirement, incident_id)
        if row is None:
            s.add(Requirement(incident_id=incident_id, severity=severity, reason=reason))
            s.flush()
            store.audit(
                s, action="update", incident_id=incident_id, field="postmortem",
                after="required", reason=f"a postmortem is required from now on: {reason}",
            )  # fmt: skip
            return severity
        if severity and (not row.severity or severity < row.severity):  # SEV1 < SEV2
            row.severity = severity
        return str(row.severity)

    def owner_of(self, system: str, object_type: str, remote_id: str) -> str | None:
        """The incident a change request, review issue or action item issue belongs to.

        Asked of every record the engine meets unlinked (each record of a backfill): one
        prepared statement over indexed columns (0013), on a read-only connection."""
        with store.session_scope(self.db, readonly=True) as s:
            found = (
                s.connection()
                .execute(
                    store.prepared(s, "tracker.owner_of", _owner_statement), {"rid": remote_id}
                )
                .first()
            )
        return str(found[0]) if found is not None else None

    # -- the gate -----------------------------------------------------------------------------

    def gate(self, incident: Incident, *, depth: int = 0) -> GateState:
        if incident.parent and depth < 5:
            # A duplicate's postmortem is its parent's: it may end when its parent could.
            with store.session_scope(self.db, readonly=True) as s:
                row = store.get_incident(s, incident.parent)
            if row is not None:
                parent = self.gate(
                    Incident.model_validate({**row.data, "id": row.id}), depth=depth + 1
                )
                name = str(row.data.get("title") or row.id)
                return GateState(
                    required=parent.required,
                    missing=[
                        f"{m} (the postmortem of its parent {name!r})" for m in parent.missing
                    ],
                    overridden=parent.overridden,
                )
        state = GateState(required=self.required(incident))
        if not state.required:
            return state
        with store.session_scope(self.db, readonly=True) as s:
            override = active_override(s, incident.id)
            postmortem = s.exec(
                select(Postmortem).where(col(Postmortem.incident_id) == incident.id)
            ).first()
            items = list(
                s.exec(select(ActionItem).where(col(ActionItem.incident_id) == incident.id)).all()
            )
            highest = self.highest_severity(s, incident)
        if override is not None:
            if override.severity and highest and highest < override.severity:  # SEV1 < SEV2
                state.missing.append(
                    f"the override by {override.actor} was given at {override.severity}; the "
                    f"incident has been {highest} since, which it does not cover"
                )
            else:
                state.overridden = f"{override.reason} (by {override.actor})"
        if postmortem is None:
            state.missing.append("the postmortem has not been started")
        elif postmortem.completed_at is None:
            where = f" (Jira {postmortem.jira_key})" if postmortem.jira_key else ""
            state.missing.append(f"the postmortem{where} is not complete")
        for item in items:
            if item.status != OPEN:
                continue  # done (its change closed successful) or withdrawn: it blocks nothing
            if not item.change_request_number:
                why = item.blocked or "no change request yet"
                state.missing.append(f"action item {item.title!r} ({item.source}): {why}")
        return state

    def highest_severity(self, s: Any, incident: Incident) -> str:
        """The highest severity the incident ever had while it needed a postmortem (the
        latch's), or has now: what overrides and the KPIs count it by. "" if none."""
        row = s.get(Requirement, incident.id)
        now = incident.severity.value if incident.severity else ""
        return min((x for x in (row.severity if row else "", now) if x), default="")

    def record_blocked(self, incident: Incident, gate: GateState, by: str, *, before: str) -> str:
        """Audit a refused end (close, cancel); returns the note to leave on the records."""
        lines = "\n".join(f"- {m}" for m in gate.missing)
        ending = incident.state.value
        note = (
            f"This incident cannot be {ending} yet ({ending} in {by}; it stays {before}): the "
            f"postmortem's fixes must be in change management first. Missing:\n{lines}"
        )
        with store.session_scope(self.db) as s:
            s.add(
                GateEvent(incident_id=incident.id, kind="blocked", reason=gate.explain(), actor=by)
            )
            store.audit(
                s, action="skip", incident_id=incident.id, field="state", before=before,
                after=ending, actor=by,
                reason=f"{ending} refused by the postmortem gate: {gate.explain()}",
            )  # fmt: skip
        return note

    def override(self, incident: Incident, *, reason: str, actor: str) -> GateEvent:
        """Let the incident end although the gate is shut; it holds at the severity it is
        given at (the highest ever): raised above that later, the gate shuts again."""
        if not reason.strip():
            raise ValueError("an override needs a reason")
        with store.session_scope(self.db) as s:
            severity = self.highest_severity(s, incident)
            event = GateEvent(
                incident_id=incident.id, kind="override", reason=reason, actor=actor,
                severity=severity,
            )  # fmt: skip
            s.add(event)
            s.flush()
            store.audit(
                s, action="override", incident_id=incident.id, actor=actor, field="gate",
                after={"override": event.id, "severity": severity},
                reason=f"closure gate overridden at {severity or 'no severity'}: {reason}",
            )  # fmt: skip
        return event

    def revoke_override(self, incident_id: str, *, reason: str, actor: str) -> GateEvent:
        """Take back the override in force: the gate is armed again (audited). LookupError
        when there is none."""
        if not reason.strip():
            raise ValueError("revoking an override needs a reason")
        with store.session_scope(self.db) as s:
            event = active_override(s, incident_id)
            if event is None:
                raise LookupError(incident_id)
            now = store.utcnow()
            while (older := active_override(s, incident_id)) is not None:  # all, newest first
                older.revoked_at, older.revoked_by, older.revoke_reason = now, actor, reason
                s.add(older)
                s.flush()
            store.audit(
                s, action="override", incident_id=incident_id, actor=actor, field="gate",
                before={"override": event.id, "by": event.actor}, after="revoked",
                reason=f"closure gate override by {event.actor} revoked: {reason}",
            )  # fmt: skip
        return event

    # -- the work, on every reconcile of a resolved incident -------------------------------

    def _connector(self, link: store.Link) -> Connector | None:
        return self.connectors.get((link.system, link.instance))

    def _with(self, links: list[store.Link], capability: Capability) -> store.Link | None:
        """The first of the incident's links whose system can do ``capability``."""
        for link in links:
            connector = self._connector(link)
            if connector is not None and capability in connector.capabilities:
                return link
        return None

    def _linker(self, link: store.Link | None) -> IssueLinks | None:
        connector = self._connector(link) if link is not None else None
        if connector is None or Capability.ISSUE_LINKS not in connector.capabilities:
            return None
        return cast(IssueLinks, connector)

    def work(self, incident: Incident, links: list[store.Link]) -> None:
        """Bring the postmortem, its items and their change requests up to date."""
        if incident.state not in (State.RESOLVED, State.CLOSED) or incident.parent:
            return  # a duplicate's postmortem is its parent's
        if not self.required(incident):
            return
        issue_link = self._with(links, Capability.ISSUE_LINKS)
        change_link = self._with(links, Capability.CHANGE_REQUESTS)
        postmortem = self._ensure_postmortem(incident, issue_link)
        if issue_link is not None:
            self._collect_from_issues(incident, issue_link, postmortem)
        if change_link is not None:
            if self.settings.problem_record:
                postmortem = self._ensure_problem(incident, change_link, postmortem)
            self._change_requests(incident, change_link, links, postmortem)

    def _ensure_problem(
        self, incident: Incident, change_link: store.Link, pm: Postmortem
    ) -> Postmortem:
        """The incident's problem record (``postmortem.problem_record``): made once (found
        again by its correlation id after a crash), first reported by the incident, and named
        on the incident (``problem_id``)."""
        if pm.problem_id:
            return pm
        changes = self._connector(change_link)
        if changes is None:
            return pm
        problem = changes.create(
            "problem",
            {
                "short_description": f"Problem: {incident.title}"[:160],
                "description": f"The postmortem of {change_link.remote_key} ({incident.title}). "
                "Its action items are the change requests under this problem.",
                "first_reported_by_task": change_link.remote_id,
            },
            correlation_key=f"itsm-pb-{incident.id}",
        )
        changes.update(_ref(change_link), {"problem_id": problem.ref.id})
        with store.session_scope(self.db) as s:
            row = s.get(Postmortem, pm.id)
            assert row is not None
            row.problem_id, row.problem_number = problem.ref.id, problem.ref.key
            s.add(row)
            store.audit(
                s, action="create", incident_id=incident.id, system=problem.ref.system,
                instance=change_link.instance, remote_id=problem.ref.id, field="problem",
                after={"number": problem.ref.key}, reason="postmortem problem record",
            )  # fmt: skip
            return row

    def _ensure_postmortem(self, incident: Incident, issue_link: store.Link | None) -> Postmortem:
        with store.session_scope(self.db) as s:
            pm = s.exec(
                select(Postmortem).where(col(Postmortem.incident_id) == incident.id)
            ).first()
            if pm is None:
                pm = Postmortem(incident_id=incident.id)
                s.add(pm)
                s.flush()
                store.audit(
                    s, action="create", incident_id=incident.id, reason="postmortem required"
                )
        linker = self._linker(issue_link)
        if linker is None or not self.settings.review_issue_type or issue_link is None:
            return pm
        if not pm.jira_id:
            review = linker.create(
                "issue",
                {
                    "summary": f"Post-incident review: {incident.title}",
                    "issuetype": {"name": self.settings.review_issue_type},
                    "description": f"Postmortem of {issue_link.remote_key}. Link the fixes to "
                    f"this issue ({self.settings.action_link_type}).",
                },
                correlation_key=f"itsm-pm-{incident.id}",
            )
            linker.link_issues(
                self.settings.action_link_type, issue_link.remote_key, review.ref.key
            )
            with store.session_scope(self.db) as s:
                row = s.get(Postmortem, pm.id)
                assert row is not None
                row.jira_id, row.jira_key = review.ref.id, review.ref.key
                pm = row
                store.audit(
                    s, action="create", incident_id=incident.id, system=review.ref.system,
                    remote_id=review.ref.id, reason=f"postmortem review {review.ref.key}",
                )  # fmt: skip
        elif pm.completed_at is None:
            status = linker.get("issue", pm.jira_id).fields.get("status") or {}
            if (status.get("statusCategory") or {}).get("key") == "done":
                with store.session_scope(self.db) as s:
                    row = s.get(Postmortem, pm.id)
                    assert row is not None
                    row.completed_at = store.utcnow()
                    row.completed_by = f"{issue_link.system}:{pm.jira_key}"
                    pm = row
                    store.audit(
                        s, action="update", incident_id=incident.id, system=issue_link.system,
                        field="postmortem", after="complete", reason=f"{pm.jira_key} is done",
                    )  # fmt: skip
        return pm

    def _collect_from_issues(self, incident: Incident, link: store.Link, pm: Postmortem) -> None:
        """Action items: issues linked to the review issue, and issues linked to the incident's
        issue that carry the action label (the link type is configured)."""
        linker = self._linker(link)
        if linker is None:
            return
        link_type = self.settings.action_link_type
        from_review: set[str] = set()
        if pm.jira_id:
            review = RemoteRef(link.system, link.instance, "issue", pm.jira_id, pm.jira_key)
            from_review = set(linker.linked_issues(review, link_type))
        from_incident = set(linker.linked_issues(_ref(link), link_type))
        for key in sorted((from_review | from_incident) - {pm.jira_key, link.remote_key}):
            issue = linker.get("issue", key)
            fields = issue.fields
            labels = {str(x) for x in fields.get("labels") or []}
            if key not in from_review and self.settings.action_label not in labels:
                continue  # linked to the incident for another reason
            owner = str((fields.get("assignee") or {}).get("emailAddress") or "").lower()
            self._upsert_item(
                incident, key=f"itsm-ai-{link.system}-{issue.ref.id}",
                idem_key=f"{link.system}:{issue.ref.id}",
                title=str(fields.get("summary") or key),
                description=str(fields.get("description") or ""), owner=owner,
                due=_date(fields.get("duedate")), source=f"{link.system}:{key}",
                source_id=issue.ref.id, source_url=issue.url, from_source=True,
            )  # fmt: skip

    def _upsert_item(
        self, incident: Incident, *, key: str, idem_key: str, title: str, description: str,
        owner: str, due: dt.date | None, source: str, source_id: str = "", source_url: str = "",
        from_source: bool = False,
    ) -> tuple[ActionItem, bool]:  # fmt: skip
        """The item with ``key`` (made if there is none): returns it and whether it is new.

        Safe under concurrency: two adds with the same key, in threads or processes, meet at
        the unique constraints; the one that loses reads the winner's row."""
        try:
            with store.session_scope(self.db) as s:
                item = s.exec(select(ActionItem).where(col(ActionItem.key) == key)).first()
                if item is None:
                    item = ActionItem(
                        key=key, idem_key=idem_key, incident_id=incident.id, title=title,
                        description=description, owner=owner, due_date=due, source=source,
                        source_id=source_id, source_url=source_url,
                    )  # fmt: skip
                    s.add(item)
                    s.flush()
                    store.audit(
                        s, action="create", incident_id=incident.id, field="action_item",
                        after={"title": title, "owner": owner, "due": str(due or "")},
                        reason=f"from {source}",
                    )  # fmt: skip
                    return item, True
                if from_source and (item.owner, item.due_date, item.title) != (owner, due, title):
                    store.audit(
                        s, action="update", incident_id=incident.id, field="action_item",
                        before={"owner": item.owner, "due": str(item.due_date or "")},
                        after={"owner": owner, "due": str(due or "")},
                        reason=f"changed in {source}",
                    )  # fmt: skip
                    item.owner, item.due_date, item.title = owner, due, title
                    item.updated_at = store.utcnow()
                return item, False
        except IntegrityError:
            with store.session_scope(self.db, readonly=True) as s:
                item = s.exec(select(ActionItem).where(col(ActionItem.key) == key)).first()
            if item is None:
                raise
            return item, False

    def add_action(
        self, incident_id: str, *, title: str, owner: str, due: dt.date | None,
        description: str = "", source: str = "cli", client_key: str = "",
    ) -> tuple[ActionItem, bool]:  # fmt: skip
        """Add an item, idempotently: the client's key, else the incident and the title, name
        it; adding it again (a retry, a double click, a second process) returns the first."""
        with store.session_scope(self.db, readonly=True) as s:
            row = store.get_incident(s, incident_id)
            if row is None:
                raise KeyError(incident_id)
        incident = Incident.model_validate({**row.data, "id": incident_id})
        idem_key = idempotency_key(title, client_key)
        return self._upsert_item(
            incident, key=item_key(incident_id, idem_key), idem_key=idem_key, title=title,
            description=description, owner=owner.strip().lower(), due=due, source=source,
        )  # fmt: skip

    def change_system(self) -> Connector | None:
        """The connector change requests are made in (the one with that capability)."""
        return next(
            (c for c in self.connectors.values() if Capability.CHANGE_REQUESTS in c.capabilities),
            None,
        )

    def owner_problem(self, owner: str) -> str:
        """Why ``owner`` cannot own a change request ("" when they can, or when no change
        system is configured to ask). A system that cannot answer raises ConnectorError."""
        changes = self.change_system()
        if changes is None or not owner:
            return ""
        try:
            changes.person_by_email(owner)
        except NotFound as exc:
            return str(exc)
        return ""

    # -- action items: edits and withdrawals ------------------------------------------------

    def edit_item(
        self, item_id: int, *, title: str | None, owner: str | None, due: dt.date | None,
        due_given: bool, actor: str,
    ) -> ActionItem:  # fmt: skip
        """Change an item's title, owner or due date (audited); the change request follows
        on the next reconcile, and an item from an issue tracker is changed there first (else
        the next collection would put the old values back)."""
        with store.session_scope(self.db, readonly=True) as s:
            item = s.get(ActionItem, item_id)
            assert item is not None
        new_title = item.title if title is None else title
        new_owner = item.owner if owner is None else owner
        new_due = due if due_given else item.due_date
        source = self._source(item)
        if source is not None:
            connector, ref = source
            fields: dict[str, Any] = {"summary": new_title, "duedate": str(new_due or "") or None}
            fields["assignee"] = (
                {"accountId": connector.person_by_email(new_owner).id} if new_owner else None
            )
            connector.update(ref, fields)
        with store.session_scope(self.db) as s:
            row = s.get(ActionItem, item_id)
            assert row is not None
            before = {"title": row.title, "owner": row.owner, "due": str(row.due_date or "")}
            row.title, row.owner, row.due_date = new_title, new_owner, new_due
            row.updated_at = store.utcnow()
            s.add(row)
            store.audit(
                s, action="update", incident_id=row.incident_id, field="action_item",
                before=before, after={"title": new_title, "owner": new_owner,
                                      "due": str(new_due or "")},
                actor=actor, reason=f"action item {row.key} edited",
            )  # fmt: skip
            return row

    def withdraw_item(self, item_id: int, *, reason: str, actor: str) -> ActionItem:
        """Withdraw an item: it blocks the gate no more, and it is on the record who and why."""
        with store.session_scope(self.db) as s:
            row = s.get(ActionItem, item_id)
            assert row is not None
            before = row.status
            row.status, row.status_reason, row.status_by = WITHDRAWN, reason, actor
            row.status_at = row.updated_at = store.utcnow()
            s.add(row)
            store.audit(
                s, action="update", incident_id=row.incident_id, field="action_item",
                before={"key": row.key, "status": before}, after={"status": WITHDRAWN},
                actor=actor, reason=f"action item {row.title!r} withdrawn: {reason}",
            )  # fmt: skip
            return row

    # -- change requests ----------------------------------------------------------------------

    def _change_requests(
        self, incident: Incident, change_link: store.Link, links: list[store.Link],
        pm: Postmortem | None = None,
    ) -> None:  # fmt: skip
        changes = self._connector(change_link)
        if changes is None:
            return
        with store.session_scope(self.db, readonly=True) as s:
            items = list(
                s.exec(
                    select(ActionItem)
                    .where(col(ActionItem.incident_id) == incident.id)
                    .order_by(col(ActionItem.id))
                ).all()
            )
        for item in items:
            if item.status == WITHDRAWN:
                continue
            try:
                self._one_change_request(
                    incident, change_link, changes, item, links, pm.problem_id if pm else ""
                )
            except ConnectorError as exc:
                log.warning("action item %s: %s", item.key, exc)
                with store.session_scope(self.db) as s:
                    row = s.get(ActionItem, item.id)
                    if row is not None and not row.change_request_number:
                        row.blocked = f"the change request was refused: {exc}"

    def _correlation(self, item: ActionItem) -> str:
        """The change request's correlation key: the item's, and a new one per re-open."""
        return item.key if not item.attempt else f"{item.key}-{item.attempt + 1}"

    def _one_change_request(
        self, incident: Incident, change_link: store.Link, sn: Connector, item: ActionItem,
        links: list[store.Link], problem_id: str = "",
    ) -> None:  # fmt: skip
        if item.change_request_id:
            cr = sn.get("change_request", item.change_request_id)
            state, code = str(cr.fields.get("state", "")), str(cr.fields.get("close_code", ""))
            outcome = self._outcome(state, code)
            if outcome == "failed" and item.status in (OPEN, DONE):
                item = self._reopen(incident, item, cr, links)  # and make a new change below
            else:
                self._follow(incident, sn, cr, item, state, code)
                if outcome == "done" and item.status == OPEN:
                    self._done(incident, item, cr, code)
                return
        blocked = self._blockers(sn, item.owner, item.due_date)
        if blocked:
            with store.session_scope(self.db) as s:
                row = s.get(ActionItem, item.id)
                assert row is not None
                row.blocked = blocked
            return
        owner_id = sn.person_by_email(item.owner).id
        source = f"\nSource: {item.source_url or item.source}"
        again = ""
        if item.attempt:
            again = f"\n\nA new change: the last one was closed {item.status_reason}."
        cr = sn.create(
            "change_request",
            {
                "type": self.settings.change_type,
                "short_description": item.title,
                "description": (
                    f"Action item from the postmortem of {change_link.remote_key} "
                    f"({incident.title}).{source}{again}\n\n{item.description}"
                ).strip(),
                "assigned_to": owner_id,
                "due_date": f"{item.due_date} 00:00:00",
                # Under the problem, when there is one (which names the incident: first
                # reported by it, and the incident's problem_id); else under the incident.
                "parent": problem_id or change_link.remote_id,
            },
            correlation_key=self._correlation(item),
        )
        with store.session_scope(self.db) as s:
            row = s.get(ActionItem, item.id)
            assert row is not None
            row.change_request_id, row.change_request_number = cr.ref.id, cr.ref.key
            row.change_request_state = str(cr.fields.get("state", ""))
            row.change_request_close_code = ""
            row.synced_owner, row.synced_due, row.blocked = item.owner, item.due_date, ""
            row.synced_title = item.title
            store.audit(
                s, action="create", incident_id=incident.id, system=cr.ref.system,
                instance=change_link.instance, remote_id=cr.ref.id, field="change_request",
                after={
                    "number": cr.ref.key, "owner": item.owner, "due": str(item.due_date),
                    "item": item.key,
                },
                reason=f"action item {item.title!r} from {item.source}",
            )  # fmt: skip
        source_of = self._source(item)
        if source_of is not None:
            connector, ref = source_of
            cast(IssueLinks, connector).add_remote_link(
                ref, global_id=f"itsm-sync:change_request:{cr.ref.id}", url=cr.url,
                title=f"{cr.ref.key}: {item.title}",
            )  # fmt: skip

    def _outcome(self, state: str, code: str) -> str:
        """What a change request's state says of its item: "done", "failed" or "" (going)."""
        if state == CR_CLOSED and code.lower() in self.settings.change_done_codes:
            return "done"
        if state == CR_CLOSED or state in self.settings.change_failed_states:
            return "failed"
        return ""

    def _follow(
        self, incident: Incident, sn: Connector, cr: RemoteRecord, item: ActionItem, state: str,
        code: str,
    ) -> None:  # fmt: skip
        """Owner, due date and title between the item and its change request, either way
        (a change made on the change request follows back to the item and its source)."""
        cr_owner = (
            sn.person_by_id(str(cr.fields["assigned_to"])).email
            if cr.fields.get("assigned_to")
            else ""
        )
        cr_due = _date(cr.fields.get("due_date"))
        owner, due = item.owner, item.due_date
        cr_changed = (cr_owner, cr_due) != (item.synced_owner, item.synced_due)
        item_changed = (item.owner, item.due_date) != (item.synced_owner, item.synced_due)
        patch: dict[str, Any] = {}
        if cr_changed and not item_changed:
            owner, due = cr_owner, cr_due
            self._to_source(item, owner, due)
        elif item_changed:
            if item.owner != cr_owner:
                patch["assigned_to"] = sn.person_by_email(item.owner).id if item.owner else ""
            if item.due_date != cr_due:
                patch["due_date"] = f"{item.due_date} 00:00:00" if item.due_date else ""
        if item.synced_title and item.title != item.synced_title:
            patch["short_description"] = item.title
        if patch:
            sn.update(cr.ref, patch)
        reminded = self._remind(sn, cr.ref, item, owner, due, state)
        with store.session_scope(self.db) as s:
            row = s.get(ActionItem, item.id)
            assert row is not None
            row.owner, row.due_date = owner, due
            row.synced_owner, row.synced_due, row.synced_title = owner, due, item.title
            row.change_request_state, row.change_request_close_code = state, code
            row.blocked = self._blockers(sn, owner, due)
            if reminded:
                row.reminded_at = store.utcnow()
                store.audit(
                    s, action="comment", incident_id=incident.id, system=cr.ref.system,
                    remote_id=cr.ref.id, reason=f"overdue reminder on {cr.ref.key}",
                )  # fmt: skip

    def _done(self, incident: Incident, item: ActionItem, cr: RemoteRecord, code: str) -> None:
        """The change closed successful: the item is done, and so is its issue (with a
        comment that links the change). The issue first, then the record: a failure on the
        issue tracker is tried again on the next reconcile, not lost."""
        source = self._source(item)
        if source is not None:
            connector, ref = source
            status = connector.get(ref.object_type, ref.id).fields.get("status") or {}
            if (status.get("statusCategory") or {}).get("key") != "done":  # never reopen one
                connector.transition(
                    ref, self.settings.action_done_status, dict(self.settings.action_done_fields)
                )
                connector.add_comment(
                    ref,
                    f"Done: the change request {cr.ref.key} that implements this action item "
                    f"was closed {code}: {cr.url}",
                    visibility=Visibility.PUBLIC,
                    origin="itsm-sync:postmortem",
                )
        with store.session_scope(self.db) as s:
            row = s.get(ActionItem, item.id)
            assert row is not None
            row.status, row.status_reason, row.status_by = DONE, f"{cr.ref.key} {code}", "change"
            row.status_at = row.updated_at = store.utcnow()
            store.audit(
                s, action="update", incident_id=incident.id, field="action_item",
                before={"key": item.key, "status": item.status}, after={"status": DONE},
                system=cr.ref.system, remote_id=cr.ref.id,
                reason=f"action item {item.title!r} done: {cr.ref.key} closed {code}",
            )  # fmt: skip

    def _reopen(
        self, incident: Incident, item: ActionItem, cr: RemoteRecord, links: list[store.Link]
    ) -> ActionItem:
        """The change closed unsuccessful or was canceled: the item is open again (and gets a
        new change request), and the incident says so in an internal note."""
        code = str(cr.fields.get("close_code") or "") or "canceled"
        with store.session_scope(self.db) as s:
            row = s.get(ActionItem, item.id)
            assert row is not None
            before = row.status
            row.status, row.status_reason, row.status_by = OPEN, f"{cr.ref.key} {code}", "change"
            row.status_at = row.updated_at = store.utcnow()
            row.attempt += 1
            row.change_request_id = row.change_request_number = ""
            row.change_request_state = row.change_request_close_code = ""
            row.synced_owner, row.synced_due, row.synced_title = "", None, ""
            store.audit(
                s, action="update", incident_id=incident.id, field="action_item",
                before={"key": item.key, "status": before, "change_request": cr.ref.key},
                after={"status": OPEN}, system=cr.ref.system, remote_id=cr.ref.id,
                reason=f"action item {item.title!r} re-opened: {cr.ref.key} closed {code}",
            )  # fmt: skip
            item = row
        note = (
            f"Postmortem action item {item.title!r}: its change request {cr.ref.key} was closed "
            f"{code}. The item is open again and gets a new change request; the incident "
            f"cannot close until it has one."
        )
        for link in links:
            connector = self._connector(link)
            if connector is None or Capability.INTERNAL_COMMENTS not in connector.capabilities:
                continue
            try:
                connector.add_comment(
                    _ref(link), note, visibility=Visibility.INTERNAL, origin="itsm-sync:postmortem"
                )
            except ConnectorError as exc:
                log.warning("the re-open note on %s: %s", link.remote_key, exc)
        return item

    def _source(self, item: ActionItem) -> tuple[Connector, RemoteRef] | None:
        """The issue an item came from, and its system's connector (None for CLI/API items)."""
        system, _, key = item.source.partition(":")
        if not item.source_id or not key:
            return None
        for (sys_name, instance), connector in self.connectors.items():
            if sys_name == system and Capability.ISSUE_LINKS in connector.capabilities:
                return connector, RemoteRef(system, instance, "issue", item.source_id, key)
        return None

    def _remind(
        self, sn: Connector, ref: RemoteRef, item: ActionItem, owner: str, due: dt.date | None,
        state: str,
    ) -> bool:  # fmt: skip
        """A note on an overdue change request (and on the item's issue), once per reminder
        period, naming the owner as each system knows them."""
        period = self.settings.reminder_hours
        today = dt.datetime.now(dt.UTC).date()
        if not period or due is None or due >= today or state in (CR_CLOSED, "4"):
            return False
        now = store.utcnow()
        if item.reminded_at is not None and now - item.reminded_at < dt.timedelta(hours=period):
            return False
        text = (
            f"Reminder{{owner}}: this change implements the postmortem action item "
            f"{item.title!r} and was due on {due} ({(today - due).days} days ago)."
        )
        sn.update(ref, {"work_notes": text.format(owner=self._mention(sn, owner))})
        source = self._source(item)
        if source is not None:
            connector, issue = source
            try:
                connector.add_comment(
                    issue, text.format(owner=self._mention(connector, owner)),
                    visibility=Visibility.PUBLIC, origin="itsm-sync:postmortem",
                )  # fmt: skip
            except ConnectorError as exc:
                log.warning("the reminder on %s: %s", issue.key, exc)
        return True

    def _mention(self, connector: Connector, owner: str) -> str:
        """ " for <the owner, as the system names its users>", or "" when unknown."""
        if not owner:
            return ""
        try:
            person = connector.person_by_email(owner)
        except ConnectorError:
            return f" for {owner}"
        if Capability.MENTIONS in connector.capabilities:
            return f" for {cast(Mentions, connector).mention(person)}"
        return f" for {person.name or owner} ({owner})"

    def _blockers(self, sn: Connector, owner: str, due: dt.date | None) -> str:
        problems = []
        if not owner:
            problems.append("no owner")
        else:
            try:
                sn.person_by_email(owner)
            except NotFound:
                problems.append(f"the owner {owner} is not a user of {sn.system}")
        if due is None:
            problems.append("no due date")
        return "; ".join(problems)

    def _to_source(self, item: ActionItem, owner: str, due: dt.date | None) -> None:
        source = self._source(item)
        if source is None:
            return
        connector, ref = source
        fields: dict[str, Any] = {"duedate": str(due) if due else None}
        fields["assignee"] = {"accountId": connector.person_by_email(owner).id} if owner else None
        connector.update(ref, fields)
